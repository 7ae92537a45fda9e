"""capture/textfiles.py: a text file iterated with ``for line in f`` is found again
(seeked to the end of the line the loop holds, so tell() works) exactly, or left
alone; and only when the loop alone reads it."""

from __future__ import annotations

import ast
import sys

import pytest
from hypothesis import assume, given, settings, strategies as st

from dart.capture import textfiles

LINES = st.lists(
    st.text(alphabet=st.sampled_from("ab,é€ 7\t"), min_size=0, max_size=90), min_size=1, max_size=60
)


def _write(tmp_path, lines, newline, last_newline=True):
    text = newline.join(lines) + (newline if last_newline else "")
    path = tmp_path / "data.txt"
    path.write_bytes(text.encode("utf-8"))
    return path


@settings(max_examples=150, deadline=None)
@given(lines=LINES, taken=st.integers(min_value=1, max_value=60), newline=st.sampled_from(["\n", "\r\n"]),
       chunk=st.sampled_from([16, 64, 8192]), last_newline=st.booleans())
def test_a_file_is_found_again_at_the_end_of_its_last_line_or_left_alone(tmp_path_factory, lines, taken, newline,
                                                                          chunk, last_newline):
    path = _write(tmp_path_factory.mktemp("t"), lines, newline, last_newline)
    with open(path, encoding="utf-8") as plain:
        expected = list(plain)
    assume(expected)
    taken = min(taken, len(expected))
    with open(path, encoding="utf-8") as f:
        f._CHUNK_SIZE = chunk
        got = [next(f) for _ in range(taken)]
        ok = textfiles.resync(f, got[-1])
        # no two lines alike (stripped, as the loop body may strip them): it must be found
        if len({line.strip() for line in expected}) == len(expected):
            assert ok
        if ok:
            raw = path.read_bytes()
            ends = [i + 1 for i, b in enumerate(raw) if b == 0x0A] + ([len(raw)] if not last_newline else [])
            assert f.tell() == ends[taken - 1]
        assert list(f) == expected[taken:]  # resynced or not, the iteration goes on unchanged


def test_equal_lines_in_the_chunk_leave_the_file_alone(tmp_path):
    path = _write(tmp_path, ["a", "b", "a", "c"], "\n")
    with open(path) as f:
        next(f), next(f), next(f)
        assert not textfiles.resync(f, "a\n")
        loop = _loop("for line in f:\n    pass")
        assert textfiles.resync_loop(_Frame({"line": "a\n"}), loop, f) == textfiles.NOT_HERE
        assert next(f) == "c\n"


def test_a_stripped_line_is_matched_and_other_values_are_not(tmp_path):
    path = _write(tmp_path, ["  one ", "two", "three"], "\n")
    with open(path) as f:
        next(f), next(f)
        assert not textfiles.resync(f, "zwei")
        assert not textfiles.resync(f, 2)
        assert textfiles.resync(f, "two")
        assert f.tell() == len("  one \ntwo\n")
        assert next(f) == "three\n"


def test_files_it_does_not_handle(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_text("x\ny\n", encoding="utf-16")
    with open(path, encoding="utf-16") as f:
        next(f)
        assert not textfiles.resync(f, "x\n")  # not an ASCII superset
    with open(path, "rb") as f:
        next(f)
        assert not textfiles.needs_resync(f)
    plain = _write(tmp_path, ["p", "q"], "\n")
    with open(plain) as f:
        f.readline()
        assert not textfiles.needs_resync(f)  # readline keeps tell() working


def _loop(source):
    return ast.parse(source).body[0]


class _Frame:
    def __init__(self, values):
        self.f_locals, self.f_globals = values, {}


@pytest.mark.parametrize("source,ok", [
    ("for line in f:\n    total += len(line)", True),
    ("for i, line in enumerate(f):\n    line = line.strip()", True),
    ("for line in open(p):\n    print(line)", True),
    ("for line in f:\n    seq = next(f)", False),  # the body reads the file too
    ("for line in f:\n    parse(line, f)", False),
    ("for line in self.f:\n    pass", False),
])
def test_only_a_file_the_loop_alone_reads_is_resynced(tmp_path, source, ok):
    path = _write(tmp_path, ["r1", "r2", "r3"], "\n")
    with open(path) as f:
        loop = _loop(source)
        if "enumerate" in source:
            iterator = enumerate(f)
            _, line = next(iterator)
        else:
            iterator, line = f, next(f)
        answer = textfiles.resync_loop(_Frame({"line": line}), loop, iterator)
        assert answer == (textfiles.SYNCED if ok else textfiles.NO)
        assert next(iterator) in ("r2\n", (1, "r2\n"))
