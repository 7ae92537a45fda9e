"""Files the program removes or creates between commits: put back, or removed,
on resume.

Work a resume redoes removes the same files again: a training loop that keeps
its last few checkpoints (``os.remove(oldest)``, ``shutil.rmtree(old_dir)``)
died on resume with FileNotFoundError for a file the killed run had already
removed after the commit, and a redone step that reads the old checkpoint
first would not find it. While dart runs, an audit hook sees every
``os.remove``/``os.unlink`` (``os.rmdir`` for folders) and, before the removal
happens, keeps the file under a hard link in the run's folder of the store
(a copy when the link is refused, up to ``COPY_LIMIT``), with a line in a
journal: when, which file, its modification time. Resume puts back each file
removed after the commit it starts from that already existed at that commit
(modified no later than it: a file written after the commit is written again by
the redone work).

The other way round, a file the killed run created after the commit (a new
checkpoint folder, an output shard, perhaps cut short by the kill) would be
there for the redone work to find: ``if os.path.exists(out): continue`` would
skip the shard, ``os.listdir`` would list a checkpoint from the future. The
hook notes each file and folder the program creates inside the folder dart
started in (an ``open`` for writing or ``os.mkdir`` of a path that did not
exist), and resume removes those created after the commit (the redone work
creates them again) when the run was killed; not when it ended with an
exception, where what it wrote on the way may be what the user looks at.

Journal lines older than the newest durable commit are dropped as commits land
(and their kept files with them, so rotating checkpoints do not pile up).
Stores on object storage keep no journal (nothing is kept or removed).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import threading
import time

#: A removed file that cannot be hard-linked is copied when at most this big.
COPY_LIMIT = 256 << 20

_lock = threading.RLock()  # the journal's own open() comes back through the hook
_state = {"on": False, "hooked": False, "folder": None, "base": "", "skip": (), "count": 0}


def install(base: str, folder: str | None, skip: tuple[str, ...] = ()) -> None:
    """Keep files removed from now on in ``folder`` (None: keep nothing); ``base``:
    the folder dart started in; ``skip``: folders whose files are not the program's."""
    if folder is not None:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            folder = None  # a read-only store: removed files are not put back
    skip = (*skip, folder) if folder is not None else skip
    _state.update(on=folder is not None, folder=folder, base=os.path.abspath(base),
                  skip=tuple(os.path.abspath(s) + os.sep for s in skip))
    if folder is not None and not _state["hooked"]:
        sys.addaudithook(_on_audit)  # cannot be removed: it goes quiet in uninstall()
        _state["hooked"] = True


def uninstall(finished: bool = False) -> None:
    """Stop keeping files; ``finished``: the run ended, nothing will be put back."""
    folder = _state["folder"]
    _state.update(on=False, folder=None)
    if finished and folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _full_path(path, dir_fd) -> str | None:
    if not isinstance(path, (str, bytes, os.PathLike)):
        return None
    path = os.fsdecode(path)
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):  # shutil.rmtree: relative to a folder fd
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.abspath(path)


def _creates(event: str, args) -> str | None:
    """The path an ``open``/``os.mkdir`` event is about to create, if it creates one."""
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        writes = any(c in mode for c in "wxa") if isinstance(mode, str) else (
            isinstance(flags, int) and flags & os.O_CREAT)
        if not writes or isinstance(path, int):
            return None
        return _full_path(path, None)
    return _full_path(args[0], args[2] if len(args) > 2 else None)  # os.mkdir(path, mode, dir_fd)


def _on_audit(event: str, args) -> None:
    if event not in ("os.remove", "os.rmdir", "open", "os.mkdir") or not _state["on"]:
        return
    try:
        if event in ("open", "os.mkdir"):
            full = _creates(event, args)
            base = _state["base"] + os.sep
            if full is not None and full.startswith(base) and not full.startswith(_state["skip"]) \
                    and not os.path.lexists(full):
                _note("made" if event == "open" else "madedir", "", full, 0.0)
            return
        full = _full_path(args[0], args[1] if len(args) > 1 else None)
        if full is None or full.startswith(_state["skip"]):
            return
        info = os.lstat(full)
        if event == "os.rmdir":
            _note("dir", "", full, info.st_mtime)
        elif stat.S_ISREG(info.st_mode):
            _keep(full, info)
    except Exception:  # noqa: BLE001 - an audit hook must never make the program's open or remove fail
        pass


