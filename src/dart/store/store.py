"""The store: content-addressed objects, commit records, refs and runs, over any
backend. This is where the keys, the write order and the checks live; the
backend only keeps bytes (``backend.py``), the codec shapes them (``codec.py``).

A commit writes its objects, then its record, then moves the run's ref by
compare-and-swap, so a crash at any instant leaves the previous commit intact and
at most some unreferenced garbage.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import xxhash

from dart.errors import CorruptObjectError, RunBusyError, StoreError

from . import codec
from .backend import Backend, Lease, LeaseHeld, Missing
from .codec import object_id
from .record import CommitRecord, decode_record, encode_record
from .sign import key_from_environment, mac

FORMAT = 1  #: of the store as a whole (store.json); commits carry versions of their own
RUN_MAGIC = b"DARTRUN1 "


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _is_commit_id(text) -> bool:
    return isinstance(text, str) and len(text) == 16 and _is_hex(text)


def _check_name(name: str, what: str, example: str) -> str:
    parts = name.split("/") if isinstance(name, str) else [""]
    if not name or "\0" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"bad {what} {name!r}; use a name like {example}")
    return name


class Store:
    """A dart store. ``Store(path)`` opens (or creates) a local directory store;
    ``open_store(location)`` opens any kind. Safe to use from several threads."""

    def __init__(self, backend: Backend | str | os.PathLike, create: bool = True, key: bytes | None = None) -> None:
        if not isinstance(backend, Backend):
            from .local import LocalBackend

            backend = LocalBackend(backend, create=create)
        self.backend = backend
        self.location = backend.location
        #: the signing key (sign.py): records, indexes and pods are signed and checked
        self.key = key if key is not None else key_from_environment()
        self._journaling = threading.local()  # .gathered inside journaled(), on that thread only
        self._check_marker(create)

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    @property
    def root(self) -> Path:
        """The directory of a local store (AttributeError for other backends)."""
        return self.backend.root  # type: ignore[attr-defined]

    @property
    def home(self) -> Path | None:
        """The local folder the store sits in, or None (see Backend.home)."""
        return self.backend.home

    @property
    def writable(self) -> bool:
        return self.backend.writable

    def _check_marker(self, create: bool) -> None:
        try:
            data = self.backend.get("store.json")
        except Missing:
            if not create or not self.backend.writable:
                raise StoreError(f"no dart store at {self.location} (store.json is missing)", next_step="store")
            self.backend.put("store.json", [json.dumps({"format": FORMAT}).encode() + b"\n"])
            return
        try:
            info = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.location}/store.json is not valid JSON ({exc})", next_step="damaged") from exc
        fmt = info.get("format") if isinstance(info, dict) else None
        if fmt != FORMAT:
            raise StoreError(
                f"store {self.location} has format {fmt!r}, but this version of dart reads format "
                f"{FORMAT}; use the dart version that wrote it or start over with --fresh"
            )

    def mac(self, data) -> str | None:
        """The MAC of ``data`` under the store's key, None without a key."""
        return None if self.key is None else mac(self.key, data)

    def _where(self, key: str) -> str:
        path = getattr(self.backend, "path", None)
        return str(path(key)) if path is not None else f"{self.location}/{key}"

    # ------------------------------------------------------------------ objects

    @staticmethod
    def _object_key(oid: str) -> str:
        if not _is_hex(oid) or len(oid) != 32:
            raise CorruptObjectError(f"{oid!r} is not an object id", next_step="damaged")
        return f"objects/{oid[:2]}/{oid[2:]}"

    def object_path(self, oid: str) -> Path:
        """The file of an object in a local store."""
        return self.backend.path(self._object_key(oid))  # type: ignore[attr-defined]

    def has_object(self, oid: str) -> bool:
        return self.backend.exists(self._object_key(oid))

    def object_ids(self) -> list[str]:
        """Every object in the store."""
        return [k[len("objects/") :].replace("/", "") for k in self.backend.list("objects/")]

    def delete_object(self, oid: str) -> None:
        self.backend.delete(self._object_key(oid))

    def put_object(self, data: bytes | memoryview, while_writing=None) -> tuple[str, int]:
        """Store `data`; return (object id, bytes written; 0 if it was already there).

        A large object is written while its id is computed (the backend's
        ``begin_put``: writer threads, the GIL released): hashing costs no time
        to durable. ``while_writing()``, if given, runs on this thread meanwhile
        (the flusher hashes a pack's pieces there)."""
        view = codec.byte_view(data)
        begin = getattr(self.backend, "begin_put", None)
        if begin is not None and self._gathered is None and view.nbytes >= self.backend.parallel_min:
            pending = begin(codec.encode(view))
            try:
                oid = object_id(view)
                if while_writing is not None:
                    while_writing()
                key = self._object_key(oid)
                exists = self.backend.exists(key)
            except BaseException:
                pending.abandon()
                raise
            if exists:  # the same bytes were stored before (rare for changed data)
                pending.abandon()
                return oid, 0
            return oid, pending.finish(key, step="object")
        oid = object_id(view)
        key = self._object_key(oid)
        if (self._gathered is not None and key in self._gathered[0]) or self.backend.exists(key):
            written = 0
        else:
            written = self._put(key, codec.encode(view), step="object")
        if while_writing is not None:
            while_writing()
        return oid, written

    @property
    def _gathered(self) -> tuple[dict, list] | None:
        """(puts by key, ref moves) of the journaled() block running on this thread."""
        return getattr(self._journaling, "gathered", None)

    def _put(self, key: str, chunks: list, step: str) -> int:
        if self._gathered is None:
            return self.backend.put(key, chunks, step=step)
        data = b"".join(chunks)
        self.backend.place(key, data)  # in place now (not yet durable): the journal entry makes it so
        self._gathered[0][key] = data
        return len(data)

    @contextmanager
    def journaled(self, run_id: str):
        """Within it, ``put_object`` and ``put_commit`` put their files in place
        at once without fsync, and ``write_ref`` waits for the end, where the ref
        moves and everything becomes durable as one entry of the run's journal
        (one fsync, see local.py), when the backend keeps journals; elsewhere, and
        when nested, they are written as usual. If it raises, the ref does not
        move (the files put in place are orphans, as after a crash)."""
        if self._gathered is not None or not hasattr(self.backend, "put_journaled"):
            yield
            return
        self._journaling.gathered = ({}, [])
        try:
            yield
            puts, refs = self._gathered
        finally:
            self._journaling.gathered = None
        if puts or refs:
            current = self.backend.put_journaled(run_id, list(puts.items()), refs)
            if current is not None:
                name, expected, _ = next(r for r in refs)
                raise StoreError(
                    f"ref {name} in store {self.location} moved to {current} while this process expected "
                    f"{expected}; another process is writing the same run — stop it and try again"
                )

    def settle_journal(self, run_id: str) -> None:
        """Make a run's journaled commits durable in place (local.py); a no-op
        where the backend keeps no journals."""
        settle = getattr(self.backend, "settle_journal", None)
        if settle is not None and self.backend.writable:
            settle(run_id)

    def journal_size(self, run_id: str) -> int:
        size = getattr(self.backend, "journal_size", None)
        return size(run_id) if size is not None else 0

    def _open_object(self, oid: str):
        key = self._object_key(oid)
        try:
            return self.backend.open(key)
        except Missing:
            raise StoreError(
                f"object {oid} is missing from store {self.location} (no {self._where(key)})",
                next_step="damaged",
            ) from None

    def read_object(self, oid: str, allocate=bytearray) -> bytearray:
        """The raw bytes of object `oid` in a new writable buffer (``allocate(n)``:
        a bytearray unless told), verified against its id."""
        with self._open_object(oid) as f:
            return codec.decode(f, oid, self._where(self._object_key(oid)), allocate)

    get_object = read_object

    def object_header(self, oid: str) -> tuple[int, int]:
        """(codec, raw length) of object `oid`."""
        with self._open_object(oid) as f:
            return codec.read_header(f, self._where(self._object_key(oid)))

    def read_object_range(self, oid: str, offset: int, out: memoryview) -> None:
        """Read bytes [offset, offset + len(out)) of raw object `oid` into `out`
        (not verified here: the caller checks the piece's own hash)."""
        key = self._object_key(oid)
        where = self._where(key)
        kind, length = self.object_header(oid)
        if kind != codec.CODEC_RAW or offset + len(out) > length:
            raise CorruptObjectError(f"object {where} cannot hold bytes {offset}..{offset + len(out)}", next_step="damaged")
        try:
            self.backend.get_range(key, codec.HEADER_SIZE + offset, out)
        except StoreError as exc:
            raise CorruptObjectError(f"object {where} is truncated ({exc})", next_step="damaged") from None

    # ------------------------------------------------------------------ commits

    @staticmethod
    def _commit_key(cid: str) -> str:
        if not _is_commit_id(cid):
            raise StoreError(f"bad commit id {cid!r}: a commit id is 16 hex digits", next_step="log")
        return f"commits/{cid}.json"

    def put_commit(self, record: CommitRecord) -> str:
        """Write a commit record; return its id (deterministic in the record's content)."""
        cid, data, _ = encode_record(record, self.key)
        key = self._commit_key(cid)
        if not self.backend.exists(key):
            self._put(key, [data], step="record")
        return cid

    def read_commit(self, cid: str) -> CommitRecord:
        """The record stored as ``cid`` (Missing if there is none; CorruptObjectError
        if it does not parse or does not match its id)."""
        key = self._commit_key(cid)
        return decode_record(self.backend.get(key), self._where(key), expected_id=cid, key=self.key)


    def commit_ids(self) -> list[str]:
        """Every stored record's id (names that are no commit id are left out)."""
        names = [k[len("commits/") : -len(".json")] for k in self.backend.list("commits/") if k.endswith(".json")]
        return [n for n in names if _is_commit_id(n)]

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
            if _is_commit_id(name) and self.backend.exists(self._commit_key(name)):
                return name
            if len(name) >= 4:
                matches = sorted(c for c in self.commit_ids() if c.startswith(name))
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
                    raise StoreError(
                        f"commit prefix {name} is ambiguous in store {self.location}: it matches {shown}; "
                        f"give more characters"
                    )
        raise StoreError(f"no commit {name} in store {self.location}; `dart log` lists them")

    def get_commit(self, ref_or_prefix: str) -> CommitRecord:
        """The commit record named by a full id, a unique prefix (4+ chars) or a run id."""
        cid = self.resolve(ref_or_prefix)
        try:
            return self.read_commit(cid)
        except Missing:
            raise StoreError(
                f"no commit {cid} in store {self.location} (named by {ref_or_prefix})",
                next_step="damaged",
            ) from None

    # ------------------------------------------------------------------ refs

    def read_ref(self, name: str) -> str | None:
        """The commit a ref names, None if there is no such ref; CorruptObjectError
        if it holds anything but a commit id."""
        value = self.backend.read_ref(_check_name(name, "ref name", "runs/<run_id>"))
        if value is not None and not _is_commit_id(value):
            raise CorruptObjectError(
                f"ref {name} in store {self.location} holds {value[:40]!r}, not a commit id", next_step="damaged"
            )
        return value

    def repair_ref(self, name: str, cid: str) -> None:
        """Point ref ``name`` at ``cid`` whatever it holds now (damaged or missing)."""
        current = self.backend.read_ref(_check_name(name, "ref name", "runs/<run_id>"))
        if self.backend.cas_ref(name, current, cid) is not None:
            raise StoreError(f"ref {name} in store {self.location} moved while it was repaired; try again")

    def write_ref(self, name: str, cid: str, expected: str | None = None) -> None:
        """Point ref `name` at `cid` if it still points at `expected` (None: does not exist)."""
        name = _check_name(name, "ref name", "runs/<run_id>")
        if self._gathered is not None:
            self._gathered[1].append((name, expected, cid))
            return
        current = self.backend.cas_ref(name, expected, cid)
        if current is not None:
            raise StoreError(
                f"ref {name} in store {self.location} moved to {current} while this process expected "
                f"{expected}; another process is writing the same run — stop it and try again"
            )

    def delete_ref(self, name: str, expected: str) -> None:
        """Remove ref ``name`` if it still points at ``expected``."""
        current = self.backend.delete_ref(_check_name(name, "ref name", "tags/<name>"), expected)
        if current is not None:
            raise StoreError(
                f"ref {name} in store {self.location} moved to {current} while this process expected "
                f"{expected}; another process changed it — look again and retry"
            )

    def list_refs(self, prefix: str) -> dict[str, str]:
        """Ref name -> commit id, for the refs whose names start with ``prefix``
        (``tags/``); refs that hold no commit id are left out."""
        out = {}
        for name in self.backend.list_refs(prefix):
            try:
                value = self.read_ref(name)
            except StoreError:
                continue
            if value is not None:
                out[name] = value
        return out

    # ------------------------------------------------------------------ runs

    @staticmethod
    def _run_key(run_id: str) -> str:
        if not run_id or "/" in run_id or "\0" in run_id or run_id.startswith("."):
            raise StoreError(f"bad run id {run_id!r}")
        return f"runs/{run_id}.json"

    def _put_run(self, run: dict) -> None:
        """A run file: a header line with the checksum of the JSON below it (run
        files change, so unlike records they cannot be named by their hash)."""
        body = json.dumps(run, sort_keys=True, indent=1).encode()
        header = RUN_MAGIC + xxhash.xxh3_64_hexdigest(body).encode() + b"\n"
        self.backend.put(self._run_key(run["id"]), [header, body])

    def create_run(self, info: dict) -> str:
        """Record a new run; return its id (time-sortable, UTC: YYYYmmdd-HHMMSS-<6 hex>)."""
        now = time.time()
        run_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(3)
        self._put_run(dict(info, id=run_id, created=now, status="running"))
        return run_id

    def _read_run(self, key: str) -> dict:
        return self.decode_run(self.backend.get(key), key, self._where(key))

    @staticmethod
    def decode_run(data: bytes, key: str, where: str) -> dict:
        """The run metadata in the bytes of run file ``key`` (CorruptObjectError if
        they fail their checksum, do not parse or name another run)."""
        if data.startswith(RUN_MAGIC):  # since record version 2; older run files are bare JSON
            header, _, data = data.partition(b"\n")
            if header[len(RUN_MAGIC) :] != xxhash.xxh3_64_hexdigest(data).encode():
                raise CorruptObjectError(f"run metadata {where} failed its checksum", next_step="damaged")
        elif not data.lstrip().startswith(b"{"):
            raise CorruptObjectError(f"run metadata {where} has a bad header", next_step="damaged")
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptObjectError(f"run metadata {where} is not valid JSON ({exc})", next_step="damaged") from exc
        if not isinstance(value, dict):
            raise CorruptObjectError(f"run metadata {where} does not hold a JSON object", next_step="damaged")
        if not isinstance(value.get("id"), str) or f"runs/{value['id']}.json" != key:
            raise CorruptObjectError(f"run metadata {where} names another run ({value.get('id')!r})", next_step="damaged")
        return value

    def get_run(self, run_id: str) -> dict:
        try:
            return self._read_run(self._run_key(run_id))
        except Missing:
            raise StoreError(f"no run {run_id} in store {self.location}; `dart log` lists the runs") from None

    def update_run(self, run_id: str, **fields: Any) -> dict:
        """Merge `fields` into a run's metadata (atomic replace); return the new
        metadata. Only the run's lease holder updates a run that is running."""
        run = self.get_run(run_id)
        run.update(fields)
        run["id"] = run_id
        self._put_run(run)
        return run

    def run_ids(self) -> list[str]:
        """The runs that have a run file (readable or not)."""
        return [k[len("runs/") : -len(".json")] for k in self.backend.list("runs/") if k.endswith(".json")]

    def runs_without_file(self) -> list[str]:
        """Runs that have a ref but no run file (it was deleted)."""
        return sorted(set(self._run_refs()) - set(self.run_ids()))

    def list_runs(self, damage: list | None = None) -> list[dict]:
        """All runs with a readable run file, oldest first. A damaged run file is
        left out (and described in ``damage`` if given)."""
        runs = []
        for key in self.backend.list("runs/"):
            if not key.endswith(".json"):
                continue
            try:
                run = self._read_run(key)
            except Missing:
                continue
            except StoreError as exc:
                if damage is not None:
                    damage.append(exc.message)
                continue
            runs.append(run)
        runs.sort(key=lambda r: (r.get("created", 0.0), r.get("id", "")))
        return runs

    def find_runs(self, key: str) -> list[dict]:
        """Runs whose info["key"] equals `key`, oldest first."""
        return [r for r in self.list_runs() if r.get("key") == key]

    def recover_runs(self, key: str) -> list[dict]:
        """Runs of command ``key`` whose run file is missing or damaged, rebuilt
        from their commit records (each record names its run's command) and
        written again; oldest first. Reads every record: call it only when
        ``find_runs`` found nothing."""
        readable = {r["id"] for r in self.list_runs()}
        newest: dict[str, CommitRecord] = {}
        first: dict[str, float] = {}
        for cid in self.commit_ids():
            try:
                record = self.read_commit(cid)
            except (Missing, StoreError):
                continue
            if record.command.get("key") != key or record.run in readable:
                continue
            first[record.run] = min(first.get(record.run, record.time), record.time)
            if record.run not in newest or record.time > newest[record.run].time:
                newest[record.run] = record
        rebuilt = [self.rebuild_run(run_id, record, created=first[run_id]) for run_id, record in newest.items()]
        return sorted(rebuilt, key=lambda r: (r["created"], r["id"]))

    def rebuild_run(self, run_id: str, record: CommitRecord, created: float | None = None) -> dict:
        """Write the run file of ``run_id`` again from one of its commit records."""
        run = dict(record.command, id=run_id, created=record.time if created is None else created,
                   status="running", rebuilt=True)
        if self.writable:
            self._put_run(run)
        return run

    def lock_run(self, run_id: str) -> Lease:
        """Hold the lease of a run; RunBusyError if another holder has it."""
        self._run_key(run_id)  # validates the id
        try:
            lease = self.backend.lease(run_id)
        except LeaseHeld as exc:
            raise RunBusyError(
                f"run {run_id} is already running in {exc.holder}; wait for it to finish or kill it",
                holder=exc.holder,
            ) from None
        try:
            self.settle_journal(run_id)  # commits of its last holder that a crash could have lost
        except BaseException:
            lease.release()
            raise
        return lease

    # ------------------------------------------------------------------ history

    def head(self, run_id: str) -> CommitRecord | None:
        """The newest durable commit record of a run, or None if it has none."""
        cid = self.read_ref(f"runs/{run_id}")
        return None if cid is None else self.get_commit(cid)

    def _run_refs(self) -> list[str]:
        return [name[len("runs/") :] for name in self.backend.list_refs("runs/")]

    def log(self, run: str | None = None, damage: list | None = None) -> list[CommitRecord]:
        """Durable commit records, newest first: those reachable from run refs.

        With `run`, only that run's own commits (the commits of the run it branched
        from are left out). A record a crash left without a ref is not listed. What
        damage hides is worked around, and described in ``damage`` if given: a
        chain stops at a damaged record and its older commits are listed from
        their records; a run whose ref is missing or damaged is listed from its
        records (its newest intact commit is its head).
        """
        note = damage.append if damage is not None else (lambda text: None)
        seen: dict[str, tuple[int, CommitRecord]] = {}
        bad: set[str] = set()
        heads: dict[str, float] = {}  # run -> time of its head, for runs with a good ref
        cut: set[str] = set()  # runs whose chain from the head stops at a missing or damaged record

        def walk(cid: str | None, base: int = 0) -> bool:
            """Follow parents from ``cid``; True if the chain was cut by damage."""
            chain: list[CommitRecord] = []
            on_chain: set[str] = set()
            broken = False
            while cid and cid not in seen and cid not in on_chain:
                if cid in bad:
                    broken = True
                    break
                try:
                    record = self.read_commit(cid)
                except Missing:
                    broken = bool(chain)  # an ancestor gone (collected or deleted): history ends here
                    break
                except StoreError as exc:
                    bad.add(cid)
                    note(exc.message)
                    broken = True
                    break
                if run is not None and record.run != run:
                    break
                chain.append(record)
                on_chain.add(cid)
                cid = record.parent
            base = seen[cid][0] + 1 if cid in seen else base
            for depth, record in enumerate(reversed(chain), start=base):
                seen[record.id] = (depth, record)
            return broken

        for run_id in [run] if run is not None else self._run_refs():
            try:
                cid = self.read_ref(f"runs/{run_id}")
            except StoreError as exc:
                note(exc.message)
                continue
            if cid is None:
                continue
            before = len(seen)
            if walk(cid):
                cut.add(run_id)
            if cid in seen:
                heads[run_id] = seen[cid][1].time
            elif len(seen) == before and cid not in bad:
                note(f"ref runs/{run_id} names commit {cid}, which is not in store {self.location}")

        # Records no ref reached: crash leftovers (not durable, left out), or the
        # commits of runs whose ref or chain is damaged (listed).
        pieces: dict[str, list[CommitRecord]] = {}
        for cid in self.commit_ids():
            if cid in seen or cid in bad:
                continue
            try:
                record = self.read_commit(cid)
            except Missing:
                continue
            except StoreError as exc:
                note(exc.message)
                continue
            if run is not None and record.run != run:
                continue
            if record.run in heads and (record.run not in cut or record.time > heads[record.run]):
                continue  # a crash left it (its ref never moved there); the run's history is whole
            pieces.setdefault(record.run, []).append(record)
        for run_id, records in pieces.items():
            if run_id not in heads:
                note(f"run {run_id} has no usable ref; its commits are listed from their records")
            parents = {r.parent for r in records}
            for tip in sorted((r for r in records if r.id not in parents), key=lambda r: r.time):
                walk(tip.id)
        ordered = sorted(seen.values(), key=lambda item: (item[1].time, item[0]), reverse=True)
        return [record for _, record in ordered]
