"""The local directory backend (the default): each key is a file under the root.

Layout under the root (``.dart/`` by default)::

    store.json               {"format": 1}
    objects/ab/cdef...       objects; id = xxh3_128 hex of the raw (uncompressed) bytes
    commits/<id>.json        commit records
    refs/runs/<run_id>       newest durable commit id of a run
    runs/<run_id>.json       run metadata
    tmp/                     temporary files, renamed into place (same filesystem)
    journal/<run_id>         small commits of a run not yet fsync'd in place (see below)
    locks/<name>.lock        lock files (lockf for run leases, flock for refs)

Every write goes to a temporary file in ``tmp/`` that is fsync'd, renamed into place
with ``os.replace`` and followed by an fsync of the destination directory (and of its
parent when the directory was just created).

A small commit (``put_journaled``) costs one fsync instead: its files and its
ref move are put in place without fsync (readers see them at once; a killed
process loses nothing, the page cache holds them), then appended as one entry to
the run's journal, which is fdatasync'd: the commit is durable from then on. What
a crash of the machine could still lose is put back from the journal by
``settle_journal``, which the run's next lease holder calls before anything else,
and the writer calls when it closes: it fsyncs every file the journal names, then
drops the journal.

A large object (``begin_put``, at least ``PARALLEL_MIN`` bytes) is written in
pieces by ``WRITERS`` threads with ``pwrite`` (the GIL is released; the caller
hashes the same bytes meanwhile). Pieces whose memory and file offsets are
block-aligned (a staged pack's payload: flush/staging.py places packs so) go
straight to the disk with O_DIRECT: no copy into the page cache, which on a
loaded machine cost more than the disk itself. Other pieces go through the page
cache, their writeback started at once (``sync_file_range``) so the final fsync
has little left to wait for. Durability is the same as
``put``: the temporary file is fsync'd before it is renamed into place, so a kill
at any instant leaves either no object or the whole one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import json
import secrets
import struct
import threading
from pathlib import Path
from typing import BinaryIO

import xxhash

from dart.errors import StoreError

from .backend import Backend, Lease, LeaseHeld, Missing, PlainLease

CRASH_EXIT_CODE = 70
#: Permissions of what a store creates: who else may read it. A store's pickles
#: run code when loaded, so by default only its owner can read or write it.
MODES = {"private": (0o700, 0o600), "group": (0o750, 0o640), "public": (0o755, 0o644)}
SUBDIRS = ("objects", "commits", "refs", "runs", "tmp", "locks")
MARKER = "store.json"


_crash_counts: dict[str, int] = {}

#: Objects at least this large are written by begin_put (pieces, several threads).
PARALLEL_MIN = 16 << 20
#: Bytes per pwrite + writeback start through the page cache.
PIECE = 8 << 20
#: Bytes per direct pwrite: one system call for a whole pack (the kernel queues
#: it to the disk in many requests at once), so the writer thread needs the GIL
#: back once, not once per 8 MiB while the caller's thread hashes holding it.
DIRECT_PIECE = 1 << 30
#: Writer threads per large object: a pack's direct part and its page-cache ends
#: (or two page-cache pieces) are written at once.
WRITERS = 2


def crash_point(step: str) -> None:
    """Test hook: die at once (exit 70, no cleanup) if DART_TEST_CRASH_AT names
    `step`, or `step:N` and this is the N-th time the step is reached."""
    wanted = os.environ.get("DART_TEST_CRASH_AT")
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != step:
        return
    _crash_counts[step] = count = _crash_counts.get(step, 0) + 1
    if not nth or count == int(nth):
        os._exit(CRASH_EXIT_CODE)


def _sync_filesystem(path: Path) -> bool:
    """syncfs(2) on the filesystem of ``path``: every file written there is on disk
    after one call (settling a journal of thousands of small commits costs one
    sync, not one per file). False where it is not available."""
    try:
        import ctypes

        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


#: Alignment (memory address, file offset, length) of a write that bypasses the
#: page cache (O_DIRECT); 4096 covers the logical block size of usual disks.
DIRECT_ALIGN = 4096


def _address(view: memoryview) -> int | None:
    """The memory address of a writable buffer, None for a read-only one."""
    import ctypes

    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return None


_writeback = []  # [sync_file_range starter or None], made at the first large put


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writeback of a range of ``fd`` without waiting for it
    (sync_file_range, SYNC_FILE_RANGE_WRITE) where libc has it. Only a hint to the
    kernel: what makes the bytes durable is the fsync after it."""
    if not _writeback:
        try:
            import ctypes

            call = ctypes.CDLL(None, use_errno=True).sync_file_range
            call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _writeback.append(call)
        except (OSError, AttributeError):
            _writeback.append(None)
    if _writeback[0] is not None:
        _writeback[0](fd, offset, length, 2)


