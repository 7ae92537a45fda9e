"""Generator objects of the user's code, saved as their frame and re-created as
a continuation of their function.

CPython cannot pickle a generator, yet training scripts keep one in a variable
all the time (``stream = batches(data)`` then ``next(stream)`` each step, an
endless ``while True: yield from loader``). A suspended generator is saved as
what its frame holds: its locals, the ``yield`` it waits at (found by the
source position of the instruction it stopped at), the iterators of the loops
around that ``yield`` (read from the frame's value stack, as the monitor reads
a caller's) and, inside ``yield from``, the iterator it delegates to. Nothing
is run again: a generator that drew random numbers or read files does not do
it twice.

Loading builds the rest of the function from that ``yield`` with the same
builder that continues a function on the call path (``continuation._Builder``):
a new generator function whose first lines put the locals and iterators back,
run up to that ``yield`` (which yields nothing this once) so that it waits
there as the saved one did (``send()`` reaches it). It is compiled from the
*current* source of the function's module, with its line numbers, in that
module's globals. A generator not started yet is saved as its arguments, a
finished one as a finished generator.

Generators of libraries written in Python are saved the same way when one of
their function's generators pickles (found out once per function).

Limits (the pickler says which generator and why): the ``yield`` must be a
statement, ``x = yield ...`` or ``yield from ...`` (not inside a larger
expression, nor in a ``match`` case); generator expressions are not saved; a
nested generator function gets its free variables' values in new cells (one
that assigns them, ``nonlocal``, is refused); ``super()`` without arguments is
not available in a re-created generator method.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import io
import os
import pickle
import sys
import types
import weakref

from ..astpath import Path, annotate_paths, node_at, source_span
from ..capture import pickler as _pickler, textfiles
from ..monitor import Monitor
from ..monitor.sites import analyze
from . import continuation as cont

SAVED = "__dart_saved__"  # the one parameter of a re-created generator: its locals, iterators, ...
YIELD_FROM = "__dart_yield_from__"  # the iterator a re-created ``yield from`` goes on delegating to
_DART_NAMES = ("__dart_",)  # locals of a continuation that are dart's, not the program's


class _Origin:
    """Where a generator's code comes from: its module, the path of its ``def``
    in the module's source, and the function AST the code was compiled from
    (the original ``def``, or the continuation dart built)."""

    __slots__ = ("module", "def_path", "node", "sites", "waits")

    def __init__(self, module: str, def_path: Path, node: ast.FunctionDef):
        self.module, self.def_path, self.node, self.sites = module, def_path, node, None
        self.waits: dict[int, tuple | str] = {}  # f_lasti -> _waiting_at's answer, or why it refuses


#: id of a generator's code -> (that code, its origin; None: not found in its
#: source). By id: equal code objects of two files compare equal.
_origins: dict[int, tuple[types.CodeType, _Origin | None]] = {}
_trees: dict[tuple, ast.Module] = {}
#: re-created generators not run yet (not started, or delegating with ``yield
#: from``) -> the spec they were made from: their frame holds only that
_made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _module_tree(path: str) -> ast.Module:
    """The module's source, parsed and annotated; read again when the file changed."""
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    tree = _trees.get(key)
    if tree is None:
        with open(path, encoding="utf-8") as f:
            tree = annotate_paths(ast.parse(f.read(), path))
        _trees[key] = tree
    return tree


