"""Differences between the CPython versions dart supports, in one place."""

from __future__ import annotations

import ast
import dis
import sys
from types import CodeType

PY313 = sys.version_info >= (3, 13)

if sys.version_info < (3, 12):  # pragma: no cover - guarded by requires-python
    raise ImportError("dart needs Python 3.12 or newer (it is built on sys.monitoring, PEP 669)")

_JUMPS = set(dis.hasjrel) | set(getattr(dis, "hasjabs", ())) | set(getattr(dis, "hasjump", ()))
_TERMINAL = {
    "RETURN_VALUE",
    "RETURN_CONST",
    "RAISE_VARARGS",
    "RERAISE",
    "JUMP_BACKWARD",
    "JUMP_FORWARD",
    "JUMP_BACKWARD_NO_INTERRUPT",
    "JUMP",
    "JUMP_NO_INTERRUPT",
}


def for_iter_position(node: ast.For) -> tuple:
    """The source position CPython gives the FOR_ITER of a ``for`` loop:
    the whole statement on 3.12, the iterable expression on 3.13."""
    src = node.iter if PY313 else node
    return (src.lineno, src.end_lineno, src.col_offset, src.end_col_offset)


def is_jump(ins: dis.Instruction) -> bool:
    return ins.opcode in _JUMPS and isinstance(ins.argval, int)


def ends_flow(ins: dis.Instruction) -> bool:
    return ins.opname in _TERMINAL


def exception_entries(code: CodeType):
    """(start, end, target, depth, lasti) for each exception-table entry."""
    parse = getattr(dis, "_parse_exception_table", None)
    if parse is None:  # pragma: no cover
        return []
    return [(e.start, e.end, e.target, e.depth, e.lasti) for e in parse(code)]


def rebind_locals(frame, values: dict) -> None:
    """Set local variables of a running function frame (neither version can unbind one).

    3.13 (PEP 667): ``f_locals`` is a write-through proxy. 3.12: ``f_locals`` is a
    copy, written back with PyFrame_LocalsToFast (as debuggers do)."""
    if PY313:
        proxy = frame.f_locals
        for name, value in values.items():
            proxy[name] = value
        return
    import ctypes

    frame.f_locals.update(values)
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
