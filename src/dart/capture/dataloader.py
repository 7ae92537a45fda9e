"""torch DataLoader iterators as savable state, wherever the program keeps them.

A DataLoader's iterator cannot be pickled (worker processes, queues, a sampler
generator), yet it is everywhere in training code: the iterator of ``for batch
in loader``, ``it = iter(loader)`` pulled by a step loop, an "infinite loader"
object holding one in an attribute. dart saves it as how to get it back:

* when the program creates one (``DataLoader.__iter__``, hooked while dart runs),
  dart records the random state then and, for an in-process iterator, the random
  state at its first batch (when the sampler draws its permutation);
* a commit saves (loader, those states, batches yielded);
* loading re-creates the iterator under the recorded states, so the base seed
  and the sampler's order come out the same, and advances the *sampler* past the
  batches already taken without loading them (map-style datasets: time in the
  number of indices skipped). An iterable-style dataset has no sampler to
  advance, so its skipped batches are loaded again.

What is not reproduced: random state inside worker processes (each worker is
seeded from the same base seed, but starts its stream afresh), and a sampler
whose random generator the program also uses elsewhere between batches.
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass

from .hidden import capture_hidden, restore_hidden
from .imports import AfterImport

MODULE = "torch.utils.data.dataloader"

#: The random state an iterator was created under, by iterator (weakly).
_origins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class RandomState:
    """The global random state plus the state of the loader's own generators
    (``DataLoader(generator=g)``, ``RandomSampler(generator=g)``), by role."""

    hidden: dict
    generators: dict  # role -> ByteTensor state

    @classmethod
    def of(cls, loader) -> RandomState:
        return cls(capture_hidden(), {role: g.get_state() for role, g in _generators(loader).items()})

    def apply(self, loader) -> None:
        restore_hidden(self.hidden)
        for role, g in _generators(loader).items():
            if role in self.generators:
                g.set_state(self.generators[role])


@dataclass
class Origin:
    """How an iterator came to be: its loader, the random state at its creation
    and at its first batch (None until then, or when workers drew it at creation)."""

    loader: object
    created: RandomState
    first: RandomState | None = None


def _generators(loader) -> dict:
    import torch

    found = {}
    candidates = {
        "loader": getattr(loader, "generator", None),
        "sampler": getattr(getattr(loader, "sampler", None), "generator", None),
        "batch_sampler": getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None),
    }
    seen = set()
    for role, g in candidates.items():
        if isinstance(g, torch.Generator) and id(g) not in seen:
            seen.add(id(g))
            found[role] = g
    return found


class _FirstBatchTap:
    """Wraps an in-process iterator's sampler iterator to record the random state
    right before its first index is drawn (one look, then plain delegation)."""

    __slots__ = ("inner", "origin")

    def __init__(self, inner, origin: Origin):
        self.inner = inner
        self.origin = origin

    def __iter__(self):
        return self

    def __next__(self):
        if self.origin.first is None:
            self.origin.first = RandomState.of(self.origin.loader)
        return next(self.inner)


class _SkipFirst:
    """A sampler iterator that, at its first use, skips the indices (or index
    batches) already taken, drawing them under ``first`` (the state the original
    drew its permutation under) when given."""

    __slots__ = ("inner", "sampler")

    def __init__(self, inner, sampler: _SkippingSampler):
        self.inner, self.sampler = inner, sampler

    def __iter__(self):
        return self

    def __next__(self):
        sampler = self.sampler
        if sampler is not None:
            self.sampler = None
            sampler.started = True
            first, loader = sampler.first, sampler.loader
            now = RandomState.of(loader) if first is not None else None
            if first is not None:
                first.apply(loader)
            try:
                for _ in range(sampler.skip):
                    next(self.inner)
            finally:
                if now is not None:
                    now.apply(loader)
        return next(self.inner)


class _SkippingSampler:
    """Stands in for the loader's index sampler while an iterator is re-created.
    Its iterators skip the indices taken before the commit, until one of them is
    used (torch makes one in ``__init__`` and another in ``_reset``); after that
    (a persistent iterator's next epochs) they are the sampler's own."""

    def __init__(self, inner, skip: int, first: RandomState | None, loader):
        self.inner, self.skip, self.first, self.loader = inner, skip, first, loader
        self.started = False

    def __iter__(self):
        if self.started:
            return iter(self.inner)
        return _SkipFirst(iter(self.inner), self)

    def __len__(self):
        return len(self.inner)


def _hooked_iter(original):
    def __iter__(self):
        created = RandomState.of(self)
        iterator = original(self)
        origin = Origin(self, created)
        try:
            _origins[iterator] = origin
        except TypeError:
            return iterator
        if getattr(iterator, "_num_workers", 0) == 0 and hasattr(iterator, "_sampler_iter"):
            iterator._sampler_iter = _FirstBatchTap(iterator._sampler_iter, origin)
        else:
            origin.first = None  # workers drew the first indices at creation, under ``created``
        return iterator

    __iter__.__wrapped__ = original
    __iter__._dart_hook = True
    return __iter__


def _hook(module) -> None:
    loader_class = getattr(module, "DataLoader", None)
    current = getattr(loader_class, "__iter__", None)
    if current is not None and not getattr(current, "_dart_hook", False):
        loader_class.__iter__ = _hooked_iter(current)


_finder = AfterImport(MODULE, _hook)


def install() -> None:
    """Record the origin of every DataLoader iterator created from now on."""
    _finder.install()


def uninstall() -> None:
    _finder.uninstall()
    module = sys.modules.get(MODULE)
    loader_class = getattr(module, "DataLoader", None)
    current = getattr(loader_class, "__iter__", None)
    if current is not None and getattr(current, "_dart_hook", False):
        loader_class.__iter__ = current.__wrapped__


# -- pickling ----------------------------------------------------------------------


def is_loader_iterator(obj) -> bool:
    module = sys.modules.get(MODULE)
    base = getattr(module, "_BaseDataLoaderIter", None)
    return base is not None and isinstance(obj, base)


def savable(iterator) -> bool:
    """Can this DataLoader iterator be saved (its origin was recorded)?"""
    return iterator in _origins


def yielded(iterator) -> int:
    return int(getattr(iterator, "_num_yielded", 0))


def reduce_iterator(iterator):
    """The reduce tuple of a DataLoader iterator, or NotImplemented when dart did
    not see it created (pickle then says it cannot be saved)."""
    origin = _origins.get(iterator)
    if origin is None:
        return NotImplemented
    return recreate_iterator, (origin.loader, origin.created, origin.first, yielded(iterator))


def reduce_loader(loader):
    """A DataLoader without the iterator it keeps for ``persistent_workers``
    (processes; a re-created iterator takes that place again)."""
    reduced = loader.__reduce_ex__(5)
    state = reduced[2] if len(reduced) > 2 else None
    if not isinstance(state, dict) or "_iterator" not in state:
        return NotImplemented
    state = dict(state, _iterator=None)
    return (reduced[0], reduced[1], state, *reduced[3:])


def recreate_iterator(loader, created: RandomState, first: RandomState | None, taken: int):
    """The iterator of ``loader`` as it was after ``taken`` batches: created under
    the same random state and advanced at the sampler (see the module docstring).
    The random state of the caller is left as it was."""
    module = sys.modules[MODULE]
    now = RandomState.of(loader)
    iterable = loader._dataset_kind == module._DatasetKind.Iterable
    try:
        created.apply(loader)
        if iterable or taken == 0:
            iterator = loader._get_iterator()
        else:
            # A stand-in loader whose index sampler skips what was taken, so that a
            # multi-process iterator prefetches from the right place at once.
            stand_in = object.__new__(type(loader))
            stand_in.__dict__.update(loader.__dict__)
            field = "batch_sampler" if loader._auto_collation else "sampler"
            stand_in.__dict__[field] = _SkippingSampler(getattr(loader, field), taken, first, loader)
            iterator = type(loader)._get_iterator(stand_in)
        origin = Origin(loader, created, first)
        if first is None and getattr(iterator, "_num_workers", 0) == 0:
            iterator._sampler_iter = _FirstBatchTap(iterator._sampler_iter, origin)
        if iterable:
            for _ in range(taken):  # no sampler to advance: the batches are loaded again
                next(iterator)
        iterator._num_yielded = taken
        _origins[iterator] = origin
    finally:
        now.apply(loader)
    if getattr(loader, "persistent_workers", False) and getattr(loader, "num_workers", 0) > 0:
        loader.__dict__["_iterator"] = iterator
    return iterator
