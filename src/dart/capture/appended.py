"""Files the program appends to between commits, cut back on resume to their
length at the commit.

A file the program holds open at a commit is saved with its length, and
loading cuts it back (``pickler._reopen``). One it opens, appends to and closes
between commits (``with open("log.txt", "a") as f: f.write(...)`` every step)
is in no variable, so the work a resume redoes would append the same lines a
second time. While dart runs, an audit hook sees every ``open`` and keeps the
paths opened in append mode; each commit records their lengths
(``CommitRecord.appended``) and resume cuts each file back to its recorded
length. Never extended, never deleted; files opened in "w" mode are left
alone (the redone work writes them anew, and cutting a file rewritten after
the commit would only corrupt it).

A file the program first opens in append mode *after* the commit a resume
starts from is in no record of that commit; for those, a run journal (a file in
a local store, one line per path: its length before its first open) says what
to cut back to. Stores on object storage keep no journal.

Paths are kept relative to the folder dart was started in when they are inside
it, so a copied project folder cuts its own files, not the original's.
"""

from __future__ import annotations

import os
import sys

_paths: set[str] = set()  # absolute paths opened in append mode while dart watched
_state = {"on": False, "hooked": False, "base": "", "skip": (), "journal": None}


def install(base: str, skip: tuple[str, ...] = (), journal: str | None = None) -> None:
    """Watch ``open`` calls from now on; ``base`` is the folder dart started in,
    ``skip`` folders whose files are not the program's (the store), ``journal``
    the run's journal file (None: keep none)."""
    fd = None
    if journal is not None:
        try:
            os.makedirs(os.path.dirname(journal), exist_ok=True)
            fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            fd = None  # a read-only store: files first appended to after a commit are not cut back
    _state.update(on=True, base=os.path.abspath(base), skip=tuple(os.path.abspath(s) + os.sep for s in skip),
                  journal=fd)
    if not _state["hooked"]:
        sys.addaudithook(_on_audit)  # cannot be removed: it goes quiet in uninstall()
        _state["hooked"] = True


def uninstall() -> None:
    _state["on"] = False
    if _state["journal"] is not None:
        os.close(_state["journal"])
        _state["journal"] = None
    _paths.clear()


def _on_audit(event: str, args) -> None:
    if event != "open" or not _state["on"]:
        return
    try:
        path, mode = args[0], args[1]
        if isinstance(mode, str) and "a" in mode and isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.abspath(os.fsdecode(path))
            if full not in _paths and not full.startswith(_state["skip"]):
                _paths.add(full)
                if _state["journal"] is not None:  # its length before this first open (the open comes next)
                    size = os.path.getsize(full) if os.path.exists(full) else 0
                    os.write(_state["journal"], f"{size}\t{_relative(full)}\n".encode())
    except Exception:  # noqa: BLE001 - an audit hook must never make the program's open() fail
        pass


def _relative(full: str) -> str:
    base = _state["base"]
    return os.path.relpath(full, base) if full.startswith(base + os.sep) else full


def read_journal(journal: str) -> dict[str, int]:
    """{path: the least length it had before a first open} from a run's journal."""
    first: dict[str, int] = {}
    try:
        with open(journal, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return first
    for line in lines:
        size, _, path = line.partition("\t")
        if path and size.isdigit():
            first[path] = min(int(size), first.get(path, int(size)))
    return first


def lengths() -> dict[str, int]:
    """{path: length now} of the files opened in append mode so far."""
    out = {}
    for full in sorted(_paths):
        try:
            out[_relative(full)] = os.path.getsize(full)
        except OSError:
            continue
    return out


def cut_back(recorded: dict[str, int], journal: dict[str, int] | None = None) -> list[str]:
    """Cut each recorded file that grew since the commit back to its length then,
    and each file of the run's ``journal`` (see :func:`read_journal`) the commit
    does not know back to its length before its first open; returns the paths
    cut. The recorded files are watched again from here on."""
    cut = []
    base = _state["base"] or os.getcwd()
    later = {path: size for path, size in (journal or {}).items() if path not in recorded}
    for path, size in {**recorded, **later}.items():
        full = path if os.path.isabs(path) else os.path.join(base, path)
        _paths.add(full)
        try:
            if os.path.getsize(full) > size:
                os.truncate(full, size)
                cut.append(path)
        except OSError:
            continue  # gone, or not ours to cut: the redone work appends as it can
    return cut
