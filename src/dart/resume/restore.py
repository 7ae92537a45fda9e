"""Resume from a commit, as a plan: find the saved position in the current
source, re-run the definitions before it, load the state, and say what the
session must do to continue (``ResumePlan``). ``plan_resume`` changes nothing
but the module namespaces it must run definitions in (classes must exist before
saved objects are loaded); the session applies the plan (``Session.apply``).
See ``continuation`` for the code that runs.
"""

from __future__ import annotations

import ast
import copy
import importlib
import io
import logging
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

from ..astpath import nested_code, node_at
from ..capture import load_roots, pickler
from ..capture.hidden import compare_environment
from ..capture.path import describe
from ..errors import CaptureError, ResumeError, StoreError
from ..monitor.tracked import SavedLoop, recreator
from ..monitor.usercode import module_tree
from ..store.layout import CommitState
from ..store.record import CommitRecord
from . import continuation as cont
from .anchors import relocate

log = logging.getLogger("dart")


@dataclass
class Arm:
    """Make the next call of ``function`` run ``variant`` (its continuation)."""

    function: types.FunctionType
    variant: types.CodeType
    node: ast.FunctionDef  # the variant's AST, for the monitor
    module: str
    tree: ast.Module


@dataclass
class ResumePlan:
    """What the session does to continue the program from ``record``."""

    record: CommitRecord
    position: dict  #: the record's position, found again in the current source
    code: types.CodeType  #: the module's continuation, to execute in the main module
    tree: ast.Module  #: its AST (for the monitor)
    prologue: tuple[types.CodeType, ast.Module]  #: already run: its functions are to be watched
    namespaces: list[tuple[dict, dict]] = field(default_factory=list)  #: (module globals, values to set)
    rebuild: list[tuple[str, types.CodeType, str]] = field(default_factory=list)  #: (name, code, line)
    arms: list[Arm] = field(default_factory=list)
    tracked: list = field(default_factory=list)  #: loops the monitor counts from the start
    state: CommitState | None = None  #: what the writer is seeded with
    hidden: dict | None = None  #: random state to put back last
    statics: dict = field(default_factory=dict)  #: attributes of classes, functions, user modules (capture/statics.py)
    problems: list[str] = field(default_factory=list)  #: environment differences to warn about
    edited: bool = False  #: the script changed since the commit


@dataclass(frozen=True)
class Program:
    """The program being resumed: what plan_resume reads."""

    module: types.ModuleType
    script: Path
    tree: ast.Module  #: annotated AST of the script
    source_hash: str
    run_id: str

    @property
    def name(self) -> str:
        return self.script.name


def _reenter(saved, fresh):
    """``__dart_reenter__``: the saved object of a ``with ... as x`` on the
    path if it is an open file (reopened at its committed length) or a manager
    whose ``__enter__`` only returns itself (an ExitStack with its callbacks, a
    progress bar: entering it again changes nothing), else a new manager from the
    statement's own expression (``torch.no_grad()`` must set its mode again)."""
    try:
        value = saved()
    except Exception:
        value = None
    if isinstance(value, io.IOBase) and not value.closed:
        return value
    if value is not None and _enter_returns_self(type(value)):
        return value
    return fresh()


def _enter_returns_self(cls: type) -> bool:
    import dis

    enter = getattr(cls, "__enter__", None)
    code = getattr(enter, "__code__", None)
    if code is None or code.co_argcount != 1:
        return False
    ops = [(i.opname, i.arg) for i in dis.get_instructions(code) if i.opname not in ("RESUME", "NOP", "CACHE")]
    return ops == [("LOAD_FAST", 0), ("RETURN_VALUE", None)]


def _resolve_function(namespace: dict, qualname: str, route: str | None = None):
    """The live function object for ``qualname`` (methods and decorated
    functions included: decorators made with functools.wraps are looked
    through). A decorator's wrapper is found through ``route``, the name of the
    function it decorates."""
    import inspect

    if "<locals>" in qualname and route is None:
        raise ResumeError(
            f"cannot resume inside {qualname}(): functions defined inside other functions "
            "cannot be resumed yet",
            next_step="fresh",
        )
    parts = (route or qualname).split(".")
    obj = namespace.get(parts[0])
    try:
        for part in parts[1:]:
            obj = inspect.getattr_static(obj, part)
    except AttributeError:
        obj = None
    obj = pickler.unwrapped(obj, qualname)
    if obj is None:
        raise ResumeError(f"cannot resume inside {qualname}(): the script no longer defines it", next_step="fresh")
    return obj


