"""XOR deltas of dense numeric buffers, chosen on the flusher thread (docs/delta.md, "XOR deltas").

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

import numpy as np
import xxhash
import zstandard

from ..delta.book import XorExtent
from ..store.codec import ZSTD_LEVEL, xor_delta
from ..store.layout import XOR_CHAIN
from .staging import ALIGN

#: At most this many deltas on one whole version (a load applies all of them).
CHAIN = XOR_CHAIN
#: Bytes of an extent compressed to decide whether a delta pays.
SAMPLE = 256 * 1024
#: A delta is written when its sample is below this share of what the raw path writes.
PAYS = 0.9
#: Item sizes tried when the buffer's own is unknown (1: a torch storage's bytes).
GUESSES = (4, 2, 8)


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
    __slots__ = ("data", "base", "layers", "pending", "seen")

    def __init__(self, nbytes: int):
        self.data = np.empty(nbytes, dtype=np.uint8)  #: the bytes staged at the last commit
        self.base: list | None = None  #: resolved extents of the whole version (None: not committed yet)
        self.layers: list = []  #: resolved layers on the base, oldest first
        self.pending: tuple | None = None  #: (base, layers) of the commit being written
        self.seen = False  #: staged (fully) at the commit being written


class XorEncoder:
    """Per-run state of the flusher's XOR deltas (flusher thread only)."""

    def __init__(self, memory: int):
        self.memory = memory
        self.versions: dict[tuple, _Version] = {}  # buffer key -> its last version
        self._decided: dict[tuple, int] = {}  # this commit: key -> item size of its deltas, 0 for raw
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
        parts, moved, pos, any_delta = [], [], 0, False
        for extent in sorted(pack.extents, key=lambda e: e[3]):
            start, n, _, offset, _ = extent
            piece = source[offset : offset + n]
            out = piece
            if isinstance(extent, XorExtent):
                version = self._version(extent)
                if version is not None:
                    itemsize = self._decided.get(extent.key)
                    if itemsize is None:
                        itemsize = self._decided[extent.key] = self._decide(extent, piece, version)
                    if itemsize:
                        out = xor_delta(piece, version.data[start : start + n], itemsize)
                        extent.delta = [pos, len(out)]
                        any_delta = True
                        self.stats["delta_bytes"] += len(out)
                        self.stats["raw_bytes"] += n
                    version.data[start : start + n] = piece
                    version.seen = True
            if not isinstance(extent, XorExtent) or extent.delta is None:
                moved.append((extent, pos))
            parts.append(out)
            pos += len(out)
            pad = -pos % ALIGN
            if pad:
                parts.append(bytes(pad))
                pos += pad
        self.stats["seconds"] += time.perf_counter() - t0
        if not any_delta:
            return data
        for extent, offset in moved:
            extent[3] = offset
        return b"".join(parts)

    def _version(self, extent: XorExtent) -> _Version | None:
        version = self.versions.get(extent.key)
        if version is None:
            nbytes = extent.key[1]
            if self._held() + nbytes > self.memory:
                return None
            version = self.versions[extent.key] = _Version(nbytes)
        return version

    def _decide(self, extent: XorExtent, piece: np.ndarray, version: _Version) -> int:
        """Item size of this commit's deltas of the buffer, or 0 to write it raw: raw
        after a restart, with no committed previous version, at the chain's end, or
        when a sample's delta is not below PAYS of the raw path's (zstd if it pays)."""
        if extent.restart or version.base is None or len(version.layers) >= CHAIN:
            return 0
        start = extent[0]
        at = max(0, (len(piece) - SAMPLE) // 2) & ~7
        sample, old = piece[at : at + SAMPLE], version.data[start + at : start + at + len(piece[at : at + SAMPLE])]
        plain = min(len(sample), len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(sample)))
        sizes = (extent.itemsize,) if extent.itemsize > 1 else GUESSES
        best, size = min((len(xor_delta(sample, old, s)), s) for s in sizes)
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

    def reset(self) -> None:
        """A write failed: start every buffer over (written raw at its next commit)."""
        self.versions.clear()
        self._decided.clear()
