# cython: language_level=3, boundscheck=False, wraparound=False
"""The native half of dart's monitor.

These are the callables registered with ``sys.monitoring``. Between commits they
answer one question in C, "is a commit due?", and return ``DISABLE`` so that each
code location costs one C call per commit interval and nothing after. Only when a
commit is due do they call into Python (``dart.monitor``), which decides whether
the location is a safe point. Policy stays in Python; this file stays small.
"""
import sys

from cpython.ref cimport PyObject

cdef extern from "Python.h":
    PyObject *PyEval_GetFrame()
    int PyFrame_GetLasti(object frame)

cdef extern from "frame_stack.h":
    object dart_frame_stack(object frame)
    int dart_frame_stack_replace(object frame, int slot, object old, object new) except -1

cdef object DISABLE = sys.monitoring.DISABLE
cdef bint _due = False
cdef object _on_line = None
cdef object _on_jump = None
cdef object _on_loop_entry = None
cdef object _on_first_item = None
# Loops over iterators that cannot be pickled are tracked: code -> {offset of
# the loop statement's first instruction}, and code -> {FOR_ITER offset: slot}.
cdef dict _entries = {}
cdef dict _for_iters = {}


cdef class CountingIterator:
    """Counts the items a loop has taken from an iterator dart cannot save,
    so that resume can re-create the iterator and advance it as far. ``entry``
    is the hidden state (random generators) from when the loop started."""

    cdef public object inner
    cdef public Py_ssize_t count
    cdef public object entry

    def __init__(self, inner, Py_ssize_t count=0, entry=None):
        self.inner = inner
        self.count = count
        self.entry = entry

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.inner)
        self.count += 1
        return item

    def __reduce__(self):
        raise TypeError("dart saves a counted loop as its count, not as an iterator")


def track_loop(code, int entry_offset, int for_iter_offset, int slot):
    """Start tracking a loop (see CountingIterator)."""
    _entries.setdefault(code, set()).add(entry_offset)
    _for_iters.setdefault(code, {})[for_iter_offset] = slot


def set_loop_handlers(on_loop_entry, on_first_item):
    """``on_loop_entry(frame, offset)`` when a tracked loop starts and
    ``on_first_item(frame, for_iter_offset, slot)`` when it takes its first item."""
    global _on_loop_entry, _on_first_item
    _on_loop_entry = on_loop_entry
    _on_first_item = on_first_item


def replace_stack_item(frame, int slot, old, new):
    return dart_frame_stack_replace(frame, slot, old, new) == 1


def branch_event(code, int src, int dst):
    cdef dict slots = _for_iters.get(code)
    if slots is None:
        return DISABLE
    slot = slots.get(src)
    if slot is None or _on_first_item is None:
        return DISABLE
    frame = <object>PyEval_GetFrame()
    stack = dart_frame_stack(frame)
    if <int>slot < len(stack) and type(stack[slot]) is not CountingIterator:
        _on_first_item(frame, src, slot)
    return None


def set_handlers(on_line, on_jump):
    """Install the Python handlers called when a commit is due:
    ``on_line(frame, line)`` and ``on_jump(frame, src, dst)`` for backward jumps.
    Each returns ``DISABLE`` or ``None`` as a sys.monitoring callback does."""
    global _on_line, _on_jump
    _on_line = on_line
    _on_jump = on_jump


def set_due(bint due):
    """Mark a commit as due (or not). Reading it is the whole hot path."""
    global _due
    _due = due


def is_due():
    return _due


def line_event(code, int line):
    cdef set entries
    if not _due or _on_line is None:
        entries = _entries.get(code)
        if entries is not None and _on_loop_entry is not None:
            frame = <object>PyEval_GetFrame()
            offset = PyFrame_GetLasti(frame)
            if offset in entries:
                _on_loop_entry(frame, offset)
                return None
        return DISABLE
    return _on_line(<object>PyEval_GetFrame(), line)


def jump_event(code, int src, int dst):
    # Forward jumps never end a loop iteration: disable them for good.
    if dst > src or not _due or _on_jump is None:
        return DISABLE
    return _on_jump(<object>PyEval_GetFrame(), src, dst)


def frame_stack(frame):
    """The value stack of a frame suspended in a call or a monitoring callback,
    bottom first, as a tuple (empty when CPython has not saved it)."""
    return dart_frame_stack(frame)