def plan_resume(program: Program, record: CommitRecord, store, progress=None) -> ResumePlan:
    """Run the prologue, load the state and return what to do (see ResumePlan).
    ``progress(bytes read, bytes to read)`` is told as big buffers are read."""
    position = copy.deepcopy(record.position)
    filename = str(program.script)
    namespace = program.module.__dict__
    short = record.short
    renamed = _relocate(program, record, position)
    recreated = frozenset(renamed.get(k, k) for k in record.recreated)
    try:
        body = cont.continuation(program.tree, position, recreated)
    except ResumeError as exc:
        raise ResumeError(
            f"cannot resume run {program.run_id} from commit {short} ({describe(position)}): "
            f"{exc.message}. The script may have changed too much",
            next_step="fresh",
        ) from None
    prologue = cont.prologue(program.tree, position)
    skipped = record.skipped
    needed = sorted((cont.names_read(body) & set(skipped)) - cont.names_defined(prologue))
    if needed:
        details = "; ".join(f"'{n}' ({skipped[n]})" for n in needed)
        raise ResumeError(
            f"cannot resume run {program.run_id} from commit {short}: the rest of {program.name} uses "
            f"{details}, which could not be saved and cannot be rebuilt",
            next_step="fresh",
            older_may_work=True,
        )
    try:
        prologue_code = compile(prologue, filename, "exec", dont_inherit=True)
        exec(prologue_code, namespace)
    except Exception as exc:
        raise ResumeError(
            f"re-running the imports and definitions of {program.name} before the resume point "
            f"failed: {type(exc).__name__}: {exc}. Fix the script or start over",
            next_step="fresh",
        ) from exc
    try:
        state = CommitState(store, record)
        state.progress = progress
        roots = load_roots(store, record, main_namespace=namespace, state=state)
    except (CaptureError, StoreError) as exc:
        raise ResumeError(
            f"cannot load the state of commit {short} in {store.location}: {exc.message}",
            next_step="fresh",
            older_may_work=True,
        ) from None
    values = dict(roots["globals"])
    saved_loops = {}
    for key, iterator in roots["iterators"].items():
        key = renamed.get(key, key)
        if isinstance(iterator, SavedLoop):
            saved_loops[key] = iterator
        else:
            values[cont.iterator_global(key)] = iterator
    values[cont.ONE_NAME] = (None,)
    values[cont.RECREATE_NAME] = recreator(saved_loops)
    values[cont.REENTER_NAME] = _reenter
    plan = ResumePlan(
        record=record,
        position=position,
        code=compile(body, filename, "exec", dont_inherit=True),
        tree=body,
        prologue=(prologue_code, prologue),
        namespaces=[(namespace, values)],
        rebuild=_rebuild_globals(program, record, position),
        tracked=record.tracked,
        state=state,
        hidden=roots["hidden"],
        statics=roots.get("statics", {}),
        problems=[f"resuming commit {short}: {p}" for p in compare_environment(record.env)],
        edited=record.source.get("hash") != program.source_hash,
    )
    _arm_function_frames(program, plan, roots.get("frames", []), recreated, values)
    return plan


def _rebuild_globals(program: Program, record: CommitRecord, position: dict) -> list:
    """The statements that created the globals dart could not save, to run again."""
    stop = cont.module_frame(position)["path"][0][1]
    out = []
    for name, path in record.rebuild.get("0", {}).items():
        path = tuple(map(tuple, path))
        if path[0][1] >= stop:
            continue  # the continuation runs it anyway
        stmt = node_at(program.tree, path)
        code = compile(ast.Module(body=[stmt], type_ignores=[]), str(program.script), "exec", dont_inherit=True)
        out.append((name, code, f"line {stmt.lineno} of {program.name}"))
    return out


def _relocate(program: Program, record: CommitRecord, position: dict) -> dict[str, str]:
    """Find each frame's saved path again in the current source (which may
    have been edited since the commit) and rewrite ``position`` with the
    paths found. Returns old -> new iterator keys."""
    frames = position.get("frames") or []
    renamed: dict[str, str] = {}
    for index, frame in enumerate(frames):
        module = frame.get("module", "__main__")
        what = program.name if index == 0 else f"{frame['qualname']}()"
        try:
            root = _module_source(program, module, frame["qualname"])[1]
            old = tuple(map(tuple, frame["path"]))
            new = relocate(root, old, frame.get("anchors"), what)
        except ResumeError as exc:
            raise ResumeError(
                f"cannot resume from commit {record.short}: {exc.message}. dart finds the "
                "functions and loops of the saved position by name and by what they loop over",
                next_step="fresh",
            ) from None
        if new == old:
            continue
        frame["path"] = [list(p) for p in new]
        if frame.get("def"):
            frame["def"] = [list(p) for p in new[: len(frame["def"])]]
        for loop in frame.get("loops", ()):
            old_loop = tuple(map(tuple, loop["path"]))
            new_loop = new[: len(old_loop)]
            loop["path"] = [list(p) for p in new_loop]
            renamed[cont.iterator_key(index, old_loop)] = cont.iterator_key(index, new_loop)
    if frames:
        innermost = frames[-1]
        position.update(path=innermost["path"], loops=[l for f in frames for l in f.get("loops", ())])
    return renamed


