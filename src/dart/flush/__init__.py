"""Making commits: the stager copies what changed out of the program's memory
(the program waits for that only), the flusher makes it durable in the
background. ``CommitWriter`` is the two together, as a run uses them.

    pods + meta --Stager.stage--> StagedCommit (+ packs of changed bytes) --Flusher--> store
"""

from __future__ import annotations

from typing import Any

from .flusher import CommitHandle, Flusher, StagedCommit, _restored_handle  # noqa: F401  (named by commits of dart 0.1)
from .stager import Stager

__all__ = ["CommitHandle", "CommitWriter", "Flusher", "StagedCommit", "Stager"]


class CommitWriter:
    """What a run writes commits with: a :class:`Stager` (buffer book + staging
    area) and a :class:`Flusher` (the store as its sink).

    ``commit(pods, meta)`` blocks only while changed chunks are copied, and
    returns the commit's handle."""

    def __init__(self, store: Any, run_id: str, parent: str | None, *, staging: int = 1 << 30,
                 max_in_flight: int = 2, dirty: bool | None = None, on_result=None) -> None:
        # previous versions kept for XOR deltas: at most as much memory as staging
        self.flusher = Flusher(store, run_id, parent, max_in_flight=max_in_flight, on_result=on_result,
                               xor_memory=staging)
        self.stager = Stager(staging, dirty=dirty)

    @property
    def book(self):
        return self.stager.book

    @property
    def staging(self):
        return self.stager.staging

    def commit(self, pods, meta: dict) -> CommitHandle:
        return self.flusher.submit(self.stager.stage(pods, meta, self.flusher.submit_pack))

    def seed(self, state) -> None:
        """Start from a commit just loaded (``store.layout.CommitState``): its buffers
        are tracked from their loaded bytes and its pods are known, so the run's next
        commit writes only what changed since."""
        locations = self.stager.seed(state)
        if locations:
            self.flusher.seed_pods(locations)

    def close(self, timeout: float | None = None, settle: bool = True) -> None:
        """Drain and stop; ``settle``: make journaled commits durable in place now
        (a caller with more to record first may do it itself, Store.settle_journal)."""
        try:
            self.flusher.close(timeout, settle=settle)
        finally:
            self.stager.close()

    def __enter__(self) -> CommitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
