"""The call path: the user frames from the main module down to a safe point.

A commit inside a function needs every frame on the way to it: each caller is
suspended in a call, and resume re-runs that call's statement with the callee
armed to continue (see ``Session._arm_function_frames``). So re-running the
statement must reach that call before calling anything else: ``f(x)``,
``y = f(x)``, ``return f(x)``, ``print(f(x))`` and ``f(g(x))`` (with a placeholder for
``g(x)``, whose value the resumed ``f`` restores) qualify, ``g() + f(x)`` does not. Library frames between two user frames are allowed only when
they are decorator wrappers that hold the user function itself (functools.wraps,
torch.no_grad, ...): re-running the call runs them again. Anything else (a
framework's own loop calling back into user code) makes the point not
continuable, and the commit waits for a safe point further out.
"""

from __future__ import annotations

import ast
import io
from dataclasses import dataclass
from types import CodeType, FrameType, GeneratorType
from typing import TYPE_CHECKING

from ..astpath import innermost_statement, position_at
from . import dataloader, pickler

if TYPE_CHECKING:  # the monitor's analysis of a code object; capture only reads it
    from ..monitor.sites import CodeSites, LoopSite


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
    # For a decorator wrapper written in user code (a closure): the qualname of
    # the function it decorates, where resume finds the wrapper object again.
    route: str | None = None
    # A caller whose call's arguments call something: the call's position in its
    # statement (call_position), so that resume re-runs it with placeholder arguments.
    blank: list | None = None
    # The call's receiver is computed by a call (``Trainer(cfg).fit()``): resume calls
    # the callee directly instead (the resumed method restores ``self``).
    receiver: bool = False

    @property
    def qualname(self) -> str:
        return self.frame.f_code.co_qualname if self.frame is not None else "<module>"

    @property
    def def_path(self):
        return self.sites.def_path if self.sites is not None else None


_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Await, ast.Yield, ast.YieldFrom)


# The name a resumed caller calls its callee by when the call's receiver was computed
# by a call (see FrameSpot.receiver); followed by the callee's frame index.
CALLEE_PREFIX = "__dart_callee_"


def _argument_values(call: ast.Call) -> list[ast.expr]:
    return [*call.args, *(k.value for k in call.keywords)]


def computed_receiver(call: ast.Call) -> ast.expr | None:
    """``Trainer(cfg)`` in ``Trainer(cfg).fit()``: the receiver of a method call when
    computing it calls something (or a resumed caller's direct call of its callee,
    which stands for one); else None."""
    func = call.func
    if isinstance(func, ast.Name) and func.id.startswith(CALLEE_PREFIX):
        return func
    if isinstance(func, ast.Attribute) and not (isinstance(func.value, ast.Call) and _is_super(func.value)):
        if any(isinstance(n, (ast.Call, *_SCOPES)) for n in ast.walk(func.value)):
            return func.value
    return None


def _calls_in(node: ast.AST) -> list[ast.Call]:
    return [sub for sub in ast.walk(node) if isinstance(sub, ast.Call)]


def call_on_path(stmt: ast.stmt | None, pos) -> ast.Call | None:
    """The call at source position ``pos`` in ``stmt`` if re-running ``stmt``
    can reach it without running anything twice: every other call in the
    statement must enclose it (those run after it returns, e.g.
    ``print(train())``), be inside its arguments (``self.head(self.body(x))``,
    ``fit([load(p) for p in paths])``: resume passes placeholders instead, see
    :func:`blanked_arguments`, since the resumed callee restores its parameters
    from the commit) or compute its receiver (``Trainer(cfg).fit()``: resume
    calls the callee directly, see :func:`computed_receiver`). Lambdas and
    comprehensions are allowed only there too."""
    if stmt is None or isinstance(stmt, (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.TryStar, ast.Match)):
        return None
    calls = _calls_in(stmt)
    target = next(
        (c for c in calls if (c.lineno, c.end_lineno, c.col_offset, c.end_col_offset) == tuple(pos)), None
    )
    if target is None:
        return None
    in_arguments: set[int] = set()
    for value in _argument_values(target):
        inner = list(ast.walk(value))
        if any(isinstance(n, ast.Call) for n in inner) and (
            isinstance(value, ast.Starred) or any(k.arg is None and k.value is value for k in target.keywords)
        ):
            return None  # ``f(*g())``: how many placeholders is not known
        in_arguments.update(id(n) for n in inner)
    receiver = computed_receiver(target)
    if receiver is not None:
        in_arguments.update(id(n) for n in ast.walk(receiver))
    if any(isinstance(n, _SCOPES) and id(n) not in in_arguments for n in ast.walk(stmt)):
        return None
    allowed = {id(c) for c in calls if any(inner is target for inner in ast.walk(c))} | in_arguments
    allowed |= {id(c) for c in calls if _is_super(c)}  # ``super().fit()``: running super() again changes nothing
    return target if all(id(c) in allowed for c in calls) else None


