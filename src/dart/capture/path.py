"""The call path: the user frames from the main module down to a safe point.

A commit inside a function needs every frame on the way to it: each caller is
suspended in a call, and resume re-runs that call statement with the callee
armed to continue (``dart.resume.frames``). So each caller must sit in a plain
call statement (``f(...)``, ``x = f(...)``, ``return f(...)``) whose other parts
call nothing else. Library frames between two user frames are allowed only when
they are decorator wrappers that hold the user function itself (functools.wraps,
torch.no_grad, ...): re-running the call runs them again. Anything else (a
framework's own loop calling back into user code) makes the point not
continuable, and the commit waits for a safe point further out.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from types import CodeType, FrameType

from ..monitor.sites import CodeSites, LoopSite, innermost_statement


class NotContinuable(Exception):
    """This safe point's call path cannot be continued; the message says why."""


@dataclass(frozen=True)
class FrameSpot:
    """Where one frame on the path is: before the statement at ``path``
    ("before", a caller re-runs its call) or at the end of an iteration of the
    loop at ``path`` ("loop", the innermost frame only)."""

    frame: FrameType | None
    sites: CodeSites | None
    kind: str
    path: tuple
    line: int
    loops: tuple[LoopSite, ...]

    @property
    def qualname(self) -> str:
        return self.frame.f_code.co_qualname if self.frame is not None else "<module>"

    @property
    def def_path(self):
        return self.sites.def_path if self.sites is not None else None


_CALL_STATEMENTS = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)


def call_statement(stmt: ast.stmt | None) -> ast.Call | None:
    """The call of a plain call statement, or None."""
    value = getattr(stmt, "value", None) if isinstance(stmt, _CALL_STATEMENTS) else None
    if not isinstance(value, ast.Call):
        return None
    if any(isinstance(node, ast.Call) for node in ast.walk(value) if node is not value):
        return None
    return value


def _wraps(frame: FrameType, callee: CodeType) -> bool:
    """Does library ``frame`` hold the function it called in a variable (a
    decorator wrapper), rather than reach it through an object (a framework)?"""
    for value in frame.f_locals.values():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        # The same code, or its resume variant (same name and file) right after a resume.
        if code is callee or (
            isinstance(code, CodeType) and code.co_qualname == callee.co_qualname and code.co_filename == callee.co_filename
        ):
            return True
    return False


def call_path(frame: FrameType, innermost: FrameSpot, watched: dict[CodeType, CodeSites]) -> list[FrameSpot]:
    """The spots from the main module down to ``innermost`` (in ``frame``)."""
    spots = [innermost]
    if innermost.def_path is None:
        return spots
    if "<locals>" in frame.f_code.co_qualname:
        raise NotContinuable("functions defined inside other functions cannot be resumed yet")
    callee, caller = frame, frame.f_back
    while caller is not None:
        sites = watched.get(caller.f_code)
        if sites is None or "<locals>" in caller.f_code.co_qualname:
            # Library code, or a closure of the script (it cannot be resumed
            # itself): fine if it is a wrapper that re-running the call re-enters.
            if not _wraps(caller, callee.f_code):
                raise NotContinuable(
                    f"{callee.f_code.co_qualname}() is called by {caller.f_code.co_qualname}() "
                    f"({caller.f_code.co_filename}), which dart cannot continue"
                )
            callee, caller = caller, caller.f_back
            continue
        stmt = innermost_statement(sites.tree, caller.f_code, caller.f_lasti)
        if call_statement(stmt) is None:
            raise NotContinuable(
                f"the call to {frame.f_code.co_qualname}() at line {caller.f_lineno} is not a plain call "
                "statement (x = f(...), f(...) or return f(...) with no other call in it)"
            )
        path = stmt._dart_path
        spots.append(FrameSpot(caller, sites, "before", path, stmt.lineno, sites.statement_loops.get(path, ())))
        if sites.def_path is None:
            spots.reverse()
            return spots
        callee, caller = caller, caller.f_back
    raise NotContinuable("the main script's frame is not on the stack")
