"""``dart run --atomic-steps``: where the iterations of the main script's loops begin
and end, and where an exception raised in one is caught.

Each iteration of a loop in the main script's module code is a *step*. The monitor
reports three things, on a sys.monitoring tool id of its own (LINE and JUMP on the main
code object only, every other location disabled after its first event; EXCEPTION_HANDLED
cannot be set per code object, so its callback ignores other code):

- a step begins at the first statement of a loop body (LINE);
- it ends when control jumps back to the loop's header or out of its body (JUMP:
  ``continue``, the back edge, ``break`` on 3.12) or reaches a line outside the body
  (LINE: ``break`` on 3.13, a loop that ends). Lines inside loop bodies therefore
  keep their LINE event: a Python callback per line of the main script's loops;
- an exception was caught (EXCEPTION_HANDLED) in the main code while steps were open:
  the steps of the loops that do not contain the handler are failed and closed; the
  innermost step whose loop contains the handler is failed and begins again from there.

What a step is (a transaction) is the session's business: ``begin(frame)`` returns an
object with ``commit()`` and ``rollback(exc)``. This module only knows lines.
"""

from __future__ import annotations

import ast
import dis
import sys
from dataclasses import dataclass
from types import CodeType

from ..errors import DartError

mon = sys.monitoring
E = mon.events
_STEP_TOOL_IDS = (3, 4, 5, 2, 1, 0)
#: exceptions that are control flow, not a failed iteration
_NOT_FAILURES = (StopIteration, StopAsyncIteration, GeneratorExit)


@dataclass(frozen=True)
class StepLoop:
    header: int  #: line of the for/while statement
    first: int  #: line of the first statement of the body
    last: int  #: last line of the body

    def contains(self, line: int) -> bool:
        return self.first <= line <= self.last


def module_loops(tree: ast.Module) -> list[StepLoop]:
    """The loops of the module's own code (not inside functions or classes)."""
    loops = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, (ast.For, ast.While)) and node.body:
                loops.append(StepLoop(node.lineno, node.body[0].lineno, node.body[-1].end_lineno))
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, ()) or ())
            if isinstance(node, ast.Match):
                for case in node.cases:
                    visit(case.body)

    visit(tree.body)
    return loops


class AtomicSteps:
    def __init__(self, code: CodeType, tree: ast.Module, begin):
        self.code = code
        self.begin = begin
        self.loops = module_loops(tree)
        self._by_first = {loop.first: loop for loop in self.loops}
        self._lines = {ins.offset: ins.positions.lineno for ins in dis.get_instructions(code)
                       if ins.positions is not None and ins.positions.lineno is not None}
        self.open: list[tuple[StepLoop, object]] = []  # innermost last
        self.tool = None

    def start(self) -> None:
        for tool in _STEP_TOOL_IDS:
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, "dart-steps")
                self.tool = tool
                break
        else:
            raise DartError("--atomic-steps needs a free sys.monitoring tool id and none is left; stop a "
                            "debugger, coverage or profiler and run again")
        mon.register_callback(self.tool, E.LINE, self._line)
        mon.register_callback(self.tool, E.JUMP, self._jump)
        mon.register_callback(self.tool, E.EXCEPTION_HANDLED, self._handled)
        mon.set_local_events(self.tool, self.code, E.LINE | E.JUMP)
        # not a local event: set for all code, the callback ignores other code objects
        mon.set_events(self.tool, E.EXCEPTION_HANDLED)

    def stop(self) -> None:
        if self.tool is None:
            return
        mon.set_local_events(self.tool, self.code, 0)
        mon.set_events(self.tool, 0)
        for event in (E.LINE, E.JUMP, E.EXCEPTION_HANDLED):
            mon.register_callback(self.tool, event, None)
        mon.free_tool_id(self.tool)
        self.tool = None
        while self.open:  # the program ended inside a step (it finished, or died)
            self.open.pop()[1].commit()

    # -- callbacks (the frame one up is the main script's) ---------------------------------

    def _line(self, code, line):
        if code is not self.code:
            return mon.DISABLE
        # control left the body of an open step's loop (`break` compiles to no jump on
        # 3.13, a loop that ends falls through): that iteration completed
        while self.open and not self.open[-1][0].contains(line):
            self.open.pop()[1].commit()
        loop = self._by_first.get(line)
        if loop is not None and not any(open_loop is loop for open_loop, _ in self.open):
            # (the same line again inside an open iteration heads a nested loop: not a new one)
            self.open.append((loop, self.begin(sys._getframe(1))))
        if loop is None and not any(other.contains(line) for other in self.loops):
            return mon.DISABLE  # outside every loop: module code runs such a line once
        return None

    def _jump(self, code, source, target):
        if code is not self.code:
            return mon.DISABLE
        line = self._lines.get(target)
        if not any(loop.contains(self._lines.get(source, -1)) for loop in self.loops):
            return mon.DISABLE  # a jump outside every loop body never ends a step
        while self.open:
            loop = self.open[-1][0]
            if line is not None and loop.contains(line) and line != loop.header:
                break
            self.open.pop()[1].commit()
        return None

    def _handled(self, code, offset, exc):
        if code is not self.code or not self.open or isinstance(exc, _NOT_FAILURES):
            return None
        frame = sys._getframe(1)
        line = frame.f_lineno if frame.f_code is self.code else self._lines.get(offset, -1)  # the handler
        while self.open:
            loop, step = self.open[-1]
            if not step.failed(exc):
                return None  # a transaction of the program's own is open inside the step: its business
            self.open.pop()
            if loop.contains(line):
                self.open.append((loop, self.begin(frame)))  # the handler runs from clean state
                return None
        return None
