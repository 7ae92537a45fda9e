"""Text files read line by line with ``for line in f``: where they are.

CPython's TextIOWrapper disables ``tell()`` while it is iterated (its
read-ahead leaves no position to report), so such a file could not be saved and
a loop over it held no commit on its first pass. At a commit the loop's
variable still holds the line the file yielded last, and the file's buffer
says where the text it decoded ends (at most one read-ahead chunk past that
line). :func:`resync` finds that line's end among the newlines of the chunk
and seeks the file there, which turns ``tell()`` on again; the iteration goes
on from the same line, only its read-ahead is read again. When the line is not
found exactly once (the loop body rebound the variable, or equal lines share
the chunk) the file is left alone and dart counts the loop instead, as before.
"""

from __future__ import annotations

import ast
import codecs
import io
import os

#: Encodings in which the bytes ``\n`` and ``\r`` only ever stand for themselves,
#: so a line's end can be found in the raw bytes and its position is a seek cookie.
_ASCII_SUPERSETS = {"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252"}
#: How far back a line's start is looked for (a longer line: the file is left alone).
_LONGEST_LINE = 1 << 20


def needs_resync(f) -> bool:
    """Is ``f`` a text file open for reading whose ``tell()`` iteration turned off?"""
    if not isinstance(f, io.TextIOWrapper) or f.closed or not f.readable() or f.writable():
        return False
    try:
        f.tell()
        return False
    except OSError:
        return True
    except ValueError:
        return False


def _same(text: str, value: str) -> bool:
    return text == value or text.strip() == value.strip()


def resync(f, last_line) -> bool:
    """Seek text file ``f`` (being iterated) to the end of ``last_line``, the line
    its iteration yielded last; True if ``tell()`` works again."""
    if not isinstance(last_line, str) or not needs_resync(f):
        return False
    try:
        encoding = codecs.lookup(f.encoding).name
        if encoding not in _ASCII_SUPERSETS:
            return False
        end = f.buffer.tell()  # the end of the bytes the file decoded so far
        chunk = int(getattr(f, "_CHUNK_SIZE", 8192))
        fd = f.fileno()
        size = os.fstat(fd).st_size
    except (OSError, ValueError, LookupError, AttributeError):
        return False
    lowest = max(0, end - chunk)  # the last line ends in the last chunk read
    start = max(0, lowest - len(last_line.encode(encoding, "replace")) - 2)
    data = os.pread(fd, end - start, start)
    while start > 0 and data.rfind(b"\n", 0, lowest - start + 1) < 0:  # the line began earlier
        if end - start > _LONGEST_LINE:
            return False
        more = min(start, chunk)
        data = os.pread(fd, more, start - more) + data
        start -= more
    ends = []
    at = data.find(b"\n", lowest - start)
    while at >= 0:
        ends.append(start + at + 1)
        at = data.find(b"\n", at + 1)
    if end == size and (not ends or ends[-1] != end):
        ends.append(end)  # a last line without a newline
    found = []
    for stop in ends:
        first = data.rfind(b"\n", 0, stop - start - 1) + 1  # 0 when the line starts the window
        if first == 0 and start > 0:
            continue
        raw = data[first:stop - start]
        try:
            text = raw.decode(encoding, f.errors or "strict")
        except UnicodeDecodeError:
            return False
        if _same(text, last_line) or _same(text.replace("\r\n", "\n"), last_line):
            found.append(stop)
            if len(found) > 1:
                return False  # equal lines in the chunk: which one is not known
    if len(found) != 1:
        return False
    try:
        f.seek(found[0])
        f.tell()
    except (OSError, ValueError):
        return False
    return True


def _only_the_loop_reads(expr: ast.expr, body: list[ast.stmt]) -> bool:
    """Is the file the loop iterates read by the loop alone? ``for line in f`` whose
    body never names ``f`` (a body calling ``next(f)`` moves the file past the loop's
    line), ``for line in open(p)``, and either inside ``enumerate``."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        if expr.func.id == "enumerate" and expr.args:
            return _only_the_loop_reads(expr.args[0], body)
        return expr.func.id == "open"
    if isinstance(expr, ast.Name):
        return not any(isinstance(n, ast.Name) and n.id == expr.id for stmt in body for n in ast.walk(stmt))
    return False


def _line_variable(target: ast.expr, counted: bool) -> str | None:
    if counted and isinstance(target, ast.Tuple) and len(target.elts) == 2:
        target = target.elts[1]
    return target.id if isinstance(target, ast.Name) else None


#: resync_loop's answers
SYNCED, NOT_HERE, NO = "synced", "not here", "no"


def resync_loop(frame, loop: ast.AST, iterator) -> str:
    """At a commit in ``loop`` (its AST) of ``frame``: if its iterator is a text file
    (or ``enumerate`` over one) read by the loop alone, seek the file to the end of
    the line the loop variable holds (see :func:`resync`). SYNCED: done; NOT_HERE:
    such a loop, but its line is not found exactly once at this iteration (a later
    one may do); NO: not such a loop (or nothing to do)."""
    counted = type(iterator) is enumerate
    if counted:
        try:
            iterator = iterator.__reduce__()[1][0]
        except (TypeError, IndexError, AttributeError):
            return NO
    if not isinstance(loop, ast.For) or not needs_resync(iterator):
        return NO
    name = _line_variable(loop.target, counted)
    if name is None or not _only_the_loop_reads(loop.iter, loop.body):
        return NO
    missing = object()
    value = frame.f_locals.get(name, missing)
    if value is missing:
        value = frame.f_globals.get(name)
    return SYNCED if resync(iterator, value) else NOT_HERE
