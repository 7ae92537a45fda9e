"""Continuations: the rest of a module from a committed position.

CPython cannot restore a frame or jump into a loop, so dart rewrites the source
instead. Given the original AST and a position (a path of AST indexes), it builds

* a *prologue*: the imports, ``def``, ``class`` and ``name = lambda`` statements
  before the position, re-run so that functions and classes exist (and pick up
  any fix made to their code) before saved objects are loaded; and
* a *continuation*: the statements from the position on. Each block on the path
  continues from its index; an ``if`` keeps the branch that was taken; ``with``
  and ``try`` are re-entered; a loop that was mid-iteration first finishes that
  iteration (inside a one-shot loop, so ``break`` and ``continue`` keep their
  meaning) and then goes on over its saved iterator.

Every node keeps its original line numbers, so tracebacks point at the user's
file, and original statements keep ``_dart_path`` so that the monitor maps safe
points in the continuation back to positions in the original program.
"""

from __future__ import annotations

import ast
import copy
import itertools
from ..astpath import Path, class_factory_name
from ..capture.path import CALLEE_PREFIX
from ..errors import ResumeError
from ..monitor.tracked import SavedLoop  # noqa: F401  (commits of dart 0.1 name it here)

ONE_NAME = "__dart_one__"  # a global holding (None,): the one-shot loop's iterable
RECREATE_NAME = "__dart_recreate__"  # global: __dart_recreate__(key, thunk) -> the loop's iterator
REENTER_NAME = "__dart_reenter__"  # global: __dart_reenter__(saved, fresh) -> a with block's manager


def path_key(path) -> str:
    """A loop's key in the commit's saved iterators, e.g. ``body.2/body.0``."""
    return "/".join(f"{name}.{index}" for name, index in path)


def iterator_key(frame_index: int, path) -> str:
    """Key of a loop's saved iterator: its path, prefixed by the frame's index
    on the call path (0, the module, has no prefix)."""
    key = path_key(path)
    return key if frame_index == 0 else f"f{frame_index}:{key}"


def iterator_global(key: str) -> str:
    """The global a continuation keeps the saved iterator of loop ``key`` in."""
    # Ends in "__" so that class bodies do not mangle it as a private name.
    return "__dart_iter_" + key.replace(".", "_").replace("/", "__").replace(":", "_") + "__"


def _is_definition(stmt: ast.stmt, modules: frozenset) -> bool:
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if class_factory_name(stmt) is not None:
        return True
    return (
        isinstance(stmt, ast.Assign)
        and isinstance(stmt.value, ast.Lambda)
        and all(isinstance(t, ast.Name) for t in stmt.targets)
    ) or is_setting(stmt, modules)


def imported_names(tree: ast.Module) -> frozenset:
    """Names the module's top-level imports bind (``np`` for ``import numpy as np``)."""
    names = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in stmt.names)
    return frozenset(names)


