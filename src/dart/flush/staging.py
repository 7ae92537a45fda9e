"""The staging area: reused memory the program copies changed bytes into at a commit.

One anonymous mapping of ``capacity`` bytes used as a ring. A commit fills packs
(contiguous regions) in it; the flusher writes each pack to the store and releases it,
oldest first. When no pack is waiting, the next one starts at offset 0 again, so a
program whose commits are written before the next one comes reuses the same pages
every time: they are faulted once, at the first commit, and never again.

When a commit has more changed bytes than fit, the pack so far is handed to the
flusher and the program waits for room (back-pressure): memory stays bounded, and
the wait is reported once with what to do about it.
"""

from __future__ import annotations

import logging
import mmap
import threading
import time

from ..store.codec import HEADER_SIZE

log = logging.getLogger("dart")

#: Where each staged run starts in a pack: keeps restored arrays aligned for SIMD.
ALIGN = 64
#: A new pack is opened only with at least this much room (or an empty ring).
MIN_PACK = 1 << 20
#: Each pack starts this many bytes past a 4 KiB page boundary: in its object's
#: file the payload follows the codec header, so payload bytes lie at the same
#: offset within a page in memory and in the file, and the store writes them
#: with direct I/O (store/local.py plan_pieces), no copy into the page cache.
PAGE = 4096
PACK_SHIFT = HEADER_SIZE % PAGE


class StagedPack:
    """One region of the staging area that becomes one object in the store."""

    __slots__ = ("seq", "offset", "capacity", "size", "oid", "error", "extents", "_area")

    def __init__(self, area: StagingArea, seq: int, offset: int, capacity: int):
        self._area = area
        self.seq, self.offset, self.capacity = seq, offset, capacity
        self.size = 0
        self.oid: str | None = None  #: set by the flusher once durable
        self.error: BaseException | None = None  #: set by the flusher if writing failed
        self.extents: list[list] = []  #: extents staged here; the flusher fills in their hashes

    @property
    def free(self) -> int:
        return self.capacity - self.size

    def put(self, source: memoryview) -> int:
        """Copy ``source`` (bytes) into the pack; returns its offset in the pack."""
        start = self.size
        self._area.view[self.offset + start : self.offset + start + len(source)] = source
        self.size = start + len(source)
        pad = -self.size % ALIGN
        self.size = min(self.capacity, self.size + pad)
        return start

    def data(self) -> memoryview:
        return self._area.view[self.offset : self.offset + self.size]

    def release(self) -> None:
        self._area._release(self)

    def __repr__(self):
        return f"<StagedPack #{self.seq} {self.size} B {self.oid or ('failed' if self.error else 'pending')}>"


class StoredPack:
    """A pack already in the store: where the extents of a commit a run resumed
    from point (see CommitWriter.seed)."""

    __slots__ = ("oid",)
    error = None

    def __init__(self, oid: str):
        self.oid = oid


class StagingArea:
    """A bounded ring of packs; one producer (the program), one consumer (the flusher)."""

    def __init__(self, capacity: int):
        if capacity < MIN_PACK:
            raise ValueError(f"the staging area needs at least {MIN_PACK} bytes, not {capacity}")
        self.capacity = capacity
        self._map = mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)
        self._cond = threading.Condition()
        self._live: list[StagedPack] = []  # allocated, oldest first
        self._end = 0  # where the next pack starts
        self._seq = 0
        self.waited = 0.0  #: seconds the program spent waiting for room
        self._warned = False

    @staticmethod
    def _fit(start: int, stop: int) -> tuple[int, int]:
        """(offset, length) of a pack in the free region [start, stop): its start
        moved up to the next offset PACK_SHIFT past a page boundary."""
        offset = start + (PACK_SHIFT - start) % PAGE
        return offset, max(0, stop - offset)

    def _room(self) -> tuple[int, int]:
        """(offset, length) of the free region the next pack takes."""
        if not self._live:
            return self._fit(0, self.capacity)
        first, end = self._live[0].offset, self._end
        if end > first:  # live packs span [first, end): free at the tail, then at the head
            tail, head = self._fit(end, self.capacity), self._fit(0, first)
            return tail if tail[1] >= MIN_PACK or tail[1] >= head[1] else head
        return self._fit(end, first)  # wrapped: free between the newest and the oldest

    def open_pack(self) -> StagedPack:
        """A new pack in the biggest free region at the ring's end, of MIN_PACK
        bytes at least: waits (back-pressure) until the flusher frees that much."""
        with self._cond:
            started = None
            while True:
                offset, length = self._room()
                if length >= MIN_PACK or not self._live:  # an empty ring: all of it
                    break
                if started is None:
                    started = time.perf_counter()
                    if not self._warned:
                        self._warned = True
                        log.warning(
                            "dart: a commit has more changed bytes than the staging area holds (%d MiB); "
                            "the program waits until earlier bytes are written to disk. Give dart more "
                            "staging memory to avoid the wait: DART_STAGING=8G (or [tool.dart] staging).",
                            self.capacity >> 20,
                        )
                self._cond.wait(0.5)
            if started is not None:
                self.waited += time.perf_counter() - started
            self._seq += 1
            pack = StagedPack(self, self._seq, offset, length)
            self._live.append(pack)
            self._end = offset + length  # until seal() gives back the unfilled part
            return pack

    def seal(self, pack: StagedPack) -> None:
        """Give back the part of ``pack`` that was not filled."""
        with self._cond:
            pack.capacity = pack.size
            self._end = pack.offset + pack.size
            self._cond.notify_all()

    def _release(self, pack: StagedPack) -> None:
        with self._cond:
            if pack in self._live:
                self._live.remove(pack)
            if not self._live:
                self._end = 0  # start over at the pages already faulted
            self._cond.notify_all()

    def close(self) -> None:
        try:
            self.view.release()
            self._map.close()
        except BufferError:
            pass  # a pack's view is still alive somewhere: the mapping goes with it
