"""Resume a session from a commit: find the saved position in the current
source, re-run the definitions before it, restore the state and arm the
functions on the saved call path (see ``continuation`` for the code that runs).
"""

from __future__ import annotations

import ast
import importlib
import io
import logging
import sys
import types
import warnings

from ..capture import load_roots
from ..store.layout import CommitState
from ..capture.hidden import capture_hidden, compare_environment, restore_hidden
from ..capture.path import describe
from ..errors import CaptureError, DartWarning, ResumeError, StoreError
from ..astpath import nested_code, node_at
from ..monitor.usercode import module_tree
from . import continuation as cont
from ..monitor.tracked import SavedLoop, recreator
from .anchors import relocate

log = logging.getLogger("dart")


def _reenter(saved, fresh):
    """``__dart_reenter__``: the saved object of a ``with ... as x`` on the
    path if it is an open file (reopened at its committed length), else a new
    manager from the statement's own expression."""
    try:
        value = saved()
    except Exception:
        value = None
    if isinstance(value, io.IOBase) and not value.closed:
        return value
    return fresh()


def _resolve_function(namespace: dict, qualname: str, route: str | None = None):
    """The live function object for ``qualname`` (methods and decorated
    functions included: decorators made with functools.wraps are looked
    through). A decorator's wrapper is found through ``route``, the name of the
    function it decorates."""
    import inspect

    if "<locals>" in qualname and route is None:
        raise ResumeError(
            f"cannot resume inside {qualname}(): functions defined inside other functions "
            "cannot be resumed yet. Run again with --fresh to start over."
        )
    parts = (route or qualname).split(".")
    obj = namespace.get(parts[0])
    try:
        for part in parts[1:]:
            obj = inspect.getattr_static(obj, part)
    except AttributeError:
        obj = None
    obj = getattr(obj, "__func__", obj)  # staticmethod, classmethod
    while obj is not None and getattr(getattr(obj, "__code__", None), "co_qualname", None) != qualname:
        obj = getattr(obj, "__wrapped__", None)
    if obj is None:
        raise ResumeError(
            f"cannot resume inside {qualname}(): the script no longer defines it. "
            "Run again with --fresh to start over."
        )
    return obj


def prepare(session) -> tuple[types.CodeType, ast.Module]:
    """Run the prologue, restore the saved state into the module and return
    the continuation's code (and AST) to execute."""
    commit = session.plan.resume_from
    position = commit["position"]
    filename = str(session.script)
    namespace = session.module.__dict__
    renamed = _relocate(session, position)
    commit["recreated"] = [renamed.get(k, k) for k in commit.get("recreated", [])]
    session.monitor.loops.restore(commit.get("tracked", []))
    recreated = frozenset(commit.get("recreated", []))
    session._recreated = recreated
    if commit.get("source", {}).get("hash") != session.source_hash:
        log.warning("dart: %s changed since commit %s; resuming with the edited code", session.display_name, commit["id"][:12])
    try:
        body = cont.continuation(session.tree, position, recreated)
    except ResumeError as exc:
        raise ResumeError(
            f"cannot resume run {session.plan.run_id} from commit {commit['id'][:12]} "
            f"({describe(position)}): {exc}. The script may have changed too much; "
            "run again with --fresh to start over."
        ) from None
    prologue = cont.prologue(session.tree, position)
    skipped = commit.get("skipped", {})
    needed = sorted((cont.names_read(body) & set(skipped)) - cont.names_defined(prologue))
    if needed:
        details = "; ".join(f"'{n}' ({skipped[n]})" for n in needed)
        raise ResumeError(
            f"cannot resume run {session.plan.run_id} from commit {commit['id'][:12]}: the rest of "
            f"{session.display_name} uses {details}, which could not be saved and cannot be rebuilt. "
            "Run again with --fresh to start over."
        )
    try:
        prologue_code = compile(prologue, filename, "exec")
        exec(prologue_code, namespace)
    except Exception as exc:
        raise ResumeError(
            f"re-running the imports and definitions of {session.display_name} before the resume point "
            f"failed: {type(exc).__name__}: {exc}. Fix the script or run again with --fresh."
        ) from exc
    try:
        state = CommitState(session.store, commit)
        roots = load_roots(session.store, commit, main_namespace=namespace, state=state)
        session.writer.seed(state)  # the next commit writes only what changed since this one
    except (CaptureError, StoreError) as exc:
        raise ResumeError(
            f"cannot load the state of commit {commit['id'][:12]} in {session.store.root}: {exc}. "
            "Run again with --fresh to start over."
        ) from None
    namespace.update(roots["globals"])
    _rebuild_globals(session, commit, position)
    saved_loops = {}
    roots["iterators"] = {renamed.get(k, k): v for k, v in roots["iterators"].items()}
    for key, iterator in roots["iterators"].items():
        if isinstance(iterator, SavedLoop):
            saved_loops[key] = iterator
        else:
            namespace[cont.iterator_global(key)] = iterator
    namespace[cont.ONE_NAME] = (None,)
    namespace[cont.RECREATE_NAME] = recreator(saved_loops)
    namespace[cont.REENTER_NAME] = _reenter
    session.monitor.watch(prologue_code, prologue, session.tree)  # the functions it defined
    session.monitor.watch_new_modules()  # and the user modules it imported
    _arm_function_frames(session, commit, roots.get("frames", []))
    restore_hidden(roots["hidden"])
    for problem in compare_environment(commit.get("env", {})):
        warnings.warn(f"resuming commit {commit['id'][:12]}: {problem}", DartWarning, stacklevel=2)
    log.warning("dart: resuming run %s from commit %s at %s", session.plan.run_id, commit["id"][:12], describe(position))
    return compile(body, filename, "exec"), body

