"""The durable half of the commit writer: makes staged commits durable while the program runs on.

Capture hands over packs of changed buffer bytes (`staging.StagedPack`, as each fills)
and then a `StagedCommit` (its pods' pickle streams and the extents of its buffers), and
gets a `CommitHandle` back at once; a daemon thread writes, in submission order, each
pack as an object, then the commit's changed pods (one object), its index, its record
and the run's ref. A pod whose bytes equal one of the previous commit is not written
again. At most `max_in_flight` commits wait at a time: `submit` blocks beyond that;
the staging area bounds the memory held by packs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import xxhash

from dart.errors import StoreError

from ..store.codec import PATCH_MAX, make_patch
from ..store.layout import FORMAT, FORMAT_PATCHED, FORMAT_XOR, build_index

#: Pod streams at least this long are written as a patch on their last version
#: when that is smaller (a large object graph that changed a little).
PATCH_MIN = 1 << 20
#: At most this many patches on one whole version: a load applies all of them.
PATCH_CHAIN = 8
#: Commits whose new pods are at most this many bytes go to the run's journal
#: (one fsync); the journal is made durable in place once it holds JOURNAL_SETTLE.
JOURNAL_MAX = 1 << 20
JOURNAL_SETTLE = 16 << 20
from ..store.record import CommitRecord
from .staging import StagedPack
from .xordelta import XorEncoder, memory_budget

log = logging.getLogger("dart")

__all__ = ["CommitHandle", "Flusher", "StagedCommit"]


@dataclass
class StagedCommit:
    """What capture produces; the program is blocked only until this exists."""

    pods: list = field(default_factory=list)  #: (name, pickle stream, deps, [buffer numbers])
    buffers: list = field(default_factory=list)  #: (nbytes, extents) per buffer, see delta.book
    meta: dict = field(default_factory=dict)  #: JSON-safe fields copied into the record


class CommitHandle:
    """The future of one submitted commit."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.id: str | None = None
        self.error: BaseException | None = None
        self.bytes_written = 0
        self.time: float | None = None  #: when its state was captured (the record's time)
        self._done = threading.Event()

    def __repr__(self) -> str:
        state = "failed" if self.error else ("durable" if self.id else "pending")
        return f"<CommitHandle #{self.seq} {state} {self.id or ''}>".replace(" >", ">")

    def done(self) -> bool:
        """True once the commit is durable or has failed."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> str:
        """Block until durable and return the commit id; re-raise the write error if it failed."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"commit #{self.seq} was not durable after {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.id is not None
        return self.id

    def _resolve(self, cid: str | None, error: BaseException | None) -> None:
        self.id, self.error = cid, error
        self._done.set()

    def __reduce__(self):
        # A handle saved in a commit comes back as the handle of a finished commit
        # (a commit not yet durable when saved may have been lost: wait() then fails).
        return _restored_handle, (self.seq, self.id)


def _restored_handle(seq: int, cid: str | None) -> CommitHandle:
    from ..errors import StoreError

    handle = CommitHandle(seq)
    error = None if cid else StoreError(f"commit #{seq} was not durable when the program's state was saved")
    handle._resolve(cid, error)
    return handle


