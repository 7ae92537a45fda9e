"""tqdm progress bars as savable state, and loops over them that resume.

``for batch in tqdm(loader)`` is in most training scripts. tqdm iterates with a
generator (which cannot be saved, and hides the loader's iterator in its frame),
and a bar holds its output stream, a lock and timers (which do not pickle, or
worse, unpickle into a wrapper that recurses). While dart runs, iterating a
plain ``tqdm.tqdm`` bar gives a small iterator object instead that holds the bar
and the inner iterator (a DataLoader's is savable, see dataloader.py) and counts
each finished item into the bar, as tqdm does. A bar is saved as how to make it
again: its settings and its count, reopened on the same standard stream.
Subclasses with an ``__iter__`` of their own (tqdm.notebook, tqdm.rich) keep it.
"""

from __future__ import annotations

import sys

from .imports import AfterImport

MODULE = "tqdm.std"

#: Constructor arguments of a bar that are kept as attributes of the same name.
_SETTINGS = ("desc", "total", "leave", "ncols", "mininterval", "maxinterval", "ascii", "unit",
             "unit_scale", "dynamic_ncols", "smoothing", "bar_format", "unit_divisor", "colour", "delay")


class BarIterator:
    """``iter(bar)`` while dart runs: the items of the inner iterator, counted as
    tqdm's own loop counts them (an item is done when the loop asks for the
    next one; the bar is told at most every ``miniters`` items and
    ``mininterval`` seconds, so ``bar.n`` lags as it does without dart)."""

    __slots__ = ("bar", "inner", "n", "pending")

    def __init__(self, bar, inner, n: int | None = None, pending: bool = False):
        self.bar, self.inner, self.pending = bar, inner, pending
        self.n = bar.n if n is None else n

    def __iter__(self):
        return self

    def __next__(self):
        bar = self.bar
        if self.pending:
            self.pending = False
            self.n += 1
            if self.n - bar.last_print_n >= bar.miniters:
                now = bar._time()
                if now - bar.last_print_t >= bar.mininterval and now >= bar.start_t + bar.delay:
                    bar.update(self.n - bar.last_print_n)
        try:
            item = next(self.inner)
        except StopIteration:
            bar.n = self.n
            bar.close()
            raise
        self.pending = True
        return item

    def __reduce__(self):
        return BarIterator, (self.bar, self.inner, self.n, self.pending)


def _bar_iter(self):
    if self.disable:
        return iter(self.iterable)
    return BarIterator(self, iter(self.iterable))


def reduce_bar(bar):
    """(callable, args) that make ``bar`` again: same settings, same count."""
    settings = {name: getattr(bar, name) for name in _SETTINGS if hasattr(bar, name)}
    settings["initial"] = bar.n
    settings["disable"] = bar.disable
    postfix = getattr(bar, "postfix", None)
    if postfix:
        settings["postfix"] = postfix
    stream = getattr(getattr(bar, "fp", None), "_wrapped", None)
    stdout = stream is sys.stdout or stream is sys.__stdout__
    return _remake_bar, (type(bar), bar.iterable, settings, stdout)


def _remake_bar(cls, iterable, settings, stdout: bool):
    return cls(iterable, file=sys.stdout if stdout else None, **settings)


def bar_class():
    """tqdm's bar class if tqdm is imported, else None."""
    module = sys.modules.get(MODULE)
    return getattr(module, "tqdm", None) if module is not None else None


def _hook(module) -> None:
    cls = getattr(module, "tqdm", None)
    current = getattr(cls, "__iter__", None)
    if current is not None and not getattr(current, "_dart_hook", False):
        _bar_iter.__wrapped__ = current
        _bar_iter._dart_hook = True
        cls.__iter__ = _bar_iter


_finder = AfterImport(MODULE, _hook)


def install() -> None:
    """Bars iterated from now on give savable iterators."""
    _finder.install()


def uninstall() -> None:
    _finder.uninstall()
    cls = bar_class()
    current = getattr(cls, "__iter__", None)
    if current is not None and getattr(current, "_dart_hook", False):
        cls.__iter__ = current.__wrapped__