def _rebuild_globals(session, commit: dict, position: dict) -> None:
    """Run again the statements that created the globals dart could not save."""
    stop = cont.module_frame(position)["path"][0][1]
    for name, path in commit.get("rebuild", {}).get("0", {}).items():
        path = tuple(map(tuple, path))
        if path[0][1] >= stop:
            continue  # the continuation runs it anyway
        stmt = node_at(session.tree, path)
        try:
            exec(compile(ast.Module(body=[stmt], type_ignores=[]), str(session.script), "exec"), session.module.__dict__)
        except Exception as exc:
            raise ResumeError(
                f"cannot rebuild variable '{name}' by running line {stmt.lineno} of {session.display_name} "
                f"again: {type(exc).__name__}: {exc}. Run again with --fresh to start over."
            ) from exc

def _relocate(session, position: dict) -> dict[str, str]:
    """Find each frame's saved path again in the current source (which may
    have been edited since the commit) and rewrite the position with the
    paths found. Returns old -> new iterator keys."""
    frames = position.get("frames") or []
    renamed: dict[str, str] = {}
    for index, frame in enumerate(frames):
        module = frame.get("module", "__main__")
        what = session.display_name if index == 0 else f"{frame['qualname']}()"
        try:
            root = _module_source(session, module, frame["qualname"])[1]
            old = tuple(map(tuple, frame["path"]))
            new = relocate(root, old, frame.get("anchors"), what)
        except ResumeError as exc:
            raise ResumeError(
                f"cannot resume from commit {session.plan.resume_from['id'][:12]}: {exc}. dart finds the "
                "functions and loops of the saved position by name and by what they loop over; "
                "run again with --fresh to start over with the edited script."
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

def _arm_function_frames(session, commit: dict, frame_locals: list[dict]) -> None:
    """Make the next call of each function on the saved path run its
    continuation (see ``cont.function_variant``), in whichever user module
    the function lives."""
    frames = commit["position"].get("frames") or []
    originals: dict[int, tuple] = {}

    def enter(index: int) -> None:
        function, code = originals.pop(index)
        function.__code__ = code

    def saved_locals(index: int) -> tuple:
        return tuple(frame_locals[index - 1].values())

    main = session.module.__dict__
    helpers = {
        cont.ENTER_NAME: enter,
        cont.LOCALS_NAME: saved_locals,
        cont.ONE_NAME: (None,),
        cont.RECREATE_NAME: main[cont.RECREATE_NAME],
        cont.REENTER_NAME: _reenter,
    }
    helpers.update({k: v for k, v in main.items() if k.startswith("__dart_iter_")})
    main.update(helpers)
    for index, frame in enumerate(frames[1:], start=1):
        name = frame.get("module", "__main__")
        namespace, tree, filename = _module_source(session, name, frame["qualname"])
        namespace.update(helpers)
        function = _resolve_function(namespace, frame["qualname"], frame.get("route"))
        freevars = function.__code__.co_freevars
        try:
            rebuild = commit.get("rebuild", {}).get(str(index), {})
            module, node = cont.function_variant(
                tree, frame, index, list(frame_locals[index - 1]), freevars, session._recreated,
                [tuple(map(tuple, p)) for p in rebuild.values()],
            )
        except ResumeError as exc:
            raise ResumeError(
                f"cannot resume inside {frame['qualname']}() (commit {commit['id'][:12]}): {exc}. "
                "Run again with --fresh to start over."
            ) from None
        compiled = compile(module, filename, "exec")
        variant = next(
            c for c in nested_code(compiled) if c.co_name == node.name and c.co_firstlineno == node.lineno
        )
        if variant.co_freevars != freevars:
            raise ResumeError(
                f"cannot resume inside {frame['qualname']}(): its closure changed. Run again with --fresh."
            )
        originals[index] = (function, function.__code__)
        function.__code__ = variant
        session.monitor.watch_function(variant, node, name, tree)

def _module_source(session, name: str, qualname: str) -> tuple[dict, ast.Module, str]:
    """(globals, annotated AST, file name) of the user module ``name``."""
    if name == "__main__":
        return session.module.__dict__, session.tree, str(session.script)
    module = sys.modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ResumeError(
                f"cannot resume inside {qualname}(): its module {name} cannot be imported ({exc}). "
                "Run again with --fresh to start over."
            ) from None
    tree = module_tree(module)
    if tree is None:
        raise ResumeError(
            f"cannot resume inside {qualname}(): the source of module {name} cannot be read. "
            "Run again with --fresh to start over."
        )
    return module.__dict__, tree, module.__file__