class Flusher:
    """Writes staged commits of one run to a store on a daemon thread, in order.

    `parent` is the commit the run continues from (None for a fresh run; a commit of
    another run when resuming starts a branch). The run's ref is moved by
    compare-and-swap from the value it had when the flusher started.
    """

    def __init__(self, store: Any, run_id: str, parent: str | None, max_in_flight: int = 2,
                 on_result=None, xor_memory: int = 1 << 30) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.store = store
        self.run_id = run_id
        self.max_in_flight = max_in_flight
        #: on_result(handle), on the flusher thread, once each commit is durable or
        #: has failed (before waiters wake); without it, failures are logged here
        self.on_result = on_result
        self.ref = f"runs/{run_id}"
        self.head: str | None = store.read_ref(self.ref)  #: newest durable commit of this run
        self.bytes_written = 0
        self._parent = parent  # parent of the next record: the last good commit
        self._queue: deque = deque()  # StagedPack, or (StagedCommit, CommitHandle)
        self._pods: dict[str, tuple] = {}  # content hash -> (oid, offset, length), last commit
        self._patches: dict[str, list] = {}  # content hash -> its patches, last commit
        self._versions: dict[str, tuple] = {}  # pod name -> (stream, hash) of large pods, last commit
        self._pack_bytes = 0  # written for packs since the last commit record
        #: XOR deltas of dense buffers, and the previous versions they need (xordelta.py)
        self.xor = XorEncoder(memory_budget(xor_memory))
        self._in_flight = 0  # submitted and not yet durable or failed
        self._seq = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"dart-flusher-{run_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def submit(self, staged: StagedCommit) -> CommitHandle:
        """Queue a commit; blocks while `max_in_flight` commits are not yet durable."""
        meta = staged.meta
        if "time" not in meta:
            staged.meta = meta = dict(meta, time=time.time())
        with self._cond:
            while self._in_flight >= self.max_in_flight and not self._closed:
                self._cond.wait()
            if self._closed:
                raise StoreError(f"the flusher of run {self.run_id} is closed; no more commits can be written")
            self._seq += 1
            handle = CommitHandle(self._seq)
            self._queue.append((staged, handle))
            self._in_flight += 1
            self._cond.notify_all()
        return handle

    def submit_pack(self, pack: StagedPack) -> None:
        """Queue a filled pack (never blocks: the staging area bounds them)."""
        with self._cond:
            if self._closed:
                raise StoreError(f"the flusher of run {self.run_id} is closed; no more commits can be written")
            self._queue.append(pack)
            self._cond.notify_all()

    def seed_pods(self, locations: dict[str, tuple]) -> None:
        """Pods already in the store (of the commit a resumed run starts from):
        the same bytes are referred to, not written again."""
        with self._cond:
            if not self._pods:
                self._pods = dict(locations)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every submitted commit is durable or has failed (TimeoutError otherwise)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"{self._in_flight} commit(s) of run {self.run_id} were not durable after {timeout} s"
                    )
                self._cond.wait(remaining)

    def close(self, timeout: float | None = None, settle: bool = True) -> None:
        """Drain, then stop the thread; settle the run's journal unless told not to. Idempotent."""
        if self._thread.is_alive():
            self.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            self.xor.close()
            try:
                if settle and hasattr(self.store, "settle_journal"):
                    self.store.settle_journal(self.run_id)
            except StoreError as exc:
                log.warning("dart: the last commits of run %s are durable only in its journal: %s", self.run_id, exc)

    def __enter__(self) -> Flusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ flusher thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue[0]
            if isinstance(item, StagedPack):
                self._write_pack(item)
                with self._cond:
                    self._queue.popleft()
                    self._cond.notify_all()
                continue
            staged, handle = item
            cid, error = None, None
            try:
                cid = self._write(staged, handle)
            except Exception as exc:  # noqa: BLE001 - every failure goes to the handle
                self.xor.reset()
                error = exc if isinstance(exc, StoreError) else StoreError(
                    f"commit #{handle.seq} of run {self.run_id} could not be written to "
                    f"{getattr(self.store, 'location', self.store)}: {type(exc).__name__}: {exc}"
                )
                if error is not exc:
                    error.__cause__ = exc
                if self.on_result is None:
                    log.error("dart: commit #%d of run %s was not saved: %s", handle.seq, self.run_id, error)
            if self.on_result is not None:
                handle.id, handle.error, handle.time = cid, error, staged.meta.get("time")
                try:
                    self.on_result(handle)
                except Exception:  # noqa: BLE001 - the flusher thread must go on
                    log.exception("dart: internal error while reporting commit #%d", handle.seq)
            with self._cond:
                self._queue.popleft()
                if cid is not None:
                    self.head = self._parent = cid
                self._in_flight -= 1
                handle._resolve(cid, error)
                self._cond.notify_all()

    def _write_pack(self, pack: StagedPack) -> None:
        try:
            data = pack.data()
            starts = [extent[3] for extent in pack.extents]  # where staged (a delta moves them)

            def hash_extents():  # each piece's own hash, of its bytes, for reads of part of a pack
                for extent, start in zip(pack.extents, starts):
                    extent[4] = xxhash.xxh3_64_intdigest(data[start : start + extent[1]])

            # a large pack's bytes are written by writer threads while this thread hashes
            payload = self.xor.encode_pack(pack, data)
            oid, written = self.store.put_object(payload, while_writing=hash_extents)
            pack.oid = oid
            self._pack_bytes += written
        except Exception as exc:  # noqa: BLE001 - the commits that need it fail with it
            pack.error = exc
            self.xor.reset()
            if self.on_result is None:  # else reported with the commit that needs it
                log.error("dart: %d bytes of changed data of run %s could not be written: %s", pack.size, self.run_id, exc)
        finally:
            data = None
            pack.extents = []
            pack.release()

    def _patch(self, name: str, stream: bytes) -> tuple[bytes | None, str | None]:
        """(patch of ``stream`` on the last commit's version of pod ``name``, that
        version's hash), or (None, None) when the stream is better written whole:
        small, no earlier version, a long chain already, or a patch that is not
        much smaller (all patches of a chain are read to rebuild the pod)."""
        previous = self._versions.get(name)
        if previous is None or not PATCH_MIN <= len(stream) <= PATCH_MAX:
            return None, None
        old, digest = previous
        chain = self._patches.get(digest, [])
        if digest not in self._pods or len(chain) >= PATCH_CHAIN:
            return None, None
        patch = make_patch(old, stream)
        if sum(p[2] for p in chain) + len(patch) > len(stream) // 4:
            return None, None
        return patch, digest

    def _write(self, staged: StagedCommit, handle: CommitHandle) -> str:
        store = self.store
        written, self._pack_bytes = self._pack_bytes, 0
        # pods: unchanged ones point where they already are, changed ones go in one
        # object; a large pod that changed a little goes as a patch on its last version
        parts, where, offset = [], {}, 0  # where: content hash -> [oid, offset, length]
        patches: dict[str, list] = {}  # content hash -> [[oid, offset, length]] to apply
        digests = [xxhash.xxh3_128_hexdigest(stream) for _, stream, _, _ in staged.pods]
        for (name, stream, _, _), digest in zip(staged.pods, digests):
            if digest in where:
                continue
            known = self._pods.get(digest)
            if known is not None:
                where[digest] = list(known)
                if digest in self._patches:
                    patches[digest] = [list(p) for p in self._patches[digest]]
                continue
            patch, previous = self._patch(name, stream)
            if patch is not None:
                where[digest] = list(self._pods[previous])
                patches[digest] = [list(p) for p in self._patches.get(previous, ())] + [[None, offset, len(patch)]]
                stream = patch
            else:
                where[digest] = [None, offset, len(stream)]
            parts.append(stream)
            offset += len(stream)
        # A small commit goes to the run's journal: durable with one fsync (store/local.py).
        small = offset <= JOURNAL_MAX and hasattr(store, "journaled") and not os.environ.get("DART_TEST_NO_JOURNAL")
        with store.journaled(self.run_id) if small else contextlib.nullcontext():
            if parts:
                oid, n = store.put_object(b"".join(parts))
                written += n
                for place in [*where.values(), *(p for chain in patches.values() for p in chain)]:
                    if place[0] is None:
                        place[0] = oid
            rows = [[name, *where[d], deps, bufs, d] for (name, _, deps, bufs), d in zip(staged.pods, digests)]
            by_name = {name: patches[d] for (name, *_), d in zip(staged.pods, digests) if d in patches}
            if getattr(store, "key", None) is not None:  # signed store: a MAC of every pickle (sign.py)
                for row, (_, stream, _, _) in zip(rows, staged.pods):
                    row.append(store.mac(stream))
            buffers = []
            for nbytes, extents in staged.buffers:
                resolved = []
                for start, length, pack, off, digest in extents:
                    if pack.oid is None:
                        raise StoreError(
                            f"commit #{handle.seq} of run {self.run_id} needs bytes that could not be written "
                            f"({pack.error or 'an earlier write failed'}); the next commit writes them again"
                        ) from pack.error
                    resolved.append([start, length, pack.oid, off, digest])
                buffers.append(self.xor.row(nbytes, extents, resolved))
            index, objects, n = build_index(rows, buffers, store.put_object, by_name)
            written += n
            index_bytes = json.dumps(index, separators=(",", ":")).encode()
            index_oid, n = store.put_object(index_bytes)
            written += n
            delay = os.environ.get("DART_TEST_FLUSH_DELAY")
            if delay:
                time.sleep(float(delay))
            record = CommitRecord(
                **{k: v for k, v in staged.meta.items() if k != "id"},
                parent=self._parent,
                run=self.run_id,
                state=_state(store, index_oid, index_bytes, objects, patched=bool(by_name),
                             layered=any(len(row) > 2 for row in buffers)),
                bytes_written=written,
            )
            cid = store.put_commit(record)
            store.write_ref(self.ref, cid, expected=self.head)
        if small and store.journal_size(self.run_id) > JOURNAL_SETTLE:
            store.settle_journal(self.run_id)
        self.xor.committed()
        self._pods = {digest: tuple(place) for digest, place in where.items()}
        self._patches = patches
        self._versions = {name: (stream, d) for (name, stream, _, _), d in zip(staged.pods, digests)
                          if PATCH_MIN <= len(stream) <= PATCH_MAX}
        handle.bytes_written = written
        with self._cond:
            self.bytes_written += written
        return cid


def _state(store, index_oid: str, index_bytes: bytes, objects: list[str], patched: bool = False,
           layered: bool = False) -> dict:
    fmt = FORMAT_XOR if layered else FORMAT_PATCHED if patched else FORMAT
    state = {"format": fmt, "index": index_oid, "objects": objects}
    if getattr(store, "key", None) is not None:
        state["index_mac"] = store.mac(index_bytes)
    return state
