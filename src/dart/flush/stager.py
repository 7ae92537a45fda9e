"""The staging half of the commit writer: at a commit, find which chunks of each
buffer changed (the buffer book and its trackers, ``delta.book``) and copy them
into the bounded staging ring (``staging.py``). The program is blocked only for this.
"""

from __future__ import annotations

import pickle

from ..delta.book import BufferBook, buffer_key
from .flusher import StagedCommit
from .staging import StagingArea, StoredPack


class Stager:
    def __init__(self, staging: int = 1 << 30, *, dirty: bool | None = None) -> None:
        self.staging = StagingArea(staging)
        self.book = BufferBook(dirty=dirty)

    def stage(self, pods, meta: dict, submit_pack) -> StagedCommit:
        """The commit of ``pods`` (with ``name``, ``stream``, ``deps`` and
        ``buffers``: PickleBuffers, arrays, bytearrays): changed chunks are copied
        into packs, each handed to ``submit_pack`` as it fills."""
        numbers: dict[tuple, int] = {}
        distinct, rows = [], []  # (key, view, item size) of each buffer once
        for pod in pods:
            bufs = []
            for buffer in pod.buffers:
                view = buffer.raw() if isinstance(buffer, pickle.PickleBuffer) else memoryview(buffer).cast("B")
                key = buffer_key(view)
                if key not in numbers:  # two pods over one memory: one buffer, shared again on load
                    numbers[key] = len(distinct)
                    distinct.append((key, view, memoryview(buffer).itemsize))
                bufs.append(numbers[key])
            rows.append((pod.name, pod.stream, list(pod.deps), bufs))
        table = self.book.stage(distinct, self.staging, submit_pack)
        meta = dict(meta, staged_bytes=self.book.staged_bytes)
        return StagedCommit(pods=rows, buffers=table, meta=meta)

    def seed(self, state) -> dict:
        """Track the buffers of a commit just loaded from their loaded bytes, with
        that commit's extents; return its pods' locations (for the flusher)."""
        if getattr(state, "legacy", True):
            return {}
        packs: dict[str, StoredPack] = {}
        for number, view in state.loaded_buffers.items():
            if state.layered(number):
                continue  # its extents are the base of XOR deltas: written whole at the next commit
            nbytes, extents = state.extents(number)
            for extent in extents:
                extent[2] = packs.setdefault(extent[2], StoredPack(extent[2]))
                extent[4] = extent[4] or None
            self.book.seed(view, extents)
        return state.pod_locations()

    def close(self) -> None:
        try:
            self.book.close()
        finally:
            self.staging.close()