def _io_error(dest: Path, root: Path, exc: OSError) -> StoreError:
    hint = "free some disk space" if exc.errno == errno.ENOSPC else "check the store's permissions and free space"
    return StoreError(f"cannot write {dest} in store {root}: {exc.strerror or exc}; {hint}")


def plan_pieces(chunks: list) -> list[tuple[int, memoryview, bool]]:
    """(file offset, bytes, direct) of the writes that lay ``chunks`` end to end
    in a file, each at most PIECE bytes (DIRECT_PIECE if direct). ``direct``: the
    piece's memory address, file offset and length are multiples of
    DIRECT_ALIGN, so it may bypass the page cache; that holds for the middle of a
    chunk whose address is congruent to its file offset (the staging area places
    packs so: flush/staging.py). The rest (the header, a chunk's unaligned head
    and tail) goes through the page cache."""
    pieces, at = [], 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        n = len(view)
        where = _address(view) if n >= 2 * DIRECT_ALIGN else None
        head = tail = n
        if where is not None and (where - at) % DIRECT_ALIGN == 0:
            head = -at % DIRECT_ALIGN
            tail = head + (n - head) // DIRECT_ALIGN * DIRECT_ALIGN
        for start, stop, direct in ((0, head, False), (head, tail, True), (tail, n, False)):
            step = DIRECT_PIECE if direct else PIECE
            for piece in range(start, stop, step):
                pieces.append((at + piece, view[piece : min(stop, piece + step)], direct))
        at += n
    return pieces


class PendingPut:
    """An object being written to a temporary file by ``WRITERS`` threads
    (``LocalBackend.begin_put``). ``finish(key)`` waits for them, fsyncs and
    renames the file into place; ``abandon()`` waits and removes it."""

    def __init__(self, backend: LocalBackend, chunks: list) -> None:
        self.backend = backend
        self.tmp = backend.root / "tmp" / f"put.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        pieces = plan_pieces(chunks)
        self.size = sum(len(view) for _, view, _ in pieces)
        self._pieces = iter(pieces)
        self._lock = threading.Lock()
        self._error: OSError | None = None
        self._threads: list[threading.Thread] = []
        self.fd = self.direct_fd = -1
        try:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, backend.file_mode)
            os.ftruncate(self.fd, self.size)  # no write extends the file: writers do not serialize
        except OSError as exc:
            self.abandon()
            raise _io_error(self.tmp, backend.root, exc) from exc
        if any(direct for _, _, direct in pieces) and hasattr(os, "O_DIRECT"):
            try:  # bypasses the page cache: no copy, immune to the machine's CPU load
                self.direct_fd = os.open(self.tmp, os.O_WRONLY | os.O_DIRECT)
            except OSError:  # a filesystem without direct I/O (tmpfs): all through the page cache
                self.direct_fd = -1
        self._threads = [threading.Thread(target=self._write_pieces, name="dart-writer", daemon=True)
                         for _ in range(min(WRITERS, len(pieces)))]
        for thread in self._threads:
            thread.start()

    def _write_at(self, fd: int, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)

    def _write_pieces(self) -> None:
        while True:
            with self._lock:
                if self._error is not None:
                    return
                offset, view, direct = next(self._pieces, (None, None, None))
            if view is None:
                return
            try:
                if direct and self.direct_fd >= 0:
                    try:
                        self._write_at(self.direct_fd, view, offset)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:  # EINVAL: alignment refused; write it buffered
                            raise
                        self._write_at(self.fd, view, offset)
                        _start_writeback(self.fd, offset, len(view))
                else:
                    self._write_at(self.fd, view, offset)
                    _start_writeback(self.fd, offset, len(view))
                crash_point("object-piece")
            except OSError as exc:
                exc.with_traceback(None)  # its frames would keep the caller's buffer exported
                with self._lock:
                    self._error = self._error or exc

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._pieces = iter(())  # the views left after an error: the caller's buffer is free again

    def _close(self) -> None:
        for name in ("direct_fd", "fd"):
            fd = getattr(self, name)
            setattr(self, name, -1)
            if fd >= 0:
                os.close(fd)

    def finish(self, key: str, *, step: str | None = None) -> int:
        """Make the object durable at ``key``; returns the bytes written."""
        dest = self.backend.path(key)
        try:
            self._join()
            if self._error is not None:
                raise self._error
            os.fsync(self.fd)  # the buffered pieces, the file's size and the disk's cache
            self._close()
            if step:
                crash_point(f"{step}-tmp")
            self.backend.place_file(self.tmp, dest)
        except OSError as exc:
            self.abandon()
            raise _io_error(dest, self.backend.root, exc) from exc
        if step:
            crash_point(step)
        return self.size

    def abandon(self) -> None:
        """Stop and remove the temporary file (the object was already stored, or failed)."""
        self._join()
        try:
            self._close()
        except OSError:
            pass
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# POSIX locks do not exclude the process that holds them: track our own.
_HELD: set[str] = set()


