"""Paths of AST nodes: how dart names a statement of a program.

A *path* is the tuple of (field, index) steps from a module to a statement, e.g.
``(("body", 3), ("body", 0))``: the first statement in the body of the module's
fourth statement. Paths are what commits record as positions, what the monitor
maps bytecode to, and what resume rebuilds continuations from, so this module
belongs to none of them: it only knows ``ast`` and code objects.
"""

from __future__ import annotations

import ast
import functools
from types import CodeType

Path = tuple[tuple[str, int], ...]


def annotate_paths(tree: ast.Module) -> ast.Module:
    """Record on every statement its path from the module (``_dart_path``)."""

    def visit(node: ast.AST, path: Path) -> None:
        for name, value in ast.iter_fields(node):
            if not isinstance(value, list):
                continue
            for index, child in enumerate(value):
                if isinstance(child, (ast.stmt, ast.excepthandler)):
                    child_path = path + ((name, index),)
                    child._dart_path = child_path  # type: ignore[attr-defined]
                    visit(child, child_path)

    visit(tree, ())
    return tree


def node_at(tree: ast.AST, path: Path) -> ast.AST:
    node = tree
    for name, index in path:
        node = getattr(node, name)[index]
    return node


def source_span(node: ast.AST) -> tuple[int, int]:
    first = node.lineno
    for deco in getattr(node, "decorator_list", ()):
        first = min(first, deco.lineno)
    return first, node.end_lineno or node.lineno


def within(pos, node: ast.AST) -> bool:
    """Is an instruction position inside the source span of ``node``?"""
    line, end_line, col, end_col = pos
    if line is None or col is None:
        return False
    start = (node.lineno, node.col_offset)
    stop = (node.end_lineno, node.end_col_offset)
    return start <= (line, col) and (end_line, end_col) <= stop


def function_nodes(tree: ast.AST):
    """Every ``def`` in ``tree`` that dart can watch (not lambdas or generators)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and hasattr(node, "_dart_path"):
            yield node


def nested_code(code: CodeType):
    """Code objects of the functions and classes defined inside ``code``."""
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield const
            yield from nested_code(const)


@functools.lru_cache(maxsize=1024)
def _positions(code: CodeType) -> tuple:
    return tuple(code.co_positions())


def position_at(code: CodeType, offset: int) -> tuple:
    """(line, end line, column, end column) of the instruction at ``offset``
    (cached per code object: callers ask at every commit)."""
    return _positions(code)[offset // 2]


def innermost_statement(tree: ast.AST, code: CodeType, offset: int) -> ast.stmt | None:
    """The deepest original statement of ``tree`` whose source holds the
    instruction at ``offset`` (function and class bodies excluded)."""
    pos = position_at(code, offset)
    found = None

    def visit(nodes):
        nonlocal found
        for node in nodes:
            if not isinstance(node, (ast.stmt, ast.excepthandler)):
                continue
            original = hasattr(node, "_dart_path")
            # Wrappers a continuation generated sit at made-up positions: look inside.
            if original and not within(pos, node):
                continue
            if original and isinstance(node, ast.stmt):
                found = node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for name, value in ast.iter_fields(node):
                if isinstance(value, list):
                    visit(value)

    visit(tree.body)
    return found


def position_after(tree: ast.Module, path: Path) -> tuple[str, Path] | None:
    """The safe point right after the statement at ``path`` finishes, as
    (kind, path); None when that point cannot be resumed (a pending ``finally``)."""
    parent_path, (name, index) = path[:-1], path[-1]
    parent = node_at(tree, parent_path) if parent_path else tree
    block = getattr(parent, name)
    if index + 1 < len(block):
        return "before", parent_path + ((name, index + 1),)
    if isinstance(parent, ast.Module):
        return "end", ()
    if isinstance(parent, (ast.For, ast.While)) and name == "body":
        return "loop", parent_path
    if isinstance(parent, ast.excepthandler):
        try_path = parent_path[:-1]
        if node_at(tree, try_path).finalbody:
            return None
        return position_after(tree, try_path)
    if isinstance(parent, (ast.Try, ast.TryStar)) and parent.finalbody and name != "finalbody":
        return None
    return position_after(tree, parent_path)


#: Calls that make a class: ``Point = namedtuple("Point", "x y")`` at the top of
#: a module is as much a definition as a ``class`` statement.
CLASS_FACTORIES = frozenset(
    {"namedtuple", "NamedTuple", "make_dataclass", "TypedDict", "NewType", "Enum", "IntEnum", "StrEnum", "Flag",
     "IntFlag"}
)


def class_factory_name(stmt: ast.stmt) -> str | None:
    """The name ``stmt`` binds if it is ``Name = <class factory>(...)``, else None."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return None
    call = stmt.value
    if not isinstance(call, ast.Call):
        return None
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return stmt.targets[0].id if name in CLASS_FACTORIES else None
