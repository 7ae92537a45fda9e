"""Loops over iterators dart cannot save (a DataLoader's iterator, a generator),
the whole feature in one place.

1. *Learn.* A loop over a call of a generator function of the user's code is
   tracked from its first start (seen in the source). Any other ``for`` loop whose
   iterator does not pickle is learnt at a commit: the session calls
   :meth:`TrackedLoops.track` for that loop and takes no commit inside it this time.
2. *Track.* From the loop's next start, a LINE event at the loop statement's first
   instruction keeps the hidden state (random generators) from before the iterable
   is evaluated (:meth:`TrackedLoops.on_loop_entry`), and a BRANCH event at its
   ``FOR_ITER`` swaps the iterator on the frame's stack for a ``CountingIterator``
   (:meth:`TrackedLoops.on_first_item`).
3. *Save.* A commit saves such a loop as a :class:`SavedLoop` (items taken, hidden
   state at its start): :func:`saved_form`.
4. *Re-create.* Resume evaluates the iterable again under that state, advances it
   past the items taken and puts the commit's state back: :func:`recreator`.
   Which loops were tracked is recorded in each commit, so a resumed run tracks
   them from its start (:meth:`TrackedLoops.restore`).
"""

from __future__ import annotations

import ast
import sys
import weakref
from dataclasses import dataclass
from types import CodeType, FrameType

from .. import _native
from ..astpath import node_at
from ..capture.hidden import capture_hidden, restore_hidden

CountingIterator = _native.monitor.CountingIterator
E = sys.monitoring.events


@dataclass(frozen=True)
class SavedLoop:
    """A loop over an iterator that cannot be saved, saved as how to get it
    back: re-evaluate the loop's iterable with the random state from when the
    loop started (``entry``) and skip the ``count`` items it had taken."""

    count: int
    entry: dict


def saved_form(iterator) -> SavedLoop | None:
    """What a commit saves for a counted loop's iterator; None if this run of
    the loop began before dart tracked it (no state from its start)."""
    if iterator.entry is None:
        return None
    return SavedLoop(iterator.count, iterator.entry)


def recreator(saved: dict):
    """``__dart_recreate__(key, thunk)``: the iterator of the SavedLoop ``key``,
    re-created under the random state from the loop's start and advanced past
    the items it had taken; the random state of the commit is then put back."""

    def recreate(key: str, thunk):
        loop = saved.pop(key)
        now = capture_hidden()
        restore_hidden(loop.entry)
        iterator = iter(thunk())
        for _ in range(loop.count):
            next(iterator)
        restore_hidden(now)
        return CountingIterator(iterator, loop.count, loop.entry)

    return recreate


_generators_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def generator_functions(tree: ast.Module) -> frozenset:
    """Names of the generator functions and methods a module defines."""
    found = _generators_of.get(tree)
    if found is None:
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(sub, (ast.Yield, ast.YieldFrom)) for sub in _own_nodes(node)
            ):
                names.add(node.name)
        found = _generators_of[tree] = frozenset(names)
    return found


def _own_nodes(function: ast.FunctionDef):
    """The nodes of a function's body, not those of functions nested in it."""
    stack = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def calls_one_of(expr: ast.expr, names: frozenset) -> bool:
    """Does ``expr`` call a function or method of one of these names?"""
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in names:
                return True
    return False


class TrackedLoops:
    """The monitor's side: which loops are tracked and the events they need.
    ``set_events(code, due=..., idle=...)`` is the monitor's way to add events."""

    def __init__(self, watched: dict, set_events) -> None:
        self.watched = watched
        self._set_events = set_events
        self.tracked: set[tuple] = set()  # (module, def path, loop path)
        self._entry_of: dict[tuple, int] = {}  # (code, FOR_ITER offset) -> entry offset
        self._entries: set[tuple] = set()  # (code, entry offset)
        self._pending: dict[tuple, dict] = {}  # (id(frame), entry offset) -> hidden state

    def restore(self, tracked) -> None:
        """Track the loops a commit recorded as tracked (a resumed run)."""
        for module, def_path, loop_path in tracked:
            key = tuple(map(tuple, def_path)) if def_path else None
            self.tracked.add((module, key, tuple(map(tuple, loop_path))))

    def recorded(self) -> list:
        """The tracked loops as a commit records them (JSON)."""
        return sorted([m, list(map(list, d)) if d else None, list(map(list, p))] for m, d, p in self.tracked)

    def track(self, sites, loop) -> None:
        """From its next start on, count the items the loop takes and keep the
        hidden state from when it started, in every watched code that has it."""
        self.tracked.add((sites.module, sites.def_path, loop.path))
        for code, other in list(self.watched.items()):
            if other.def_path == sites.def_path and other.module == sites.module:
                self.track_in(code, other)

    def track_in(self, code: CodeType, sites) -> None:
        """Arm the tracked loops of one (newly) watched code object. Loops over a
        call of a generator function of the user's code are tracked from their
        first start, so that commits happen in their first pass too."""
        self._track_generator_loops(sites)
        for path, copies in sites.loops.items():
            if (sites.module, sites.def_path, path) not in self.tracked:
                continue
            for loop in copies:
                if loop.kind != "for" or loop.entry is None or loop.iterator.stack_slot is None:
                    continue
                _native.monitor.track_loop(code, loop.entry, loop.for_iter, loop.iterator.stack_slot)
                self._entry_of[(code, loop.for_iter)] = loop.entry
                self._entries.add((code, loop.entry))
                self._set_events(code, due=E.LINE | E.JUMP, idle=E.LINE | E.BRANCH)

    def _track_generator_loops(self, sites) -> None:
        if sites.root is None:
            return
        generators = generator_functions(sites.root)
        if not generators:
            return
        for path, copies in sites.loops.items():
            if copies[0].kind != "for" or (sites.module, sites.def_path, path) in self.tracked:
                continue
            node = node_at(sites.root, path)
            if isinstance(node, ast.For) and calls_one_of(node.iter, generators):
                self.tracked.add((sites.module, sites.def_path, path))

    def is_entry(self, frame: FrameType) -> bool:
        """Is ``frame`` at the first instruction of a tracked loop (while a
        commit is due, LINE events reach Python: see Monitor._on_line)?"""
        return bool(self._entries) and (frame.f_code, frame.f_lasti) in self._entries

    def on_loop_entry(self, frame: FrameType, offset: int) -> None:
        self._pending[(id(frame), offset)] = capture_hidden()

    def on_first_item(self, frame: FrameType, for_iter: int, slot: int) -> None:
        stack = _native.monitor.frame_stack(frame)
        if slot >= len(stack):
            return
        entry = self._entry_of.get((frame.f_code, for_iter))
        state = self._pending.pop((id(frame), entry), None)
        # Without the state from the loop's start (it began before dart tracked
        # it) the wrapper still counts, but this run of the loop cannot be resumed.
        wrapper = CountingIterator(stack[slot], 1, state)
        _native.monitor.replace_stack_item(frame, slot, stack[slot], wrapper)
