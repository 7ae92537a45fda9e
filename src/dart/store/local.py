"""The local directory store: content-addressed objects, commit records and refs.

Layout under the root (``.dart/`` by default)::

    store.json               {"format": 1}
    objects/ab/cdef...       objects; id = xxh3_128 hex of the raw (uncompressed) bytes
    commits/<id>.json        commit records
    refs/runs/<run_id>       newest durable commit id of a run
    runs/<run_id>.json       run metadata
    tmp/                     temporary files, renamed into place (same filesystem)
    locks/<name>.lock        lock files (lockf for runs, flock for refs and runs/)

Every write goes to a temporary file in ``tmp/`` that is fsync'd, renamed into place
with ``os.replace`` and followed by an fsync of the destination directory. A commit
writes its objects, then its record, then moves the ref, so a crash at any instant
leaves the previous commit intact and at most some unreferenced garbage.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import struct
import time
from pathlib import Path
from typing import Any

import xxhash
import zstandard

from dart.errors import CorruptObjectError, StoreError

FORMAT = 1

#: Object file header: magic, codec byte, little-endian raw length.
MAGIC = b"DART\x01"
_HEADER = struct.Struct("<5sBQ")
HEADER_SIZE = _HEADER.size  # 14
CODEC_RAW = 0
CODEC_ZSTD = 1

#: Adaptive compression: compress this much as a sample, keep zstd only if it pays.
SAMPLE_SIZE = 256 * 1024
MIN_COMPRESS_SIZE = 4 * 1024
COMPRESS_RATIO = 0.9
ZSTD_LEVEL = 1

CRASH_EXIT_CODE = 70
_SUBDIRS = ("objects", "commits", "refs", "runs", "tmp", "locks")
_DAMAGED = "the store is damaged; restore it from a copy or start over with --fresh"


def crash_point(step: str) -> None:
    """Test hook: die at once (exit 70, no cleanup) if DART_TEST_CRASH_AT names `step`."""
    if os.environ.get("DART_TEST_CRASH_AT") == step:
        os._exit(CRASH_EXIT_CODE)


def object_id(data: bytes | memoryview) -> str:
    """The id of an object: xxh3_128 hex digest of its raw bytes."""
    return xxhash.xxh3_128_hexdigest(data)


def commit_id(record: dict) -> str:
    """The id of a commit record: 16 hex chars of xxh3_128 of its canonical JSON, "id" left out."""
    body = {k: v for k, v in record.items() if k != "id"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return xxhash.xxh3_128_hexdigest(canonical.encode())[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _byte_view(data: Any) -> memoryview:
    """A flat unsigned-byte view of any buffer (bytes, bytearray, memoryview, array)."""
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


# POSIX locks do not exclude the process that holds them: track our own.
_HELD: set[str] = set()


class RunLock:
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

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


class Store:
    """A dart store in a local directory. Safe to use from several threads and processes."""

    def __init__(self, root: str | os.PathLike = ".dart", create: bool = True) -> None:
        self.root = Path(root)
        self._open(create)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

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
                raise StoreError(
                    f"no dart store at {root}; run the program under dart first or pass the right --store"
                )
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create store directory {root}: {exc.strerror or exc}; "
                    f"choose another store location or fix the permissions of its parent"
                ) from exc
        marker = root / "store.json"
        if marker.exists():
            self._check_marker(marker)
            self._make_subdirs()
            self._probe_writable()
            return
        try:
            entries = {p.name for p in root.iterdir()}
        except OSError as exc:
            raise StoreError(
                f"cannot read store directory {root}: {exc.strerror or exc}; fix its permissions"
            ) from exc
        # A directory holding only our own folders is a store whose creation was interrupted.
        if not entries <= set(_SUBDIRS):
            raise StoreError(
                f"{root} is not empty and is not a dart store (it has no store.json); "
                f"choose an empty or new directory for the store"
            )
        if not create:
            raise StoreError(f"no dart store at {root} (store.json is missing); pass the right --store")
        self._make_subdirs()
        self._probe_writable()
        self._write_atomic(marker, json.dumps({"format": FORMAT}).encode() + b"\n", what="store.json")

    def _check_marker(self, marker: Path) -> None:
        try:
            info = json.loads(marker.read_text())
        except OSError as exc:
            raise StoreError(
                f"cannot read {marker}: {exc.strerror or exc}; fix its permissions"
            ) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(
                f"{marker} is not valid JSON ({exc}); {_DAMAGED}"
            ) from exc
        fmt = info.get("format") if isinstance(info, dict) else None
        if fmt != FORMAT:
            raise StoreError(
                f"store {self.root} has format {fmt!r}, but this version of dart reads format "
                f"{FORMAT}; use the dart version that wrote it or start over with --fresh"
            )

    def _make_subdirs(self) -> None:
        try:
            for name in _SUBDIRS:
                (self.root / name).mkdir(exist_ok=True)
            (self.root / "refs" / "runs").mkdir(exist_ok=True)
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

    # ------------------------------------------------------------------ atomic writes

    def _write_atomic(
        self,
        dest: Path,
        data: bytes | memoryview | list,
        *,
        what: str,
        crash_step: str | None = None,
        new_parent: bool = False,
    ) -> int:
        """Write `data` (bytes or a list of byte chunks) to `dest` via tmp/, fsync, rename.

        Returns the number of bytes written. `new_parent` also fsyncs the grandparent,
        because `dest.parent` was just created.
        """
        chunks = data if isinstance(data, list) else [data]
        tmp = self.root / "tmp" / f"{dest.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        written = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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
            if crash_step:
                crash_point(f"{crash_step}-tmp")
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
            raise StoreError(
                f"cannot write {what} to {dest} in store {self.root}: {exc.strerror or exc}; {hint}"
            ) from exc
        if crash_step:
            crash_point(crash_step)
        return written

    def _read_json(self, path: Path, what: str) -> dict:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot read {what} {path}: {exc.strerror or exc}; fix its permissions") from exc
        try:
            value = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptObjectError(f"{what} {path} is not valid JSON ({exc}); {_DAMAGED}") from exc
        if not isinstance(value, dict):
            raise CorruptObjectError(f"{what} {path} does not hold a JSON object; {_DAMAGED}")
        return value

    # ------------------------------------------------------------------ objects

    def object_path(self, oid: str) -> Path:
        return self.root / "objects" / oid[:2] / oid[2:]

    def has_object(self, oid: str) -> bool:
        return self.object_path(oid).is_file()

    def put_object(self, data: bytes | memoryview) -> tuple[str, int]:
        """Store `data`; return (object id, bytes written to disk; 0 if it was already there)."""
        view = _byte_view(data)
        oid = object_id(view)
        path = self.object_path(oid)
        if path.is_file():
            return oid, 0
        codec, payload = CODEC_RAW, view
        if view.nbytes > MIN_COMPRESS_SIZE:
            sample = view[:SAMPLE_SIZE]
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
            squeezed = compressor.compress(sample)
            if len(squeezed) < COMPRESS_RATIO * sample.nbytes:
                if sample.nbytes < view.nbytes:
                    squeezed = compressor.compress(view)
                if len(squeezed) < view.nbytes:
                    codec, payload = CODEC_ZSTD, squeezed
        header = _HEADER.pack(MAGIC, codec, view.nbytes)
        folder = path.parent
        new_folder = False
        if not folder.is_dir():
            try:
                folder.mkdir()
                new_folder = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(
                    f"cannot create {folder} in store {self.root}: {exc.strerror or exc}; "
                    f"check the store's permissions and free space"
                ) from exc
        written = self._write_atomic(
            path, [header, payload], what=f"object {oid}", crash_step="object", new_parent=new_folder
        )
        return oid, written

    def get_object(self, oid: str) -> bytearray:
        """The raw bytes of object `oid`, verified against its id (see read_object)."""
        return self.read_object(oid)

    def _open_object(self, oid: str):
        path = self.object_path(oid)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise StoreError(
                f"object {oid} is missing from store {self.root} (no file {path}); {_DAMAGED}"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read object file {path}: {exc.strerror or exc}; fix its permissions") from exc
        header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE or header[:5] != MAGIC:
            f.close()
            raise CorruptObjectError(f"object file {path} has a bad or truncated header; {_DAMAGED}")
        _, codec, length = _HEADER.unpack(header)
        return f, codec, length

    def object_header(self, oid: str) -> tuple[int, int]:
        """(codec, raw length) of object `oid`."""
        f, codec, length = self._open_object(oid)
        f.close()
        return codec, length

    def read_object(self, oid: str) -> bytearray:
        """The raw bytes of object `oid` in a new writable, aligned buffer, verified
        against its id. Raw objects are read straight into it (no extra copy)."""
        f, codec, length = self._open_object(oid)
        path = self.object_path(oid)
        with f:
            data = bytearray(length)
            view = memoryview(data)
            got = 0
            try:
                if codec == CODEC_RAW:
                    while got < length:
                        n = f.readinto(view[got:])
                        if not n:
                            break
                        got += n
                elif codec == CODEC_ZSTD:
                    with zstandard.ZstdDecompressor().stream_reader(f, closefd=False) as reader:
                        while got < length:
                            n = reader.readinto(view[got:])
                            if not n:
                                break
                            got += n
                else:
                    raise CorruptObjectError(f"object file {path} has unknown codec {codec}; {_DAMAGED}")
            except zstandard.ZstdError as exc:
                raise CorruptObjectError(f"object file {path} cannot be decompressed ({exc}); {_DAMAGED}") from exc
            except OSError as exc:
                raise StoreError(f"cannot read object file {path}: {exc.strerror or exc}") from exc
        if got != length:
            raise CorruptObjectError(f"object file {path} holds {got} bytes, its header says {length}; {_DAMAGED}")
        if object_id(view) != oid:
            raise CorruptObjectError(f"object file {path} failed its checksum; {_DAMAGED}")
        return data

    def read_object_range(self, oid: str, offset: int, out: memoryview) -> None:
        """Read bytes [offset, offset + len(out)) of raw object `oid` into `out`
        (not verified here: the caller checks the piece's own hash)."""
        f, codec, length = self._open_object(oid)
        path = self.object_path(oid)
        with f:
            if codec != CODEC_RAW or offset + len(out) > length:
                raise CorruptObjectError(
                    f"object file {path} cannot hold bytes {offset}..{offset + len(out)}; {_DAMAGED}"
                )
            got = 0
            while got < len(out):
                n = os.preadv(f.fileno(), [out[got:]], HEADER_SIZE + offset + got)
                if not n:
                    raise CorruptObjectError(f"object file {path} is truncated; {_DAMAGED}")
                got += n

    # ------------------------------------------------------------------ commits

    def _commit_path(self, cid: str) -> Path:
        return self.root / "commits" / f"{cid}.json"

    def put_commit(self, record: dict) -> str:
        """Write a commit record; return its id (deterministic in the record's content)."""
        cid = commit_id(record)
        path = self._commit_path(cid)
        if path.is_file():
            return cid
        body = {k: v for k, v in record.items() if k != "id"}
        body["id"] = cid
        text = json.dumps(body, sort_keys=True, indent=1).encode() + b"\n"
        self._write_atomic(path, text, what=f"commit record {cid}", crash_step="record")
        return cid

    def _load_commit(self, cid: str) -> dict:
        return self._read_json(self._commit_path(cid), "commit record")

    def resolve(self, ref_or_prefix: str) -> str:
        """The full commit id named by a full id, a unique prefix (4+ chars) or a run id."""
        name = str(ref_or_prefix).strip()
        if name and "/" not in name and "\0" not in name and not name.startswith("."):
            head = self.read_ref(f"runs/{name}")
            if head is not None:
                return head
        elif name.startswith("runs/"):
            head = self.read_ref(name)
            if head is not None:
                return head
        if _is_hex(name):
            if self._commit_path(name).is_file():
                return name
            if len(name) >= 4:
                matches = sorted(p.name[:-5] for p in (self.root / "commits").glob(f"{name}*.json"))
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
                    raise StoreError(
                        f"commit prefix {name} is ambiguous in store {self.root}: it matches {shown}; "
                        f"give more characters"
                    )
        raise StoreError(f"no commit {name} in store {self.root}; `dart log` lists them")

    def get_commit(self, ref_or_prefix: str) -> dict:
        """The commit record named by a full id, a unique prefix (4+ chars) or a run id."""
        cid = self.resolve(ref_or_prefix)
        try:
            return self._load_commit(cid)
        except FileNotFoundError:
            raise StoreError(
                f"no commit {cid} in store {self.root} (named by {ref_or_prefix}); {_DAMAGED}"
            ) from None

    # ------------------------------------------------------------------ refs

    def _ref_path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"bad ref name {name!r}; use a name like runs/<run_id>")
        return self.root.joinpath("refs", *parts)

    def read_ref(self, name: str) -> str | None:
        path = self._ref_path(name)
        try:
            value = path.read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot read ref {path}: {exc.strerror or exc}; fix its permissions") from exc
        return value or None

    def write_ref(self, name: str, cid: str, expected: str | None = None) -> None:
        """Point ref `name` at `cid` if it still points at `expected` (None: does not exist)."""
        path = self._ref_path(name)
        with self._flock("refs"):
            current = self.read_ref(name)
            if current != expected:
                raise StoreError(
                    f"ref {name} in store {self.root} moved to {current} while this process expected "
                    f"{expected}; another process is writing the same run — stop it and try again"
                )
            if not path.parent.is_dir():
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
            self._write_atomic(path, cid.encode() + b"\n", what=f"ref {name}", crash_step="ref")

    class _FileLock:
        def __init__(self, path: Path) -> None:
            self.path = path
            self.fd: int | None = None

        def __enter__(self) -> None:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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

    def _flock(self, name: str) -> Store._FileLock:
        return Store._FileLock(self.root / "locks" / f"{name}.lock")

    # ------------------------------------------------------------------ runs

    def _run_path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\0" in run_id or run_id.startswith("."):
            raise StoreError(f"bad run id {run_id!r}")
        return self.root / "runs" / f"{run_id}.json"

    def create_run(self, info: dict) -> str:
        """Record a new run; return its id (time-sortable, UTC: YYYYmmdd-HHMMSS-<6 hex>)."""
        now = time.time()
        run_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(3)
        run = dict(info, id=run_id, created=now, status="running")
        self._write_atomic(self._run_path(run_id), json.dumps(run, sort_keys=True, indent=1).encode(), what="run")
        return run_id

    def get_run(self, run_id: str) -> dict:
        path = self._run_path(run_id)
        try:
            return self._read_json(path, "run metadata")
        except FileNotFoundError:
            raise StoreError(f"no run {run_id} in store {self.root}; `dart log` lists the runs") from None

    def update_run(self, run_id: str, **fields: Any) -> dict:
        """Merge `fields` into a run's metadata (atomic replace); return the new metadata."""
        with self._flock("runs"):
            run = self.get_run(run_id)
            run.update(fields)
            run["id"] = run_id
            self._write_atomic(self._run_path(run_id), json.dumps(run, sort_keys=True, indent=1).encode(), what="run")
        return run

    def list_runs(self) -> list[dict]:
        """All runs, oldest first."""
        runs = []
        for path in (self.root / "runs").glob("*.json"):
            try:
                runs.append(self._read_json(path, "run metadata"))
            except FileNotFoundError:
                continue
        runs.sort(key=lambda r: (r.get("created", 0.0), r.get("id", "")))
        return runs

    def find_runs(self, key: str) -> list[dict]:
        """Runs whose info["key"] equals `key`, oldest first."""
        return [r for r in self.list_runs() if r.get("key") == key]

    def lock_run(self, run_id: str) -> RunLock:
        """Hold an exclusive lock on a run; StoreError if another process holds it."""
        self._run_path(run_id)  # validates the id
        path = self.root / "locks" / f"{run_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {path}: {exc.strerror or exc}; fix its permissions") from exc
        try:
            if str(path) in _HELD:
                raise BlockingIOError
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise StoreError(
                f"run {run_id} is already running in process {pid}; wait for it to finish or kill it"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(str(path))
        return RunLock(path, run_id, fd)

    # ------------------------------------------------------------------ history

    def head(self, run_id: str) -> dict | None:
        """The newest durable commit record of a run, or None if it has none."""
        cid = self.read_ref(f"runs/{run_id}")
        return None if cid is None else self.get_commit(cid)

    def _run_refs(self) -> list[str]:
        folder = self.root / "refs" / "runs"
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def log(self, run: str | None = None) -> list[dict]:
        """Durable commit records reachable from run refs, newest first.

        With `run`, only that run's own commits (reached from its ref; the commits of the
        run it branched from are left out). Records a crash left without a ref are not listed.
        """
        heads = [run] if run is not None else self._run_refs()
        seen: dict[str, tuple[int, dict]] = {}
        for run_id in heads:
            cid = self.read_ref(f"runs/{run_id}")
            chain: list[dict] = []
            on_chain: set[str] = set()
            while cid and cid not in seen and cid not in on_chain:
                try:
                    record = self._load_commit(cid)
                except FileNotFoundError:
                    break  # garbage-collected ancestor: history ends here
                if run is not None and record.get("run") != run:
                    break
                chain.append(record)
                on_chain.add(cid)
                cid = record.get("parent")
            base = seen[cid][0] + 1 if cid in seen else 0
            for depth, record in enumerate(reversed(chain), start=base):
                seen[record["id"]] = (depth, dict(record, durable=True))
        ordered = sorted(seen.values(), key=lambda item: (item[1].get("time", 0.0), item[0]), reverse=True)
        return [record for _, record in ordered]
