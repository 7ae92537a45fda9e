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

cdef extern from "frame_stack.h":
    object dart_frame_stack(object frame)

cdef object DISABLE = sys.monitoring.DISABLE
cdef bint _due = False
cdef object _on_line = None
cdef object _on_jump = None


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
    if not _due or _on_line is None:
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