#: Calls that configure the process rather than compute: state no commit holds
#: (torch's default dtype and threads, NumPy's print and error modes, warning
#: filters, logging, the working directory, exit and signal handlers), so resume
#: runs them again when they came before the position.
SETTING_CALLS = frozenset(
    {
        "set_default_dtype",
        "set_default_device",
        "set_num_threads",
        "set_num_interop_threads",
        "set_float32_matmul_precision",
        "use_deterministic_algorithms",
        "set_flush_denormal",
        "set_printoptions",
        "seterr",
        "filterwarnings",
        "simplefilter",
        "basicConfig",
        "setrecursionlimit",
        "set_start_method",
        "set_grad_enabled",  # torch.set_grad_enabled(False): the global grad mode
        "set_detect_anomaly",  # torch.autograd.set_detect_anomaly(True)
        "set_config",  # sklearn.set_config(transform_output="pandas")
        "set_option",  # pd.set_option("display.width", 200)
        "chdir",  # os.chdir: files the rest of the program writes land there
        "register",  # atexit.register, codecs.register
        "signal",  # signal.signal: a handler for SIGTERM, SIGINT
    }
)
#: ``sys.path.insert(0, ...)`` before an import of the script's own helpers.
PATH_CALLS = frozenset({"insert", "append", "extend"})


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def is_setting(stmt: ast.stmt, modules: frozenset) -> bool:
    """``torch.set_num_threads(1)``, ``torch.backends.cudnn.deterministic = True``
    or ``os.environ["X"] = "1"``: on an imported module, not on an object."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        if not isinstance(func, ast.Attribute):
            return False
        if func.attr in PATH_CALLS and ast.unparse(func.value) == "sys.path":
            return "sys" in modules
        return func.attr in SETTING_CALLS and _root(func.value) in modules
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
        plain = isinstance(stmt.value, (ast.Constant, ast.Attribute, ast.Name))
        return isinstance(target, (ast.Attribute, ast.Subscript)) and _root(target) in modules and plain
    return False


def prologue(tree: ast.Module, position: dict) -> ast.Module:
    """Definitions and process settings that precede the resume position at
    module level."""
    path = _path(module_frame(position))
    stop = path[0][1] if path else len(tree.body)
    modules = imported_names(tree)
    body = [copy.deepcopy(s) for s in tree.body[:stop] if _is_definition(s, modules)]
    return ast.Module(body=body, type_ignores=[])


def _path(position: dict) -> Path:
    return tuple((name, int(index)) for name, index in position.get("path", ()))


def callee_names(index: int) -> tuple[str, str]:
    """The globals a resumed caller calls frame ``index`` by when its call's receiver
    was computed by a call: the function (as the call reached it: the class's
    attribute, decorators included) and the arguments that stand for the receiver
    (``(None,)`` for a method, ``()`` otherwise)."""
    return f"{CALLEE_PREFIX}{index}__", f"__dart_self_{index}__"


def blank_arguments(stmt: ast.stmt, position, callee: int | None = None) -> None:
    """Replace the arguments of the call at ``position`` in ``stmt`` (lines from
    the statement's first, see ``capture.path.call_position``) with ``None``: the
    resumed callee restores its parameters from the commit, so
    ``self.head(self.body(x))`` must not run ``self.body(x)`` again. ``callee``:
    the callee's frame index when the call's receiver was computed by a call
    (``Trainer(cfg).fit()``): the call then calls that frame's function directly,
    so the receiver is not computed again either (the method restores ``self``)."""
    first = stmt.lineno
    for node in ast.walk(stmt):
        here = [node.lineno - first, node.end_lineno - first, node.col_offset, node.end_col_offset] if isinstance(node, ast.Call) else None
        if here == list(position):
            node.args = [ast.copy_location(ast.Constant(None), arg) for arg in node.args]
            for keyword in node.keywords:
                keyword.value = ast.copy_location(ast.Constant(None), keyword.value)
            if callee is not None:
                function, receiver = callee_names(callee)
                node.func = ast.copy_location(ast.Name(id=function, ctx=ast.Load()), node.func)
                stand_in = ast.Starred(value=ast.Name(id=receiver, ctx=ast.Load()), ctx=ast.Load())
                node.args.insert(0, ast.copy_location(stand_in, node.func))
                for sub in ast.walk(stand_in):
                    ast.copy_location(sub, node.func)
            return
    raise ResumeError(
        f"the statement at line {first} was edited since the commit: the call dart was in is no longer "
        "there (undo that edit to resume)",
        next_step="fresh",
    )


class _Builder:
    def __init__(self, kind: str, frame_index: int = 0, recreated: frozenset = frozenset(), blank=None,
                 tested: bool = False, receiver: bool = False):
        self.kind = kind
        self.receiver = receiver  # the blank call's receiver was computed by a call
        self.tested = tested  # a "loop" position of a while loop whose next test has run already
        self.frame_index = frame_index
        self.recreated = recreated  # iterator keys of SavedLoop loops
        self.blank = blank  # the source position of a call to re-run with placeholder arguments
        self.counter = itertools.count(frame_index * 1000)

    def recreate(self, loop: ast.stmt) -> list:
        """``__dart_iter_k__ = __dart_recreate__(k, lambda: <iterable>)`` for a
        SavedLoop loop (the lambda evaluates it in the loop's own scope)."""
        key = iterator_key(self.frame_index, loop._dart_path)
        if not isinstance(loop, ast.For) or key not in self.recreated:
            return []
        thunk = ast.Lambda(
            args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=copy.deepcopy(loop.iter),
        )
        call = ast.Call(func=ast.Name(id=RECREATE_NAME, ctx=ast.Load()), args=[ast.Constant(key), thunk], keywords=[])
        assign = ast.Assign(targets=[ast.Name(id=self.iterator_name(loop), ctx=ast.Store())], value=call)
        for node in (assign, assign.targets[0], call, call.func, call.args[0], thunk):
            ast.copy_location(node, loop.iter)
        return [assign]

    def iterator_name(self, loop: ast.stmt) -> str:
        return iterator_global(iterator_key(self.frame_index, loop._dart_path))

    def block(self, stmts: list, path: Path) -> list:
        (_, index), rest = path[0], path[1:]
        if index >= len(stmts):
            raise ResumeError("the saved position is past the end of a block")
        node = stmts[index]
        tail = [copy.deepcopy(s) for s in stmts[index + 1 :]]
        if not rest:
            if self.kind == "before":
                again = copy.deepcopy(node)
                if self.blank is not None:
                    blank_arguments(again, self.blank, self.frame_index + 1 if self.receiver else None)
                again._dart_resumed = True  # entered already (for a caller: re-entering its call)
                return [again] + tail
            if self.tested and isinstance(node, ast.While):
                # The commit came after the test of the next iteration had run (and
                # was true): run that iteration's body first, without running the
                # test again (`while (batch := next_batch()) is not None:` would skip one).
                return self.peel(node, copy.deepcopy(node.body)) + tail
            return self.restored_loop(node, top=True) + tail
        return self.inside(node, rest) + tail

    def inside(self, node: ast.stmt, path: Path) -> list:
        field = path[0][0]
        if isinstance(node, ast.Try | ast.TryStar) and field == "handlers":
            handler = node.handlers[path[0][1]]
            return self._with_finally(node, self.block(handler.body, path[1:]))
        inner = self.block(getattr(node, field), path)
        if isinstance(node, ast.For | ast.While):
            return self.peel(node, inner) if field == "body" else inner
        if isinstance(node, ast.If):
            return inner
        if isinstance(node, ast.With):
            return [ast.copy_location(ast.With(items=[self.reentered(i) for i in node.items], body=inner), node)]
        if isinstance(node, ast.Try | ast.TryStar):
            if field == "body":
                kind = type(node)
                return [
                    ast.copy_location(
                        kind(
                            body=inner,
                            handlers=copy.deepcopy(node.handlers),
                            orelse=copy.deepcopy(node.orelse),
                            finalbody=copy.deepcopy(node.finalbody),
                        ),
                        node,
                    )
                ]
            if field == "orelse":
                return self._with_finally(node, inner)
            return inner
        raise ResumeError(
            f"dart cannot continue inside the {type(node).__name__} statement at line {node.lineno}"
        )

    @staticmethod
    def reentered(item: ast.withitem) -> ast.withitem:
        """``with open(p, "w") as f`` must not run ``open`` again (it would
        empty the file): reuse the saved ``f`` when it is an open file
        (``__dart_reenter__`` decides at run time), else evaluate it anew."""
        item = copy.deepcopy(item)
        target = item.optional_vars
        if not isinstance(target, (ast.Name, ast.Attribute)):
            return item
        saved = copy.deepcopy(target)
        for sub in ast.walk(saved):
            if hasattr(sub, "ctx"):
                sub.ctx = ast.Load()
        no_args = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
        call = ast.Call(
            func=ast.Name(id=REENTER_NAME, ctx=ast.Load()),
            args=[ast.Lambda(args=no_args, body=saved), ast.Lambda(args=copy.deepcopy(no_args), body=item.context_expr)],
            keywords=[],
        )
        for node in (call, call.func, *call.args):
            ast.copy_location(node, item.context_expr)
        item.context_expr = call
        return item

    @staticmethod
    def _with_finally(node, inner: list) -> list:
        if not node.finalbody:
            return inner
        return [ast.copy_location(ast.Try(body=inner, handlers=[], orelse=[], finalbody=copy.deepcopy(node.finalbody)), node)]

    def restored_loop(self, loop: ast.stmt, top: bool = False, prepared: bool = False) -> list:
        """The loop, going on from where it was: a ``for`` runs over its saved
        iterator (re-created first for a SavedLoop, unless ``prepared``)."""
        if not isinstance(loop, ast.For | ast.While):
            raise ResumeError(f"the saved position names line {loop.lineno}, which is not a loop")
        new = copy.deepcopy(loop)
        if isinstance(loop, ast.For):
            name = ast.copy_location(ast.Name(id=self.iterator_name(loop), ctx=ast.Load()), loop.iter)
            new.iter = name
        if top:
            new._dart_resumed = True  # not a fresh entry of the statement
        return ([] if prepared else self.recreate(loop)) + [new]

    def peel(self, loop: ast.stmt, rest_of_iteration: list) -> list:
        flag = f"__dart_broke_{next(self.counter)}__"
        line = loop.lineno

        def at(node):
            for sub in ast.walk(node):
                sub.lineno, sub.end_lineno, sub.col_offset, sub.end_col_offset = line, line, 0, 0
            return node

        def assign(value: bool):
            return at(ast.Assign(targets=[ast.Name(id=flag, ctx=ast.Store())], value=ast.Constant(value)))

        once = at(
            ast.For(
                target=ast.Name(id="__dart_once__", ctx=ast.Store()),
                iter=ast.Name(id=ONE_NAME, ctx=ast.Load()),
                body=[],
                orelse=[assign(False)],
            )
        )
        once.body = rest_of_iteration
        kind = "for" if isinstance(loop, ast.For) else "while"
        once._dart_role = (
            "peeled",
            loop._dart_path,
            kind,
            loop.lineno,
            self.iterator_name(loop) if kind == "for" else None,
            loop.target.id if isinstance(loop, ast.For) and isinstance(loop.target, ast.Name) else None,
        )
        guard = at(ast.If(test=ast.UnaryOp(op=ast.Not(), operand=ast.Name(id=flag, ctx=ast.Load())), body=[], orelse=[]))
        guard.body = self.restored_loop(loop, prepared=True)
        return self.recreate(loop) + [assign(True), once, guard]


def module_frame(position: dict) -> dict:
    """The module's part of a position (commits made before frames existed
    describe only the module)."""
    frames = position.get("frames")
    return frames[0] if frames else position


def continuation(tree: ast.Module, position: dict, recreated: frozenset = frozenset()) -> ast.Module:
    """The module body from ``position`` on (see the module docstring)."""
    frame = module_frame(position)
    kind = frame["kind"]
    if kind not in ("before", "loop"):
        raise ResumeError(f"a commit at a position of kind {kind!r} cannot be resumed")
    body = _Builder(kind, 0, recreated, frame.get("blank"), frame.get("tested", False),
                    frame.get("receiver", False)).block(tree.body, _path(frame))
    module = ast.Module(body=body, type_ignores=[])
    ast.fix_missing_locations(module)
    return module


def names_read(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def names_defined(tree: ast.Module) -> set[str]:
    defined = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(stmt.name)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                defined.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(stmt, ast.Assign):
            defined.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
    return defined


def hoist_declarations(function: ast.FunctionDef, body: list) -> list:
    """``body`` (a new body for ``function``) with the function's ``global`` and
    ``nonlocal`` statements first: a continuation starts past them, and without
    them the names would be locals. Copies inside ``body`` become ``pass`` (a
    declaration after a use is a syntax error)."""
    declared: dict[type, list[str]] = {ast.Global: [], ast.Nonlocal: []}
    todo = list(function.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            declared[type(node)] += [n for n in node.names if n not in declared[type(node)]]
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    if not any(declared.values()):
        return body

    class Drop(ast.NodeTransformer):
        def visit_Global(self, node):
            return ast.copy_location(ast.Pass(), node)

        visit_Nonlocal = visit_Global

        def visit_FunctionDef(self, node):
            return node  # their own declarations stay

        visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    body = [Drop().visit(stmt) for stmt in body]
    heads = [ast.copy_location(kind(names=names), function) for kind, names in declared.items() if names]
    for head in heads:
        head.end_lineno, head.end_col_offset = head.lineno, head.col_offset
    return heads + body


ENTER_NAME = "__dart_enter__"  # global: __dart_enter__(i) puts back function i's own code
LOCALS_NAME = "__dart_locals__"  # global: __dart_locals__(i) returns function i's saved locals


def function_variant(
    tree: ast.Module,
    frame: dict,
    index: int,
    local_names: list[str],
    freevars: tuple[str, ...],
    recreated: frozenset = frozenset(),
    rebuild: list = (),
) -> tuple[ast.Module, ast.FunctionDef]:
    """A copy of the module in which the function of frame ``index`` is its
    continuation: it first puts the function's own code back (so later calls
    run normally), restores its locals, then goes on from the saved position.
    It keeps the signature (wrappers call it with the original arguments) and
    the free variables (so it fits the function's closure). ``rebuild`` holds
    the paths of assignments to run again for locals that could not be saved."""
    from ..astpath import node_at

    module = copy.deepcopy(tree)
    def_path = _path({"path": frame["def"]})
    node = node_at(module, def_path)
    if not isinstance(node, ast.FunctionDef) or node.name != frame["qualname"].rsplit(".", 1)[-1]:
        raise ResumeError(f"the function {frame['qualname']}() is no longer where the commit saw it")
    line = node.lineno

    def at(stmt):
        for sub in ast.walk(stmt):
            sub.lineno, sub.end_lineno, sub.col_offset, sub.end_col_offset = line, line, 0, 0
        return stmt

    def call(name):
        return ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=[ast.Constant(index)], keywords=[])

    prelude = [at(ast.Expr(call(ENTER_NAME)))]
    if local_names:
        targets = ast.Tuple(elts=[ast.Name(id=n, ctx=ast.Store()) for n in local_names], ctx=ast.Store())
        prelude.append(at(ast.Assign(targets=[targets], value=call(LOCALS_NAME))))
    # Locals that could not be saved: run the assignments that made them again
    # (those before the position; later ones run in the continuation anyway),
    # and the process settings made at the top of the function before it.
    here = _path(frame)[len(def_path)][1]
    for path in rebuild:
        if path[len(def_path)][1] < here:
            prelude.append(copy.deepcopy(node_at(module, path)))
    modules = imported_names(module)
    prelude += [copy.deepcopy(stmt) for stmt in node.body[:here] if is_setting(stmt, modules)]
    rest = _Builder(frame["kind"], index, recreated, frame.get("blank"), frame.get("tested", False),
                    frame.get("receiver", False)).block(
        node.body, _path(frame)[len(def_path) :]
    )
    keep = []
    if freevars:  # never runs; keeps the closure's variables free in the new code
        refs = ast.Tuple(elts=[ast.Name(id=n, ctx=ast.Load()) for n in freevars], ctx=ast.Load())
        keep.append(at(ast.If(test=ast.Constant(False), body=[ast.Expr(refs)], orelse=[])))
    node.body = hoist_declarations(node, prelude + rest + keep)
    node.decorator_list = []
    ast.fix_missing_locations(module)
    return module, node