def _keep(full: str, info: os.stat_result) -> None:
    with _lock:
        folder = _state["folder"]
        if folder is None:
            return
        _state["count"] += 1
        name = f"{os.getpid()}-{_state['count']}"
        kept = os.path.join(folder, name)
        try:
            os.link(full, kept)
        except OSError:
            if info.st_size > COPY_LIMIT:
                return
            shutil.copy2(full, kept)
        _write(folder, "file", name, full, info.st_mtime)


def _note(kind: str, name: str, full: str, mtime: float) -> None:
    with _lock:
        if _state["folder"] is not None:
            _write(_state["folder"], kind, name, full, mtime)


def _write(folder: str, kind: str, name: str, full: str, mtime: float) -> None:
    base = _state["base"]
    where = os.path.relpath(full, base) if full.startswith(base + os.sep) else full
    with open(os.path.join(folder, "journal"), "a", encoding="utf-8") as f:
        f.write(f"{time.time():.6f}\t{mtime:.6f}\t{kind}\t{name}\t{where}\n")


def _entries(folder: str) -> list[tuple[float, float, str, str, str]]:
    try:
        with open(os.path.join(folder, "journal"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 5:
            try:
                out.append((float(parts[0]), float(parts[1]), parts[2], parts[3], parts[4]))
            except ValueError:
                continue  # a line torn by a kill
    return out


def restore(folder: str | None, since: float, base: str | None = None, undo_made: bool = True) -> list[str]:
    """Undo what the program did to files after time ``since`` (the commit a resume
    starts from): remove the files and folders it created since (unless not
    ``undo_made``), put back the files (and folders) it removed that existed then;
    returns the paths changed."""
    if folder is None:
        return []
    base = base or os.getcwd()
    entries = [e for e in _entries(folder) if e[0] >= since]
    changed = []
    for when, mtime, kind, name, where in reversed(entries if undo_made else []):  # newest first: files, then folders
        full = where if os.path.isabs(where) else os.path.join(base, where)
        try:
            if kind == "made" and os.path.isfile(full) and not os.path.islink(full):
                os.remove(full)
                changed.append(where)
            elif kind == "madedir" and os.path.isdir(full) and not os.listdir(full):
                os.rmdir(full)
                changed.append(where)
        except OSError:
            continue
    put_back = changed
    first: dict[str, str] = {}  # path -> what happened to it first after the commit
    for _, _, kind, _, where in entries:
        first.setdefault(where, kind)
    made = {where for where, kind in first.items() if kind in ("made", "madedir")}  # not there at the commit
    for when, mtime, kind, name, where in entries:
        if kind not in ("dir", "file") or where in made or (kind == "file" and mtime > since):
            continue  # made or written after the commit: the redone work makes it again
        full = where if os.path.isabs(where) else os.path.join(base, where)
        try:
            if kind == "dir":
                os.makedirs(full, exist_ok=True)
            elif not os.path.lexists(full):
                os.makedirs(os.path.dirname(full), exist_ok=True)
                try:
                    os.link(os.path.join(folder, name), full)
                except OSError:
                    shutil.copy2(os.path.join(folder, name), full)
                put_back.append(where)
        except OSError:
            continue  # the kept copy is gone: the redone work does without it
    return put_back


def prune(before: float) -> None:
    """Drop the files kept for removals before time ``before`` (a durable commit's):
    no resume starts before it."""
    with _lock:
        folder = _state["folder"]
        if folder is None:
            return
        keep, drop = [], []
        for entry in _entries(folder):
            (keep if entry[0] >= before else drop).append(entry)
        if not drop:
            return
        journal = os.path.join(folder, "journal")
        with open(journal + ".new", "w", encoding="utf-8") as f:
            f.writelines("\t".join((f"{e[0]:.6f}", f"{e[1]:.6f}", *e[2:])) + "\n" for e in keep)
        os.replace(journal + ".new", journal)
        for _, _, kind, name, _ in drop:
            if kind == "file":
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass
