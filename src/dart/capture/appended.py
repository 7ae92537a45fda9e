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

Paths are kept relative to the folder dart was started in when they are inside
it, so a copied project folder cuts its own files, not the original's.
"""

from __future__ import annotations

import os
import sys

_paths: set[str] = set()  # absolute paths opened in append mode while dart watched
_state = {"on": False, "hooked": False, "base": "", "skip": ()}


def install(base: str, skip: tuple[str, ...] = ()) -> None:
    """Watch ``open`` calls from now on; ``base`` is the folder dart started in,
    ``skip`` folders whose files are not the program's (the store)."""
    _state.update(on=True, base=os.path.abspath(base), skip=tuple(os.path.abspath(s) + os.sep for s in skip))
    if not _state["hooked"]:
        sys.addaudithook(_on_audit)  # cannot be removed: it goes quiet in uninstall()
        _state["hooked"] = True


def uninstall() -> None:
    _state["on"] = False
    _paths.clear()


def _on_audit(event: str, args) -> None:
    if event != "open" or not _state["on"]:
        return
    try:
        path, mode = args[0], args[1]
        if isinstance(mode, str) and "a" in mode and isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.abspath(os.fsdecode(path))
            if not full.startswith(_state["skip"]):
                _paths.add(full)
    except Exception:  # noqa: BLE001 - an audit hook must never make the program's open() fail
        pass


def lengths() -> dict[str, int]:
    """{path: length now} of the files opened in append mode so far."""
    out = {}
    base = _state["base"]
    for full in sorted(_paths):
        try:
            size = os.path.getsize(full)
        except OSError:
            continue
        inside = full.startswith(base + os.sep)
        out[os.path.relpath(full, base) if inside else full] = size
    return out


def cut_back(recorded: dict[str, int]) -> list[str]:
    """Cut each recorded file that grew since the commit back to its length then;
    returns the paths cut. The files are watched again from here on."""
    cut = []
    base = _state["base"] or os.getcwd()
    for path, size in recorded.items():
        full = path if os.path.isabs(path) else os.path.join(base, path)
        _paths.add(full)
        try:
            if os.path.getsize(full) > size:
                os.truncate(full, size)
                cut.append(path)
        except OSError:
            continue  # gone, or not ours to cut: the redone work appends as it can
    return cut
