"""Where a module's code can be committed and resumed: its safe points.

A safe point is either the entry of a top-level statement of the main script or
the end of an iteration of a loop (a backward jump in the bytecode). This module
matches the bytecode of one code object to the AST it was compiled from, so that
the monitor can turn a sys.monitoring event (a line, a jump from ``src`` to
``dst``) into a position in the *original* program: the path of AST indexes to
the statement or loop, plus where each enclosing loop keeps its iterator.

The AST may be the original script or a continuation built by ``dart.resume``;
nodes that come from the original carry their original path in ``_dart_path``,
and nodes that ``dart.resume`` generated carry a ``_dart_role``.
"""

from __future__ import annotations

import ast
import bisect
import dis
from dataclasses import dataclass, field
from types import CodeType

from .. import compat
from ..astpath import Path, source_span, within


@dataclass(frozen=True)
class IterSource:
    """Where the iterator of a ``for`` loop lives while the loop runs."""

    stack_slot: int | None = None  # index from the bottom of the frame's value stack
    global_name: str | None = None  # a continuation keeps a peeled loop's iterator here


@dataclass(frozen=True)
class LoopSite:
    path: Path  # path of the loop statement in the original program
    kind: str  # "for" or "while"
    line: int
    iterator: IterSource | None  # None for while loops
    enclosing: tuple["LoopSite", ...] = ()  # outer loops in the same frame, outermost first
    target: str | None = None  # the loop variable, when it is a plain name (for display)
    entry: int | None = None  # offset of the loop statement's first instruction
    for_iter: int | None = None  # offset of its FOR_ITER


@dataclass
class CodeSites:
    """The safe points of one code object."""

    code: CodeType
    back_edges: dict[tuple[int, int], LoopSite] = field(default_factory=dict)
    # offset of the first instruction of each top-level statement -> (path, line)
    statement_entries: dict[int, tuple[Path, int]] = field(default_factory=dict)
    loops: dict[Path, tuple[LoopSite, ...]] = field(default_factory=dict)  # all copies of each loop
    tree: ast.AST | None = None  # the Module, or the FunctionDef of a function's code
    def_path: Path | None = None  # path of the function's def statement (None: module code)
    module: str = "__main__"  # the module whose source ``root`` is
    root: ast.Module | None = None  # that module's whole AST (paths start there)
    depths: dict[int, int] = field(default_factory=dict)  # static stack depth per offset
    # the backward jumps of ``while`` loops that come after their test (the copy
    # CPython puts at the end of the body): the next iteration's test has run, and
    # was true, when such a jump is taken. Both ends of each: during the JUMP
    # event a frame's f_lasti is the destination on 3.12, the jump on 3.13.
    tested_jumps: set[int] = field(default_factory=set)

    def depth_at(self, lasti: int) -> int:
        """Stack depth at the instruction ``f_lasti`` is in (a suspended caller's
        f_lasti may point into the inline cache after its CALL); -1 if unknown."""
        if self._offsets is None:
            self._offsets = sorted(self.depths)
        index = bisect.bisect_right(self._offsets, lasti) - 1
        return self.depths[self._offsets[index]] if index >= 0 else -1

    _offsets: list[int] | None = field(default=None, repr=False)
    # (first, last offset, loop): the bytecode of each copy of each loop
    loop_ranges: list[tuple[int, int, LoopSite]] = field(default_factory=list)

    def loops_at(self, offset: int) -> tuple[LoopSite, ...]:
        """The loops around the instruction at ``offset``, outermost first. By
        offset, not by statement: a continuation holds several copies of a
        statement, inside different copies of its loops."""
        around = [(last - first, site) for first, last, site in self.loop_ranges if first <= offset <= last]
        if not around:
            return ()
        site = min(around, key=lambda pair: pair[0])[1]
        return (*site.enclosing, site)


def _target_name(node: ast.AST) -> str | None:
    target = getattr(node, "target", None)
    return target.id if isinstance(target, ast.Name) else None


def _pos_key(node: ast.AST) -> tuple:
    return (node.lineno, node.end_lineno, node.col_offset, node.end_col_offset)


