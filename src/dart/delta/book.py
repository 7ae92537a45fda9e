"""The buffer book: where every out-of-band buffer's bytes live in the store, and which
of them changed since the last commit.

A buffer is known by its address and size. At each commit the book asks the
buffer's tracker which chunks changed (``AdaptiveTracker``: kernel dirty pages,
hashing, or no detection for buffers rewritten every time), copies only those
chunks into staging packs, and lays the new extents over the buffer's previous
ones. An extent is ``[start, length, pack, offset in pack, xxh3-64 or None]``; the
extents of a buffer cover it exactly, so a buffer is rebuilt from the packs of
several commits. Buffers not seen at a commit are forgotten (their trackers, which
may hold the memory, are closed); a buffer seen again later is written in full.
"""

from __future__ import annotations

import numpy as np

from . import AdaptiveTracker, DeltaError

#: Chunk granularity of change detection: one row of 1024 float32 values; sparse
#: row updates cost one chunk each (docs/delta.md: 64 KiB chunks cost 16x the bytes).
CHUNK = 4096
#: Buffers of at least this many bytes staged whole may be written as an XOR delta on
#: their previous version (flush/xordelta.py decides). Item size 1 means unknown (a
#: torch storage is pickled as bytes): the flusher tries 2, 4 and 8 on a sample.
XOR_MIN = 64 * 1024
XOR_ITEMSIZES = (1, 2, 4, 8)


class XorExtent(list):
    """An extent of a buffer staged whole that the flusher may write as an XOR delta
    on the buffer's previous version: the same five fields, plus which buffer it is
    (``key``), its item size, and ``restart``: write it raw and start a new chain (the
    book did not stage it whole at the last commit, so it cannot know that the
    flusher holds its previous version; or it turned sparse and its last extents
    may be deltas). The book counts a buffer's extents as possible deltas exactly
    when ``restart`` is false, so it never lays chunks over a delta."""

    __slots__ = ("key", "itemsize", "restart", "delta")

    def __init__(self, fields, key, itemsize: int, restart: bool):
        super().__init__(fields)
        self.key, self.itemsize, self.restart = key, itemsize, restart
        self.delta = None  #: set by the flusher when written as a delta: [offset, length] in the pack object


class _Entry:
    __slots__ = ("tracker", "extents", "layered", "xor_last")

    def __init__(self, tracker):
        self.tracker = tracker
        self.extents: list[list] = []
        self.layered = False  # its last extents may be XOR deltas, not raw bytes
        self.xor_last = False  # staged as XorExtents at the last commit (the flusher keeps that version)


def buffer_key(view: memoryview) -> tuple[int, int]:
    """What a buffer is known by: (address, size)."""
    address = np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0] if len(view) else 0
    return address, len(view)