def _is_super(call: ast.Call) -> bool:
    """``super()`` or ``super(Cls, self)``."""
    return (
        isinstance(call.func, ast.Name) and call.func.id == "super" and not call.keywords
        and all(isinstance(a, ast.Name) for a in call.args)
    )


def blanked_arguments(call: ast.Call) -> bool:
    """Do the arguments of ``call`` call something or hold a lambda or a
    comprehension (so that resume must pass placeholders rather than evaluate
    them again)?"""
    return any(
        isinstance(n, (ast.Call, *_SCOPES)) for value in _argument_values(call) for n in ast.walk(value)
    )


def call_position(call: ast.Call, stmt: ast.stmt) -> list[int]:
    """Where ``call`` is in ``stmt``: lines counted from the statement's first
    (so that an edit above the statement does not lose it), columns as they are."""
    return [call.lineno - stmt.lineno, call.end_lineno - stmt.lineno, call.col_offset, call.end_col_offset]


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


def _wrapper_spot(frame: FrameType, sites: CodeSites, decorated: str) -> FrameSpot | None:
    """The spot of a wrapper closure suspended in a plain call, or None."""
    stmt = innermost_statement(sites.tree, frame.f_code, frame.f_lasti)
    pos = position_at(frame.f_code, frame.f_lasti)
    if call_on_path(stmt, pos) is None or "<locals>" in decorated:
        return None
    return FrameSpot(frame, sites, "before", stmt._dart_path, stmt.lineno, sites.loops_at(frame.f_lasti), route=decorated)


def call_path(frame: FrameType, innermost: FrameSpot, watched: dict[CodeType, CodeSites]) -> list[FrameSpot]:
    """The spots from the main module down to ``innermost`` (in ``frame``)."""
    spots = [innermost]
    if innermost.def_path is None:
        return spots
    if "<locals>" in frame.f_code.co_qualname:
        raise NotContinuable("functions defined inside other functions cannot be resumed yet")
    callee, caller = frame, frame.f_back
    decorated = frame.f_code.co_qualname
    user_callee = frame.f_code  # the user function a chain of library frames leads to
    while caller is not None:
        sites = watched.get(caller.f_code)
        if sites is None or "<locals>" in caller.f_code.co_qualname:
            # Library code, or a closure of the script: fine if it is a wrapper
            # holding the function it calls (a decorator), or one of several
            # frames that all hold the user function they lead to (a launcher
            # such as fire.Fire(main): re-running the call runs them again).
            if not (_wraps(caller, callee.f_code) or _wraps(caller, user_callee)):
                raise NotContinuable(
                    f"{callee.f_code.co_qualname}() is called by {caller.f_code.co_qualname}() "
                    f"({caller.f_code.co_filename}), which dart cannot continue"
                )
            wrapper = _wrapper_spot(caller, sites, decorated) if sites is not None else None
            if wrapper is not None:
                # A wrapper in user code resumes as a frame of its own, so its
                # code before the call does not run twice. A library wrapper
                # (torch.no_grad) is re-entered by re-running the call.
                spots.append(wrapper)
            callee, caller = caller, caller.f_back
            continue
        if callee.f_code.co_name in ("__init__", "__new__"):
            # `model = Fitted(data)` run again makes a new object, which the resumed
            # constructor (restoring its saved `self`) would never fill
            raise NotContinuable(
                f"{callee.f_code.co_qualname}() builds the object that the statement at line {caller.f_lineno} "
                "receives; commits inside a constructor cannot be resumed (move the loop to a method)"
            )
        stmt = innermost_statement(sites.tree, caller.f_code, caller.f_lasti)
        pos = position_at(caller.f_code, caller.f_lasti)
        target = call_on_path(stmt, pos)
        if target is None:
            raise NotContinuable(
                f"re-running the statement at line {caller.f_lineno} that calls {callee.f_code.co_qualname}() "
                "would call something else first; move that call to its own statement"
            )
        path = stmt._dart_path
        if any(spot.frame is not None and spot.frame.f_code is caller.f_code for spot in spots):
            raise NotContinuable(f"{caller.f_code.co_qualname}() is on the call path twice (recursion)")
        receiver = computed_receiver(target) is not None
        blank = call_position(target, stmt) if receiver or blanked_arguments(target) else None
        spots.append(FrameSpot(caller, sites, "before", path, stmt.lineno, sites.loops_at(caller.f_lasti),
                               blank=blank, receiver=receiver))
        user_callee = caller.f_code
        decorated = caller.f_code.co_qualname
        if sites.def_path is None:
            spots.reverse()
            return spots
        callee, caller = caller, caller.f_back
    raise NotContinuable("the main script's frame is not on the stack")


