"""When commits happen: the seam between "a commit is due" and "take it here".

The monitor only says that a safe point was reached while a commit was due; the
session asks its coordinator whether to commit at that point, and tells it when a
commit was taken so it can make the next one due. ``LocalTimer`` is today's
coordinator: an interval on one process. A distributed job would plug in one that
makes every rank agree on the same safe point before any of them commits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from .config import DEFAULT_BUDGET, Options


@dataclass(frozen=True)
class SafePoint:
    """Where the program is when a due commit could be taken."""

    qualname: str  #: the innermost frame's function (``<module>`` at the top level)
    path: tuple  #: AST path of the statement or loop (``dart.astpath``)
    kind: str  #: "before" a statement, or the end of a "loop" iteration
    line: int


class Coordinator(Protocol):
    def start(self, due) -> None:
        """Arm the first commit. ``due`` is the monitor (``due_now()``, ``due_at(t)``)."""

    def agree(self, point: SafePoint) -> bool:
        """A due commit can be taken at ``point``: take it here?"""

    def committed(self, stall: float) -> None:
        """A commit was taken; it stalled the program ``stall`` seconds."""

    def failed(self) -> None:
        """A commit could not be made durable (any thread): retry later."""

    def recovered(self) -> None:
        """A commit was durable again after failures (any thread)."""


#: Seconds between retries after a commit failed: doubling from the first to the last.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


class LocalTimer:
    """Commit at the first safe point ``every`` seconds after the previous commit
    (``0``: at every safe point; ``None``: only on ``dart.commit()``). The default
    interval is stretched so that capture stalls stay under DEFAULT_BUDGET of the
    run time; an interval the user chose is kept."""

    def __init__(self, options: Options) -> None:
        self.every = options.every
        self.stretch = options.every_is_default
        self._due = None
        self._backoff = 0.0  # seconds to wait before the next try, while commits fail

    def start(self, due) -> None:
        self._due = due
        if self.every == 0:
            due.due_now()
        elif self.every is not None:
            due.due_at(time.monotonic() + self.every)

    def agree(self, point: SafePoint) -> bool:
        return True

    def committed(self, stall: float) -> None:
        if self.every is None or self._due is None:
            return
        if self._backoff:
            self._due.due_at(time.monotonic() + self._backoff)  # failing: the next try after the back-off
        elif self.every != 0:
            every = max(self.every, stall / DEFAULT_BUDGET) if self.stretch else self.every
            self._due.due_at(time.monotonic() + every)

    def failed(self) -> None:
        self._backoff = min(BACKOFF_MAX, self._backoff * 2 or BACKOFF_FIRST)
        if self._due is not None and self.every is not None:
            wait = self._backoff if self.every == 0 else min(self._backoff, self.every)
            self._due.due_at(time.monotonic() + wait)

    def recovered(self) -> None:
        self._backoff = 0.0
        if self._due is not None and self.every == 0:
            self._due.due_now()