def _module(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    return module if module is not None else importlib.import_module(name)


def _defs(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            yield node


def _origin(gen: types.GeneratorType) -> _Origin | None:
    code = gen.gi_code
    known = _origins.get(id(code))
    if known is not None and known[0] is code:
        return known[1]
    module = gen.gi_frame.f_globals.get("__name__") if gen.gi_frame is not None else None
    path = gen.gi_frame.f_globals.get("__file__") if gen.gi_frame is not None else None
    origin = None
    if isinstance(module, str) and isinstance(path, str):
        try:
            tree = _module_tree(path)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            tree = None
        if tree is not None:
            for node in _defs(tree):
                if node.name == code.co_name and source_span(node)[0] == code.co_firstlineno:
                    origin = _Origin(module, node._dart_path, node)
                    break
    _origins[id(code)] = (code, origin)
    return origin


def _own_nodes(node: ast.AST):
    """The nodes of a function's body, not those of functions, lambdas and
    classes defined in it."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        sub = todo.pop()
        yield sub
        if not isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(sub))


def _parents(node: ast.AST) -> dict:
    return {id(child): parent for parent in _own_nodes(node) for child in ast.iter_child_nodes(parent)} | {
        id(child): node for child in ast.iter_child_nodes(node)
    }


def _refuse(gen, why: str) -> pickle.PicklingError:
    code = gen.gi_code
    return pickle.PicklingError(
        f"the generator {gen.__qualname__}() ({os.path.basename(code.co_filename)}:{code.co_firstlineno}) "
        f"cannot be saved: {why}"
    )


def _waiting_at(gen, origin: _Origin) -> tuple[ast.stmt, str]:
    """The statement holding the ``yield`` the generator is suspended at, and
    its form: "yield" (a statement, or ``x = yield ...``) or "yield_from".
    Found once per yield of the code (a commit may save the generator each time)."""
    lasti = gen.gi_frame.f_lasti
    known = origin.waits.get(lasti)
    if known is None:
        try:
            known = _find_yield(gen, origin)
        except pickle.PicklingError as exc:
            known = str(exc)
        origin.waits[lasti] = known
    if isinstance(known, str):
        raise pickle.PicklingError(known)
    return known


def _find_yield(gen, origin: _Origin) -> tuple[ast.stmt, str]:
    frame = gen.gi_frame
    positions = list(gen.gi_code.co_positions())
    here = positions[frame.f_lasti // 2] if 0 <= frame.f_lasti // 2 < len(positions) else None
    for node in _own_nodes(origin.node):
        if isinstance(node, (ast.Yield, ast.YieldFrom)) and here == (
            node.lineno, node.end_lineno, node.col_offset, node.end_col_offset
        ):
            break
    else:
        raise _refuse(gen, f"dart does not find the yield it waits at (line {frame.f_lineno}) in its source")
    stmt = _parents(origin.node).get(id(node))
    shapes = (ast.Expr, ast.Assign, ast.AnnAssign)
    if isinstance(stmt, shapes) and stmt.value is node and not hasattr(stmt, "_dart_path"):
        raise _refuse(gen, f"it waits at a yield inside a `match` statement (line {node.lineno}), "
                           "where dart cannot continue a function")
    if not isinstance(stmt, shapes) or stmt.value is not node:
        raise _refuse(
            gen,
            f"it waits at a yield inside an expression at line {node.lineno}; make that yield a statement of "
            "its own (`yield v`, `x = yield v` or `yield from it`)",
        )
    if isinstance(node, ast.YieldFrom) and not isinstance(stmt, ast.Expr):
        raise _refuse(gen, f"it waits at `x = yield from ...` (line {node.lineno}); make it a statement of its own")
    return stmt, "yield_from" if isinstance(node, ast.YieldFrom) else "yield"


def _loop_iterators(gen, origin: _Origin, names: dict) -> dict:
    """The iterators of the ``for`` loops around the yield, by loop key."""
    if origin.sites is None:
        origin.sites = analyze(gen.gi_code, origin.node, origin.module, None)
    frame = gen.gi_frame
    loops = [site for site in origin.sites.loops_at(frame.f_lasti) if site.kind == "for"]
    iterators = Monitor.loop_iterators(frame, origin.sites, "loop", loops, names) if loops else []
    if iterators is None or any(it is None for it in iterators):
        raise _refuse(gen, f"dart cannot read the iterators of the loops around line {frame.f_lineno}")
    for site, it in zip(loops, iterators):
        if type(it) in (io.TextIOWrapper, enumerate):  # `for line in f`: find the file's place again
            node = next((n for n in _own_nodes(origin.node)
                         if isinstance(n, ast.For) and getattr(n, "_dart_path", None) == site.path), None)
            if node is not None:
                textfiles.resync_loop(frame, node, it)
    return {cont.path_key(site.path): it for site, it in zip(loops, iterators)}


def save(gen: types.GeneratorType, user_module) -> tuple | None:
    """The pickle reduction of ``gen``; None if it is not of the user's code
    (``user_module(name)`` says which modules are)."""
    state = inspect.getgeneratorstate(gen)
    if state == inspect.GEN_CLOSED:
        return _finished, ()
    module = gen.gi_frame.f_globals.get("__name__")
    if not isinstance(module, str) or not (user_module(module) or _library_source(gen, module)):
        return None
    if gen.gi_code.co_name == "<genexpr>":
        raise _refuse(gen, "it is a generator expression; make it a list, or a generator function (which dart saves)")
    if state == inspect.GEN_RUNNING:
        raise _refuse(gen, "it is running (a commit from inside the generator)")
    if state == inspect.GEN_CREATED and gen in _made:
        return make, (_made[gen],)
    origin = _origin(gen)
    if origin is None:
        raise _refuse(gen, "dart does not find its `def` in the source of its module")
    shared = [name for n in _own_nodes(origin.node) if isinstance(n, ast.Nonlocal) for name in n.names]
    if shared:
        raise _refuse(gen, f"it assigns `nonlocal {', '.join(shared)}`: a re-created generator would get a copy "
                           "of the variable, no longer shared with the function that made it")
    names = dict(gen.gi_frame.f_locals)
    spec = {
        "module": origin.module,
        "qualname": gen.__qualname__,
        "name": gen.gi_code.co_name,
        "def": [list(step) for step in origin.def_path],
        "at": None,
        "form": "start",
        "iterators": {},
        "yield_from": None,
    }
    if state == inspect.GEN_SUSPENDED:
        stmt, spec["form"] = _waiting_at(gen, origin)
        spec["at"] = [list(step) for step in stmt._dart_path]
        spec["iterators"] = _loop_iterators(gen, origin, names)
        if spec["form"] == "yield_from":
            spec["yield_from"] = gen.gi_yieldfrom
    free = gen.gi_code.co_freevars
    spec["free"] = {name: names[name] for name in free if name in names}
    spec["locals"] = {
        name: value for name, value in names.items() if name not in free and not name.startswith(_DART_NAMES)
    }
    return make, (spec,)


def _library_source(gen, module: str) -> bool:
    """A generator of a library written in Python (pandas' ``iterrows()``, a
    ``DatetimeIndex``'s iteration), whose source dart can continue as it does
    the user's; not dart's own."""
    filename = gen.gi_code.co_filename
    return not module.startswith("dart.") and filename.endswith(".py") and os.path.isfile(filename)


#: id of a library generator's code -> (that code, whether one of its generators pickled)
_library_verdicts: dict[int, tuple[types.CodeType, bool]] = {}


def can_save(gen: types.GeneratorType, user_module) -> bool:
    """Would :func:`save` take this generator? For the user's generators, their
    shape decides (what is in their locals is named if it does not pickle); for
    a library's, one of its generators is pickled once to find out, so that a
    loop over one that cannot be saved is counted instead (monitor/tracked.py)."""
    try:
        if save(gen, user_module) is None:
            return False
    except pickle.PicklingError:
        return False
    module = gen.gi_frame.f_globals.get("__name__") if gen.gi_frame is not None else None
    if gen.gi_frame is None or user_module(module):
        return True
    known = _library_verdicts.get(id(gen.gi_code))
    if known is None or known[0] is not gen.gi_code:
        try:
            _pickler.dumps(gen, sys.modules.get("__main__"))
            verdict = True
        except Exception:  # noqa: BLE001 - whatever stops it, the loop is counted instead
            verdict = False
        known = _library_verdicts[id(gen.gi_code)] = (gen.gi_code, verdict)
    return known[1]


def _finished():
    def finished():
        return
        yield  # noqa: unreachable: makes this a generator function

    gen = finished()
    next(gen, None)
    return gen


def _at(line: int, stmt: ast.AST) -> ast.AST:
    for sub in ast.walk(stmt):
        sub.lineno, sub.end_lineno, sub.col_offset, sub.end_col_offset = line, line, 0, 0
    return stmt


def _load(name: str) -> ast.Subscript:
    return ast.Subscript(value=ast.Name(id=SAVED, ctx=ast.Load()), slice=ast.Constant(name), ctx=ast.Load())


def _assign(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value)


def _continuation(spec: dict, node: ast.FunctionDef) -> ast.FunctionDef:
    """The generator function that goes on from the saved yield (see the
    module docstring), built from ``node``, the function's current ``def``."""
    fdef = copy.deepcopy(node)
    def_path = tuple(tuple(step) for step in spec["def"])
    if spec["form"] == "start":
        rest = fdef.body
    else:
        at = tuple(tuple(step) for step in spec["at"])
        rest = cont._Builder("before").block(fdef.body, at[len(def_path):])
        # The builder runs the statement at the position again. In that one copy
        # (later iterations keep theirs) the yield yields nothing: make() runs the
        # generator up to it, so that it waits there as the saved one did (and a
        # send() reaches it); a ``yield from`` delegates on to the saved iterator.
        again = next(s for r in rest for s in ast.walk(r)
                     if getattr(s, "_dart_resumed", False) and getattr(s, "_dart_path", None) == at)
        if spec["form"] == "yield_from":
            again.value.value = ast.copy_location(ast.Name(id=YIELD_FROM, ctx=ast.Load()), again.value.value)
        else:
            again.value.value = None
    line = fdef.lineno
    prelude = [_assign(cont.ONE_NAME, ast.Tuple(elts=[ast.Constant(None)], ctx=ast.Load())),
               _assign(cont.REENTER_NAME, _load(cont.REENTER_NAME))]
    prelude += [_assign(name, _load(name)) for name in spec["locals"]]
    prelude += [_assign(cont.iterator_global(key), _load("iter:" + key)) for key in spec["iterators"]]
    if spec["form"] == "yield_from":
        prelude.append(_assign(YIELD_FROM, _load(YIELD_FROM)))
    keep = ast.If(test=ast.Constant(False), body=[ast.Expr(ast.Yield(None))], orelse=[])  # stays a generator
    if spec["free"]:  # never runs; keeps the free variables free (cells of the factory)
        keep.body.append(ast.Expr(ast.Tuple(elts=[ast.Name(id=n, ctx=ast.Load()) for n in spec["free"]], ctx=ast.Load())))
    fdef.body = cont.hoist_declarations(node, [_at(line, s) for s in prelude] + rest + [_at(line, keep)])
    fdef.args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=SAVED)], kwonlyargs=[], kw_defaults=[], defaults=[])
    fdef.decorator_list = []
    fdef.returns = None
    return fdef