class RunLock(Lease):
    """An exclusive POSIX lock (lockf) on ``locks/<run_id>.lock``, held until
    `release()` or process death. Not flock: processes the program forks (a
    DataLoader's workers) would inherit a flock and keep the run locked after
    the program itself was killed; POSIX locks belong to one process."""

    def __init__(self, path: Path, run_id: str, fd: int) -> None:
        self.path = path
        self.run_id = run_id
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _HELD.discard(str(self.path))
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __del__(self) -> None:
        self.release()


_JOURNAL_MAGIC = b"DARTJ1\n"


def _journal_entries(data: bytes):
    """(puts, refs) of each whole entry of a journal, up to the first that is
    cut short or damaged (a crash during its append: never acknowledged)."""
    at, head = 0, len(_JOURNAL_MAGIC) + 16
    while at + head <= len(data) and data[at : at + len(_JOURNAL_MAGIC)] == _JOURNAL_MAGIC:
        size, digest = struct.unpack_from("<QQ", data, at + len(_JOURNAL_MAGIC))
        body = data[at + head : at + head + size]
        if len(body) < size or xxhash.xxh3_64_intdigest(body) != digest:
            return
        (n,) = struct.unpack_from("<I", body)
        info = json.loads(body[4 : 4 + n])
        offset, puts = 4 + n, []
        for key, length in info["puts"]:
            puts.append((key, body[offset : offset + length]))
            offset += length
        yield puts, [tuple(r) for r in info["refs"]]
        at += head + size


class _FileLock:
    """flock on a lock file, for a short critical section (a ref's compare-and-swap)."""

    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        self.mode = mode
        self.fd: int | None = None

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, self.mode)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}; fix its permissions") from exc

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