def _arm_function_frames(program: Program, plan: ResumePlan, frame_locals: list[dict], recreated, main_values) -> None:
    """Plan the next call of each function on the saved path to run its
    continuation (see ``cont.function_variant``), in whichever user module
    the function lives."""
    frames = plan.position.get("frames") or []
    originals: dict[int, tuple] = {}

    def enter(index: int) -> None:
        function, code = originals.pop(index)
        function.__code__ = code

    def saved_locals(index: int) -> tuple:
        # Handed over once: the resumed frame holds them now. Kept here they would
        # outlive the program (this is a global of its module) and be finalized at
        # interpreter exit, where a tqdm bar's __del__ crashed CPython 3.13.0.
        values = tuple(frame_locals[index - 1].values())
        frame_locals[index - 1] = {}
        return values

    helpers = {
        cont.ENTER_NAME: enter,
        cont.LOCALS_NAME: saved_locals,
        cont.ONE_NAME: (None,),
        cont.RECREATE_NAME: main_values[cont.RECREATE_NAME],
        cont.REENTER_NAME: _reenter,
    }
    helpers.update({k: v for k, v in main_values.items() if k.startswith("__dart_iter_")})
    main_values.update(helpers)
    for index, frame in enumerate(frames[1:], start=1):
        name = frame.get("module", "__main__")
        namespace, tree, filename = _module_source(program, name, frame["qualname"])
        if name != "__main__":
            plan.namespaces.append((namespace, helpers))
        function = _resolve_function(namespace, frame["qualname"], frame.get("route"))
        freevars = function.__code__.co_freevars
        try:
            rebuild = plan.record.rebuild.get(str(index), {})
            module, node = cont.function_variant(
                tree, frame, index, list(frame_locals[index - 1]), freevars, recreated,
                [tuple(map(tuple, p)) for p in rebuild.values()],
            )
        except ResumeError as exc:
            raise ResumeError(
                f"cannot resume inside {frame['qualname']}() (commit {plan.record.short}): {exc.message}",
                next_step="fresh",
            ) from None
        compiled = compile(module, filename, "exec", dont_inherit=True)
        variant = next(
            c for c in nested_code(compiled) if c.co_name == node.name and c.co_firstlineno == node.lineno
        )
        if variant.co_freevars != freevars:
            raise ResumeError(f"cannot resume inside {frame['qualname']}(): its closure changed", next_step="fresh")
        originals[index] = (function, function.__code__)
        plan.arms.append(Arm(function, variant, node, name, tree))
        if frames[index - 1].get("receiver"):
            called, receiver = cont.callee_names(index)
            helpers[called], helpers[receiver] = _as_called(namespace, frame.get("route") or frame["qualname"])
    main_values.update(helpers)  # the callees of computed receivers (above)


def _as_called(namespace: dict, qualname: str) -> tuple:
    """How a method call reached the function ``qualname`` (the class's attribute, so
    that decorators run), and the arguments that stand for its receiver: ``(None,)``
    for a plain method (the resumed frame restores ``self``), ``()`` for static and
    class methods and for functions reached through a module or namespace."""
    import inspect

    parts = qualname.split(".")
    owner = namespace.get(parts[0])
    for part in parts[1:-1]:
        owner = inspect.getattr_static(owner, part, None)
    if len(parts) == 1 or not isinstance(owner, type):
        return _resolve_function(namespace, qualname), ()
    attribute = inspect.getattr_static(owner, parts[-1], None)
    if isinstance(attribute, (staticmethod, classmethod)):
        return getattr(owner, parts[-1]), ()
    return attribute, (None,)


def _module_source(program: Program, name: str, qualname: str) -> tuple[dict, ast.Module, str]:
    """(globals, annotated AST, file name) of the user module ``name``."""
    if name == "__main__":
        return program.module.__dict__, program.tree, str(program.script)
    module = sys.modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ResumeError(
                f"cannot resume inside {qualname}(): its module {name} cannot be imported ({exc})",
                next_step="fresh",
            ) from None
    tree = module_tree(module)
    if tree is None:
        raise ResumeError(
            f"cannot resume inside {qualname}(): the source of module {name} cannot be read", next_step="fresh"
        )
    return module.__dict__, tree, module.__file__