def make(spec: dict) -> types.GeneratorType:
    """Re-create a generator saved by :func:`save`."""
    from .restore import _reenter

    if spec["module"] == "__main__":
        namespace = _pickler.loading_main_namespace()
    else:
        namespace = _module(spec["module"]).__dict__
    path = namespace.get("__file__")
    def_path = tuple(tuple(step) for step in spec["def"])
    try:
        node = node_at(_module_tree(path), def_path) if isinstance(path, str) else None
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError, IndexError, AttributeError):
        node = None
    if not isinstance(node, ast.FunctionDef) or node.name != spec["name"]:
        raise pickle.UnpicklingError(
            f"the generator function {spec['qualname']}() is not where the commit saw it in "
            f"{path or spec['module']}: its source was edited since (undo the edit, or start over with --fresh), "
            "or this process does not hold the script (dart.load(run_source=True) and `dart show --run-source` "
            "load it)"
        )
    fdef = _continuation(spec, node)
    free = list(spec["free"])
    factory = ast.FunctionDef(
        name="__dart_generator_factory__",
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=n) for n in free], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=[fdef, ast.Return(value=ast.Name(id=fdef.name, ctx=ast.Load()))],
        decorator_list=[],
        type_params=[],
    )
    _at(fdef.lineno, factory.body[1])
    ast.copy_location(factory, fdef)
    tree = ast.fix_missing_locations(ast.Module(body=[factory], type_ignores=[]))
    scratch: dict = {}
    exec(compile(tree, path, "exec", dont_inherit=True), namespace, scratch)
    function = scratch[factory.name](*(spec["free"][n] for n in free))
    function.__qualname__ = spec["qualname"]
    function.__module__ = spec["module"]
    _origins[id(function.__code__)] = (function.__code__, _Origin(spec["module"], def_path, fdef))
    saved = dict(spec["locals"])
    saved.update({"iter:" + key: it for key, it in spec["iterators"].items()})
    saved[cont.REENTER_NAME] = _reenter
    saved[YIELD_FROM] = spec["yield_from"]
    gen = function(saved)
    if spec["form"] == "yield":
        next(gen)  # the prelude, up to the saved yield
    else:
        _made[gen] = spec
    return gen


_pickler.save_generators_with(save, can_save)