def stack_depths(code: CodeType) -> dict[int, int]:
    """Static value-stack depth before each instruction (abstract interpretation)."""
    instructions = list(dis.get_instructions(code))
    by_offset = {ins.offset: i for i, ins in enumerate(instructions)}
    depths: dict[int, int] = {}
    work: list[tuple[int, int]] = [(0, 0)]
    for start, end, target, depth, lasti in compat.exception_entries(code):
        work.append((target, depth + 1 + int(lasti)))
    while work:
        offset, depth = work.pop()
        while offset in by_offset and offset not in depths:
            depths[offset] = depth
            ins = instructions[by_offset[offset]]
            op = ins.opcode
            if compat.is_jump(ins):
                try:
                    jumped = depth + dis.stack_effect(op, ins.arg, jump=True)
                except ValueError:
                    jumped = depth
                work.append((ins.argval, jumped))
            if compat.ends_flow(ins):
                break
            try:
                # A generator's frame starts with the value its first resume sends
                # (POP_TOP takes it), which 3.12's stack_effect leaves out.
                depth += 1 if ins.opname == "RETURN_GENERATOR" else dis.stack_effect(op, ins.arg, jump=False)
            except ValueError:
                break
            nxt = by_offset[offset] + 1
            if nxt >= len(instructions):
                break
            offset = instructions[nxt].offset
    return depths