def _runs(indices, chunk: int, nbytes: int) -> list[tuple[int, int]]:
    """Sorted chunk indexes -> byte ranges [(start, stop)] of consecutive chunks."""
    if indices is None:
        return [(0, nbytes)] if nbytes else []
    if len(indices) == 0:
        return []
    idx = np.asarray(indices, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    firsts = idx[np.concatenate(([0], breaks))]
    lasts = idx[np.concatenate((breaks - 1, [len(idx) - 1]))]
    return [(int(f) * chunk, min((int(l) + 1) * chunk, nbytes)) for f, l in zip(firsts, lasts)]


def overlay(old: list[list], new: list[list]) -> list[list]:
    """Lay ``new`` extents (sorted, disjoint) over ``old`` ones (sorted, covering the
    buffer); old extents cut in two keep their pack and lose their hash."""
    out, i, old = [], 0, list(old)
    for ext in new:
        start, stop = ext[0], ext[0] + ext[1]
        while i < len(old) and old[i][0] + old[i][1] <= start:
            out.append(old[i])
            i += 1
        if i < len(old) and old[i][0] < start:
            o = old[i]
            out.append([o[0], start - o[0], o[2], o[3], None])
        out.append(ext)
        while i < len(old) and old[i][0] + old[i][1] <= stop:
            i += 1
        if i < len(old) and old[i][0] < stop:
            o = old[i]
            old[i] = [stop, o[0] + o[1] - stop, o[2], o[3] + (stop - o[0]), None]
    out.extend(old[i:])
    return out


class BufferBook:
    """Change detection and extents of the buffers of one run (program thread only)."""

    def __init__(self, chunk_size: int = CHUNK, dirty: bool | None = None):
        self.chunk_size = chunk_size
        self.dirty = dirty
        self._known: dict[tuple[int, int], _Entry] = {}
        self.staged_bytes = 0  #: bytes copied at the last commit

    def __len__(self):
        return len(self._known)

    def stage(self, buffers, area, submit_pack) -> list[tuple[int, list[list]]]:
        """Copy the changed chunks of ``buffers`` ((key, view) pairs: key from
        ``buffer_key``, view a contiguous byte memoryview; one pair per distinct
        buffer) into packs of ``area``; each pack is passed to ``submit_pack`` once
        full or at the end. Returns [(nbytes, extents)]."""
        seen, table, packs = set(), [], [None]
        self.staged_bytes = 0

        def fill(view, start, stop, new, xor=None):
            while start < stop:
                pack = packs[0]
                if pack is None or pack.free < 1:
                    if pack is not None:
                        area.seal(pack)
                        submit_pack(pack)
                    pack = packs[0] = area.open_pack()
                n = min(stop - start, pack.free)
                offset = pack.put(view[start : start + n])
                extent = [start, n, pack, offset, None] if xor is None else XorExtent([start, n, pack, offset, None], *xor)
                new.append(extent)
                pack.extents.append(extent)
                self.staged_bytes += n
                start += n

        try:
            for key, view, *item in buffers:
                itemsize = item[0] if item else 1
                seen.add(key)
                entry = self._known.get(key)
                if entry is not None and any(e[2].error is not None for e in entry.extents):
                    entry.tracker.close()  # its bytes were never written: start over
                    entry = None
                if entry is None:
                    entry = self._known[key] = _Entry(AdaptiveTracker(len(view), self.chunk_size, dirty=self.dirty))
                try:
                    indices = entry.tracker.changed(view)
                except DeltaError:
                    entry.tracker.close()
                    entry = self._known[key] = _Entry(AdaptiveTracker(len(view), self.chunk_size, dirty=False))
                    entry.tracker.changed(view)  # primed on these bytes, written whole now
                    indices = None
                if not entry.extents:
                    indices = None  # never staged: all of it
                runs = _runs(indices, self.chunk_size, len(view))
                whole = runs == [(0, len(view))]
                restart = entry.layered and not whole
                if restart:  # the last extents may be XOR deltas: nothing to lay new chunks over
                    runs, whole = [(0, len(view))], True
                xor = None
                # a delta only on the whole version of the commit before, never after a restart
                may_delta = entry.xor_last and not restart
                if whole and len(view) >= XOR_MIN and itemsize in XOR_ITEMSIZES:
                    xor = (key, itemsize, not may_delta)
                entry.layered = xor is not None and may_delta
                entry.xor_last = xor is not None
                new: list[list] = []
                for start, stop in runs:
                    fill(view, start, stop, new, xor)
                entry.extents = overlay(entry.extents, new) if entry.extents else new
                table.append((len(view), entry.extents))
        except BaseException:
            for entry in self._known.values():
                entry.tracker.close()
            self._known.clear()  # trackers moved on without a commit: forget everything
            raise
        finally:
            if packs[0] is not None:
                area.seal(packs[0])
                if packs[0].size:
                    submit_pack(packs[0])
                else:
                    packs[0].release()
        for key in [k for k in self._known if k not in seen]:
            self._known.pop(key).tracker.close()
        return table

    def seed(self, view: memoryview, extents: list[list]) -> None:
        """Know a buffer that is already stored (a commit just loaded): track it from
        its current bytes, with ``extents`` as where they are."""
        key = buffer_key(view)
        old = self._known.pop(key, None)
        if old is not None:
            old.tracker.close()
        entry = _Entry(AdaptiveTracker(len(view), self.chunk_size, dirty=self.dirty))
        try:
            entry.tracker.changed(view)  # first look: remembers the bytes as they are now
        except DeltaError:
            entry.tracker.close()
            return  # written whole at the next commit
        entry.extents = extents
        self._known[key] = entry

    def close(self):
        for entry in self._known.values():
            entry.tracker.close()
        self._known.clear()