class LocalBackend(Backend):
    """A store in a local directory. Safe to use from several threads and processes."""

    writable = True  #: False for an existing store this process cannot write (read-only)
    parallel_min = PARALLEL_MIN  #: objects this large go through begin_put

    def __init__(self, root: str | os.PathLike, create: bool = True, mode: str = "private") -> None:
        if mode not in MODES:
            raise StoreError(f"bad store mode {mode!r}; use one of {', '.join(MODES)}")
        self.dir_mode, self.file_mode = MODES[mode]
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)
        self.home = self.root.parent
        self._open(create)

    def __repr__(self) -> str:
        return f"LocalBackend({self.location!r})"

    def owner(self) -> str | None:
        """The user who owns the store, when it is not the user of this process."""
        try:
            uid = (self.root / MARKER).stat().st_uid
        except OSError:
            return None
        if uid == os.getuid():
            return None
        try:
            import pwd

            return pwd.getpwuid(uid).pw_name
        except (KeyError, ImportError):
            return f"uid {uid}"

    # ------------------------------------------------------------------ opening

    def _open(self, create: bool) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise StoreError(
                f"store path {root} is a file, not a directory; "
                f"choose another store location or move the file away"
            )
        if not root.exists():
            if not create:
                raise StoreError(f"no dart store at {root}; run the program under dart first", next_step="store")
            try:
                root.mkdir(parents=True, exist_ok=True, mode=self.dir_mode)
            except OSError as exc:
                raise StoreError(
                    f"cannot create store directory {root}: {exc.strerror or exc}; "
                    f"choose another store location or fix the permissions of its parent"
                ) from exc
        if not (root / MARKER).exists():
            try:
                entries = {p.name for p in root.iterdir()}
            except OSError as exc:
                raise StoreError(
                    f"cannot read store directory {root}: {exc.strerror or exc}; fix its permissions"
                ) from exc
            # A directory holding only our own folders is a store whose creation was interrupted.
            if not entries <= set(SUBDIRS):
                raise StoreError(
                    f"{root} is not empty and is not a dart store (it has no store.json); "
                    f"choose an empty or new directory for the store"
                )
            if not create:
                raise StoreError(f"no dart store at {root} (store.json is missing)", next_step="store")
        elif not create:
            # Reading an existing store (log, load): nothing to create, and a
            # read-only store must stay readable.
            self.writable = os.access(root / "tmp", os.W_OK)
            return
        self._make_subdirs()
        try:
            self._probe_writable()
        except StoreError:
            if not (root / MARKER).exists():
                raise  # a new store that cannot be written: say so now
            self.writable = False  # an existing read-only store: readable, resumable, no commits

    def _make_subdirs(self) -> None:
        try:
            for name in SUBDIRS:
                (self.root / name).mkdir(exist_ok=True, mode=self.dir_mode)
            (self.root / "refs" / "runs").mkdir(exist_ok=True, mode=self.dir_mode)
        except OSError as exc:
            raise StoreError(
                f"cannot create folders in store {self.root}: {exc.strerror or exc}; "
                f"choose another store location or fix its permissions"
            ) from exc

    def _probe_writable(self) -> None:
        probe = self.root / "tmp" / f"probe.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"cannot write to store {self.root}: {exc.strerror or exc}; "
                f"choose another store location or fix its permissions"
            ) from exc

    # ------------------------------------------------------------------ keys

    def path(self, key: str) -> Path:
        """The file of ``key`` (keys are relative, with no empty, "." or ".." part)."""
        parts = key.split("/")
        if not key or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"bad key {key!r} in store {self.root}")
        return self.root.joinpath(*parts)

    # ------------------------------------------------------------------ blobs

    def _make_parent(self, dest: Path) -> bool:
        """Create the folder of ``dest`` if needed; True if it was just created."""
        if dest.parent.is_dir():
            return False
        try:
            dest.parent.mkdir(parents=True, mode=self.dir_mode)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(
                f"cannot create {dest.parent} in store {self.root}: {exc.strerror or exc}; "
                f"check the store's permissions and free space"
            ) from exc

    def place_file(self, tmp: Path, dest: Path) -> None:
        """Rename the fsync'd file ``tmp`` to ``dest`` and make the rename durable."""
        new_parent = self._make_parent(dest)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        if new_parent:
            _fsync_dir(dest.parent.parent)

    def begin_put(self, chunks: list) -> PendingPut:
        """Start writing a large object (see the module's docstring); the caller
        names its key when it calls ``finish`` (after hashing the same bytes)."""
        return PendingPut(self, chunks)

    def put(self, key: str, chunks: list, *, step: str | None = None) -> int:
        dest = self.path(key)
        new_parent = self._make_parent(dest)
        tmp = self.root / "tmp" / f"{dest.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        written = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        written += n
                        view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if step:
                crash_point(f"{step}-tmp")
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            if new_parent:
                _fsync_dir(dest.parent.parent)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            hint = "free some disk space" if exc.errno == errno.ENOSPC else "check the store's permissions and free space"
            raise StoreError(f"cannot write {dest} in store {self.root}: {exc.strerror or exc}; {hint}") from exc
        if step:
            crash_point(step)
        return written

    def open(self, key: str) -> BinaryIO:
        path = self.path(key)
        try:
            return open(path, "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError):
            raise Missing(key) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions") from exc

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            try:
                return f.readall()
            except OSError as exc:
                raise StoreError(f"cannot read {self.path(key)}: {exc.strerror or exc}") from exc

    def get_range(self, key: str, offset: int, out: memoryview) -> None:
        with self.open(key) as f:
            got = 0
            while got < len(out):
                n = os.preadv(f.fileno(), [out[got:]], offset + got)
                if not n:
                    raise StoreError(f"{self.path(key)} ends before byte {offset + len(out)}; it is truncated")
                got += n

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        folder, _, start = prefix.rpartition("/")
        base = self.path(folder) if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                key = f"{rel}/{name}" if rel != "." else name
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot delete {self.path(key)}: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ refs

    # ------------------------------------------------------------------ journal

    def _journal_path(self, run_id: str) -> Path:
        return self.path(f"journal/{run_id}")

    def put_journaled(self, run_id: str, puts: list[tuple[str, bytes]], refs: list[tuple[str, str | None, str]]):
        """Write ``puts`` (content-addressed keys: objects, commit records: never
        rewritten with other bytes) and move each ref (name, expected, new) by
        compare-and-swap, durable with one fdatasync of the run's journal. Returns
        None, or the current value of a ref that did not match (nothing written)."""
        header = json.dumps({"puts": [[k, len(d)] for k, d in puts], "refs": refs}).encode()
        body = struct.pack("<I", len(header)) + header + b"".join(bytes(d) for _, d in puts)
        entry = _JOURNAL_MAGIC + struct.pack("<QQ", len(body), xxhash.xxh3_64_intdigest(body)) + body
        path = self._journal_path(run_id)
        with _FileLock(self.root / "locks" / "refs.lock", self.file_mode):
            for name, expected, _ in refs:
                current = self.read_ref(name)
                if current != expected:
                    return current
            # In place first (page cache: what readers and a killed process's
            # successor see), then durable: the journal entry, one fdatasync.
            for key, data in puts:
                if not self.exists(key):
                    self.place(key, data)
            for name, _, new_value in refs:
                self.place(f"refs/{name}", new_value.encode() + b"\n")
            try:
                if not path.parent.is_dir():
                    path.parent.mkdir(mode=self.dir_mode, exist_ok=True)
                    _fsync_dir(self.root)
                new = not path.exists()
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self.file_mode)
                try:
                    view = memoryview(entry)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                if new:
                    _fsync_dir(path.parent)
            except OSError as exc:
                hint = "free some disk space" if exc.errno == errno.ENOSPC else "check the store's permissions and free space"
                raise StoreError(f"cannot write {path} in store {self.root}: {exc.strerror or exc}; {hint}") from exc
            crash_point("journal")
        return None

    def place(self, key: str, data, durable: bool = False) -> None:
        """Put ``data`` at ``key`` by rename; fsync'd (file, directory) only if ``durable``."""
        dest = self.path(key)
        tmp = self.root / "tmp" / f"{dest.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True, mode=self.dir_mode)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
            try:
                os.write(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {dest} in store {self.root}: {exc.strerror or exc}") from exc

    def journal_size(self, run_id: str) -> int:
        try:
            return self._journal_path(run_id).stat().st_size
        except FileNotFoundError:
            return 0

    def settle_journal(self, run_id: str) -> None:
        """Make what the journal of ``run_id`` holds durable in place (files missing
        or empty are written again; one with other bytes is damage and is left to
        be reported; refs whose move was lost are moved
        again, in order; a ref left naming a commit that was never journaled and
        whose record is lost goes back to the newest journaled one), then drop the
        journal. An entry cut short by a crash was never acknowledged: it is
        ignored. Call with the run's lease held."""
        path = self._journal_path(run_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions") from exc
        dirs, placed = set(), []
        with _FileLock(self.root / "locks" / "refs.lock", self.file_mode):
            for puts, refs in _journal_entries(data):
                for key, value in puts:
                    dest = self.path(key)
                    try:
                        # Put by rename: whole or absent (or empty). A file there with
                        # other bytes is damage, left for the checks that report it.
                        lost = dest.stat().st_size == 0
                    except FileNotFoundError:
                        lost = True
                    if lost:
                        self.place(key, value)
                    placed.append(dest)
                    dirs.add(dest.parent)
            synced = _sync_filesystem(self.root)
            if not synced:
                for dest in placed:
                    fd = os.open(dest, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            moves: dict[str, list] = {}
            for _, refs in _journal_entries(data):
                for name, expected, new in refs:
                    moves.setdefault(name, []).append((expected, new))
            for name, steps in moves.items():
                # The ref as the journal leaves it: moves lost with the page cache
                # made again; a ref that names a commit whose record was lost (put
                # in place, never journaled) goes back to the newest journaled one.
                current = self.read_ref(name)
                for expected, new in steps:
                    if current == expected:
                        current = new
                if current is None or not self.exists(f"commits/{current}.json"):
                    current = steps[-1][1]
                self.place(f"refs/{name}", current.encode() + b"\n", durable=True)
                _fsync_dir(self._ref_path(name).parent)
            for folder in [] if synced else sorted(dirs):
                _fsync_dir(folder)
            path.unlink()
            _fsync_dir(path.parent)

    def _ref_path(self, name: str) -> Path:
        return self.path(f"refs/{name}")

    def read_ref(self, name: str) -> str | None:
        path = self._ref_path(name)
        try:
            value = path.read_bytes().decode("utf-8", errors="replace").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot read ref {path}: {exc.strerror or exc}; fix its permissions") from exc
        return value or None

    def list_refs(self, prefix: str) -> list[str]:
        return [key[len("refs/") :] for key in self.list(f"refs/{prefix}")]

    def cas_ref(self, name: str, expected: str | None, new: str) -> str | None:
        with _FileLock(self.root / "locks" / "refs.lock", self.file_mode):
            current = self.read_ref(name)
            if current != expected:
                return current
            self.put(f"refs/{name}", [new.encode() + b"\n"], step="ref")
        return None

    def delete_ref(self, name: str, expected: str) -> str | None:
        with _FileLock(self.root / "locks" / "refs.lock", self.file_mode):
            current = self.read_ref(name)
            if current != expected:
                return current
            self.delete(f"refs/{name}")
            _fsync_dir(self._ref_path(name).parent)
        return None

    # ------------------------------------------------------------------ leases

    def lease_holder(self, run_id: str) -> str | None:
        """Asks the kernel who holds the lock (F_GETLK), without taking it."""
        path = self.path(f"locks/{run_id}.lock")
        if str(path) in _HELD:
            return f"process {os.getpid()}"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot open lock file {path}: {exc.strerror or exc}; fix its permissions") from exc
        try:
            query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # struct flock: the whole file
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
            kind, _, _, _, pid = struct.unpack("hhqqi4x", answer)
        except OSError:
            return None
        finally:
            os.close(fd)
        return None if kind == fcntl.F_UNLCK else f"process {pid}"

    def lease(self, run_id: str) -> Lease:
        path = self.path(f"locks/{run_id}.lock")
        if not self.writable:
            # This process can read (and resume) the run but never advance it:
            # there is nothing to exclude.
            return PlainLease(run_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, self.file_mode)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {path}: {exc.strerror or exc}; fix its permissions") from exc
        try:
            if str(path) in _HELD:
                raise BlockingIOError
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise LeaseHeld(run_id, f"process {holder}") from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(str(path))
        return RunLock(path, run_id, fd)