def analyze(code: CodeType, tree: ast.AST, module: str = "__main__", root: ast.Module | None = None) -> CodeSites:
    """Match the loops and top-level statements of ``tree`` to ``code``'s bytecode.

    ``tree`` must be the AST ``code`` was compiled from, with ``_dart_path``
    annotations (see :func:`annotate_paths`) on the nodes that come from the
    original program.
    """
    sites = CodeSites(
        code, tree=tree, def_path=getattr(tree, "_dart_path", None), module=module,
        root=root if root is not None else tree,
    )
    instructions = list(dis.get_instructions(code))
    positions = list(code.co_positions())

    def pos_of(offset: int):
        return positions[offset // 2]

    depths = sites.depths = stack_depths(code)
    # A continuation holds several copies of a loop (the rest of the current
    # iteration, then the loop going on), with the same source positions.
    # Copies are compiled in source order, so match them to bytecode in order.
    for_iters: dict[tuple, list[int]] = {}
    index_of = {ins.offset: i for i, ins in enumerate(instructions)}
    for ins in instructions:
        if ins.opname == "FOR_ITER":
            for_iters.setdefault(tuple(pos_of(ins.offset)), []).append(ins.offset)

    def loop_entry(node: ast.For, for_iter: int) -> int:
        """First instruction of the loop statement: walk back from its FOR_ITER
        over the instructions of its header (the iterable, GET_ITER)."""
        first, last = node.lineno, node.iter.end_lineno
        i = index_of[for_iter]
        while i > 0:
            line = pos_of(instructions[i - 1].offset)[0]
            if line is None or not first <= line <= last:
                break
            i -= 1
        return instructions[i].offset

    offset_to_for: dict[int, LoopSite] = {}

    def jumps_land_on(for_iter: int, site: LoopSite) -> None:
        offset_to_for[for_iter] = site
        sites.loop_ranges.append((for_iter, instructions[index_of[for_iter]].argval, site))
        # A loop body long enough for a big jump gives FOR_ITER an
        # EXTENDED_ARG prefix; backward jumps land on the prefix.
        i = index_of[for_iter]
        while i > 0 and instructions[i - 1].opname == "EXTENDED_ARG":
            i -= 1
            offset_to_for[instructions[i].offset] = site

    whiles: dict[tuple, list[tuple[ast.While, LoopSite]]] = {}
    continues: dict[tuple, list[LoopSite | None]] = {}

    def walk(node: ast.AST, enclosing: tuple[LoopSite, ...]) -> None:
        role = getattr(node, "_dart_role", None)
        site: LoopSite | None = None
        if isinstance(node, (ast.For, ast.While)) and role is None and hasattr(node, "_dart_path"):
            iterator = offset = entry = None
            if isinstance(node, ast.For):
                copies = for_iters.get(compat.for_iter_position(node))
                offset = copies.pop(0) if copies else None
                if offset is not None and offset in depths:
                    iterator = IterSource(stack_slot=depths[offset] - 1)
                    entry = loop_entry(node, offset)
                else:
                    iterator = IterSource()  # unknown: loop is not a safe point
            site = LoopSite(
                path=node._dart_path,
                kind="for" if isinstance(node, ast.For) else "while",
                line=node.lineno,
                iterator=iterator,
                enclosing=enclosing,
                target=_target_name(node),
                entry=entry,
                for_iter=offset,
            )
            sites.loops[site.path] = sites.loops.get(site.path, ()) + (site,)
            if offset is not None:
                jumps_land_on(offset, site)
            if isinstance(node, ast.While):
                whiles.setdefault(_pos_key(node.test), []).append((node, site))
        elif isinstance(node, ast.For) and isinstance(role, tuple) and role[0] == "peeled":
            # A continuation runs the rest of a loop's current iteration inside a
            # one-shot loop; the real loop's iterator waits in a variable.
            _, path, kind, line, name, target = role
            site = LoopSite(
                path=path,
                kind=kind,
                line=line,
                iterator=IterSource(global_name=name) if kind == "for" else None,
                enclosing=enclosing,
                target=target,
            )
            # The one-shot loop's own backward jump ends the loop's current
            # iteration: a safe point like the loop's own.
            copies = for_iters.get(compat.for_iter_position(node))
            offset = copies.pop(0) if copies else None
            if offset is not None:
                jumps_land_on(offset, site)
        if isinstance(node, ast.Continue):
            continues.setdefault(_pos_key(node), []).append(enclosing[-1] if enclosing else None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return  # other code objects
        for name, value in ast.iter_fields(node):
            inner = enclosing + (site,) if site is not None and name == "body" else enclosing
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST):
                    walk(child, inner)

    for stmt in tree.body:
        walk(stmt, ())

    # Backward jumps -> loops. A `for` loop's jumps land on its FOR_ITER; a
    # `while` loop's normal jump comes from its test, a `continue` from itself.
    # Jumps from copies of one while test (or one continue) pair up with the
    # copies in order; if the counts differ (a finally block compiled twice),
    # none of them is trusted.
    by_test: dict[tuple, list[tuple[int, int]]] = {}
    by_continue: dict[tuple, list[tuple[int, int]]] = {}
    for ins in instructions:
        if ins.opname != "JUMP_BACKWARD":
            continue
        src, dst = ins.offset, ins.argval
        site = offset_to_for.get(dst)
        if site is not None:
            known = site.iterator is None or site.iterator.stack_slot is not None or site.iterator.global_name
            if known:
                sites.back_edges[(src, dst)] = site
            continue
        pos = tuple(pos_of(src))
        if pos in continues:
            by_continue.setdefault(pos, []).append((src, dst))
            continue
        for key, copies in whiles.items():
            if within(pos, copies[0][0].test):
                by_test.setdefault(key, []).append((src, dst))
                break
    for key, edges in by_test.items():
        if len(edges) == len(whiles[key]):
            for edge, (_, site) in zip(sorted(edges), whiles[key]):
                sites.back_edges[edge] = site
                sites.tested_jumps.update(edge)
    for site in {id(s): s for s in sites.back_edges.values() if s.kind == "while"}.values():
        edges = [e for e, s in sites.back_edges.items() if s is site]
        sites.loop_ranges.append((min(dst for _, dst in edges), max(src for src, _ in edges), site))
    for key, edges in by_continue.items():
        owners = continues[key]
        if len(edges) == len(owners):
            for edge, site in zip(sorted(edges), owners):
                if site is not None and site.kind == "while":
                    sites.back_edges[edge] = site

    # Entries of top-level statements that come from the original program.
    spans = []
    for stmt in tree.body:
        path = getattr(stmt, "_dart_path", None)
        fresh = getattr(stmt, "_dart_role", None) is None and not getattr(stmt, "_dart_resumed", False)
        if path is not None and len(path) == 1 and fresh:
            spans.append((source_span(stmt), path, stmt.lineno))
    entries: dict[Path, tuple[int, int]] = {}
    for start, end, line in code.co_lines():
        if line is None:
            continue
        for (first, last), path, stmt_line in spans:
            if first <= line <= last:
                if path not in entries or start < entries[path][0]:
                    entries[path] = (start, stmt_line)
                break
    sites.statement_entries = {offset: (path, line) for path, (offset, line) in entries.items()}
    return sites