# -- how positions and loops are described and saved -------------------------------


def short_value(name: str, frame) -> str | None:
    """``epoch=3``: the loop variable's value, when it is short enough to show."""
    value = frame.f_locals.get(name, frame.f_globals.get(name)) if frame is not None else None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        text = repr(value)
        if len(text) <= 24:
            return f"{name}={text}"
    return None


def describe(position: dict) -> str:
    """``train.py:12 for@30[step=4] main() for@7[epoch=3]``: where a commit was
    taken, frame by frame (the module's loops first, then each function's)."""
    text = f"{position.get('file', '?')}:{position.get('line', '?')}"
    frames = position.get("frames") or [{"qualname": "<module>", "loops": position.get("loops", ())}]
    for index, frame in enumerate(frames):
        if index:
            text += f" {frame['qualname']}()"
        for loop in frame.get("loops", ()):
            iteration, target = loop.get("iteration"), loop.get("target")
            text += f" {loop['kind']}@{loop['line']}"
            if target:
                text += f"[{target}]"
            elif iteration is not None:
                text += f"#{iteration}"
    if position.get("kind") == "end":
        text += " (end)"
    return text


_SAVABLE: dict[type, bool] = {}


def savable(iterator, depth: int = 0) -> bool:
    """Can this iterator be pickled? Wrappers (enumerate, zip, map, ...) are
    as savable as the iterators they hold; other kinds are asked once per type."""
    if dataloader.is_loader_iterator(iterator):
        return dataloader.savable(iterator)
    kind = type(iterator)
    if kind is GeneratorType:
        return pickler.generator_savable(iterator)
    if kind is io.TextIOWrapper:  # saved as the file and its position, where it has one
        return pickler.file_savable(iterator)
    known = _SAVABLE.get(kind)
    if known is False:
        return False
    try:
        reduced = iterator.__reduce_ex__(5)
    except Exception:
        _SAVABLE[kind] = False
        return False
    args = reduced[1] if isinstance(reduced, tuple) and len(reduced) > 1 and isinstance(reduced[1], tuple) else ()
    inner = [a for a in args if hasattr(a, "__next__") and a is not iterator]
    if not inner:
        _SAVABLE[kind] = True
    return depth < 8 and all(savable(a, depth + 1) for a in inner)


def iteration_count(iterator) -> int | None:
    """How many items an iterator has produced, when its pickle state says so."""
    if dataloader.is_loader_iterator(iterator):
        return dataloader.yielded(iterator)
    try:
        reduced = iterator.__reduce__()
    except Exception:
        return None
    if isinstance(reduced, tuple) and len(reduced) >= 3 and type(reduced[2]) is int:
        return reduced[2]  # range, list and tuple iterators: the index
    if type(iterator) is enumerate and len(reduced) >= 2 and len(reduced[1]) == 2:
        return reduced[1][1]
    return None
