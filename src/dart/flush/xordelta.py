"""XOR deltas of dense numeric buffers, chosen on the flusher thread (docs/design.md, "XOR delta").

A buffer the book staged whole (``delta.book.XorExtent``: a tensor a training step
rewrote everywhere) is written as ``codec.xor_delta`` of its previous version when a
sample says that is smaller than the raw bytes. The previous version's bytes are kept
here, in memory (at most ``memory`` bytes in all; buffers past it are written raw):
reading them back from the store would mean rebuilding a chain at every commit.

A delta commit's buffer row is ``[nbytes, base extents, layers]``: the extents of the
whole version the chain starts from, and the deltas to apply to it in order, one layer
per commit, each ``[[start, length, obj, offset, delta length, xxh3-64 of the
result], ...]``. After ``CHAIN`` layers the buffer is written whole again, so a load
reads at most the base and ``CHAIN`` deltas.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xxhash
import zstandard

from ..delta.book import XorExtent
from ..store.codec import COMPRESS_RATIO, ZSTD_LEVEL, xor_delta, xor_delta_parts
from ..store.layout import XOR_CHAIN
from .staging import ALIGN

#: At most this many deltas on one whole version (a load applies all of them).
CHAIN = XOR_CHAIN
#: Bytes of an extent compressed to decide whether a delta pays.
SAMPLE = 128 * 1024
#: A delta is written when its sample is below this share of what the raw path
#: writes (the bytes as they are, or zstd where codec.encode would keep it): a delta
#: must save something, since a load applies the whole chain.
PAYS = 0.95
#: Item sizes tried when the buffer's own is unknown (1: a torch storage's bytes).
GUESSES = (4, 2, 8)
#: Share of the run's wall time the flusher may spend computing deltas (on two
#: threads: twice that in CPU time): past it, a
#: commit's buffers are written raw (deltas cost ~10 ms of CPU per MiB here; at a
#: commit every few seconds they would slow the program, at the default interval
#: they are nearly free). ``DART_XOR_BUDGET`` overrides it (0 to 1).
BUDGET = 0.02
#: Wall seconds per byte a delta is expected to take before one was measured here
#: (4 ms per MiB: two threads at ~8 ms of CPU per MiB).
RATE = 4e-3 / (1 << 20)


def time_budget() -> float:
    """Share of wall time deltas may take: ``DART_XOR_BUDGET``, else BUDGET."""
    value = os.environ.get("DART_XOR_BUDGET")
    try:
        return min(1.0, max(0.0, float(value))) if value and value.strip() else BUDGET
    except ValueError:
        return BUDGET


def memory_budget(default: int) -> int:
    """Bytes of previous versions to keep: ``DART_XOR_MEMORY`` (bytes; 0 turns XOR
    deltas off), else ``default``."""
    value = os.environ.get("DART_XOR_MEMORY")
    if value is None or not value.strip():
        return default
    try:
        return max(0, int(value))
    except ValueError:
        return default


class _Version:
    __slots__ = ("data", "base", "layers", "pending", "seen", "guess")

    def __init__(self, nbytes: int):
        self.data = np.empty(nbytes, dtype=np.uint8)  #: the bytes staged at the last commit
        self.base: list | None = None  #: resolved extents of the whole version (None: not committed yet)
        self.layers: list = []  #: resolved layers on the base, oldest first
        self.pending: tuple | None = None  #: (base, layers) of the commit being written
        self.seen = False  #: staged (fully) at the commit being written
        self.guess = 0  #: item size guessed for the chain (the buffer's own unknown), 0 before


class XorEncoder:
    """Per-run state of the flusher's XOR deltas (flusher thread only). The deltas of
    one pack's extents are computed by ``threads`` workers (numpy and zstd release the
    GIL; the program's own thread is the third user of two cores)."""

    def __init__(self, memory: int, threads: int = min(2, os.cpu_count() or 1), budget: float | None = None):
        self.memory = memory
        self.budget = time_budget() if budget is None else budget
        self._started = time.perf_counter()
        self._rate = RATE  # seconds per byte of the last pack's deltas
        self.threads = threads
        self.versions: dict[tuple, _Version] = {}  # buffer key -> its last version
        self._decided: dict[tuple, int] = {}  # this commit: key -> item size of its deltas, 0 for raw
        # buffers staged whole at the last commit and at this one: a version is kept only
        # for a buffer seen twice (a CUDA tensor's host copy is at a new address each time)
        self._last_keys: set = set()
        self._keys: set = set()
        self._pool: ThreadPoolExecutor | None = None
        self.stats = {"delta_bytes": 0, "raw_bytes": 0, "seconds": 0.0}  #: deltas written, their raw size, time

    def _held(self) -> int:
        return sum(v.data.nbytes for v in self.versions.values())

    def encode_pack(self, pack, data: memoryview):
        """The bytes to store for ``pack`` (its staged ``data``): ``data`` itself when
        no extent of it is written as a delta; else the pack rewritten, each delta in
        place of its extent's bytes (``extent.delta`` = [offset, length]), the other
        extents moved (their offset changes, their hash is of their bytes, unchanged)."""
        if self.memory <= 0 or not any(isinstance(e, XorExtent) for e in pack.extents):
            return data
        t0 = time.perf_counter()
        source = np.frombuffer(data, dtype=np.uint8)
        jobs = []  # (extent, its staged bytes, version to keep them in or None, item size or 0)
        for extent in sorted(pack.extents, key=lambda e: e[3]):
            piece = source[extent[3] : extent[3] + extent[1]]
            version, itemsize = None, 0
            if isinstance(extent, XorExtent):
                version = self._version(extent)
                if version is not None:
                    itemsize = self._decided.get(extent.key)
                    if itemsize is None:
                        itemsize = 0 if self._over_budget(extent.key[1]) else self._decide(extent, piece, version)
                        self._decided[extent.key] = itemsize
            jobs.append((extent, piece, version, itemsize))
        work = [j for j in jobs if j[2] is not None]
        if len(work) > 1 and self.threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dart-xor")
            deltas = dict(zip((id(j[0]) for j in work), self._pool.map(_delta_job, work)))
        else:
            deltas = {id(j[0]): _delta_job(j) for j in work}
        parts, moved, pos = [], [], 0
        for extent, piece, version, itemsize in jobs:
            delta = deltas.get(id(extent))
            if version is not None:
                version.seen = True
            if delta is None:
                moved.append((extent, pos))
                delta, size = [piece], len(piece)
            else:
                size = sum(len(memoryview(p).cast("B")) for p in delta)
                extent.delta = [pos, size]
                self.stats["delta_bytes"] += size
                self.stats["raw_bytes"] += len(piece)
            parts.extend(delta)
            pos += size
            pad = -pos % ALIGN
            if pad:
                parts.append(bytes(pad))
                pos += pad
        took = time.perf_counter() - t0
        self.stats["seconds"] += took
        delta_bytes = sum(len(j[1]) for j in work if j[3])
        if delta_bytes:
            self._rate = took / delta_bytes
        if len(moved) == len(jobs):  # no delta: the pack as staged
            return data
        for extent, offset in moved:
            extent[3] = offset
        return b"".join(parts)

    def _over_budget(self, nbytes: int) -> bool:
        """Would deltas of ``nbytes`` more take them past their share of the run's
        time so far? (The previous versions are still kept, so deltas start again
        once the run has earned the time.)"""
        spent = self.stats["seconds"] + self._rate * nbytes
        return spent > self.budget * (time.perf_counter() - self._started)

    def _version(self, extent: XorExtent) -> _Version | None:
        self._keys.add(extent.key)
        version = self.versions.get(extent.key)
        if version is None:
            if extent.key not in self._last_keys:
                return None
            nbytes = extent.key[1]
            if self._held() + nbytes > self.memory:
                return None
            version = self.versions[extent.key] = _Version(nbytes)
        return version

    def _decide(self, extent: XorExtent, piece: np.ndarray, version: _Version) -> int:
        """Item size of this commit's deltas of the buffer, or 0 to write it raw: raw
        after a restart, with no committed previous version, at the chain's end, or
        when a sample's delta is not below PAYS of what the raw path writes. An item
        size guessed (the buffer's own is unknown) is kept for the rest of the chain."""
        if extent.restart or version.base is None or len(version.layers) >= CHAIN:
            version.guess = 0
            return 0
        start = extent[0]
        at = max(0, (len(piece) - SAMPLE) // 2) & ~7
        sample = piece[at : at + SAMPLE]
        old = version.data[start + at : start + at + len(sample)]
        squeezed = len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(sample))
        plain = squeezed if squeezed < COMPRESS_RATIO * len(sample) else len(sample)
        sizes = (extent.itemsize,) if extent.itemsize > 1 else (version.guess,) if version.guess else GUESSES
        best, size = min((len(xor_delta(sample, old, s)), s) for s in sizes)
        version.guess = size if extent.itemsize == 1 else 0
        return size if best < PAYS * plain else 0

    def row(self, nbytes: int, extents: list, resolved: list) -> tuple:
        """The commit's row for a buffer: ``(nbytes, resolved)`` as usual, or ``(nbytes,
        base, layers)`` when its extents were written as deltas."""
        version = self.versions.get(extents[0].key) if extents and isinstance(extents[0], XorExtent) else None
        if version is None or not version.seen:
            return nbytes, resolved
        deltas = [e.delta is not None for e in extents]
        if not any(deltas):
            version.pending = (resolved, [])
            return nbytes, resolved
        if not all(deltas):  # one decision per buffer and commit: cannot happen
            raise RuntimeError("dart internal error: a buffer was written partly as XOR deltas")
        layer = [[e[0], e[1], r[2], e.delta[0], e.delta[1], r[4]] for e, r in zip(extents, resolved)]
        version.pending = (version.base, [*version.layers, layer])
        return (nbytes, *version.pending)

    def committed(self) -> None:
        """The commit is durable: its rows are what the next deltas build on; buffers
        it did not stage whole are forgotten (their memory freed)."""
        for key in list(self.versions):
            version = self.versions[key]
            if version.seen and version.pending is not None:
                version.base, version.layers = version.pending
                version.pending, version.seen = None, False
            else:
                del self.versions[key]
        self._decided.clear()
        self._last_keys, self._keys = self._keys, set()

    def reset(self) -> None:
        """A write failed: start every buffer over (written raw at its next commit)."""
        self.versions.clear()
        self._decided.clear()
        self._last_keys, self._keys = set(), set()

    def close(self) -> None:
        self.reset()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def _delta_job(job) -> list | None:
    """The delta of one extent (None: written raw), and its bytes kept as the
    buffer's last version; on a worker thread."""
    extent, piece, version, itemsize = job
    start, n = extent[0], extent[1]
    delta = xor_delta_parts(piece, version.data[start : start + n], itemsize) if itemsize else None
    version.data[start : start + n] = piece
    return delta
