"""The monitor: sys.monitoring events on user code, turned into safe points.

One tool id for all of dart. Events are set per code object of user code (the
main script, and the functions of user modules), never globally: LINE on the
main script's module code (statement entries), JUMP on code with loops
(iteration ends), and LINE + BRANCH on code with tracked loops. The callbacks
are C (``dart._monitor``). Between commits the events are switched off
altogether (instrumented code runs slower even with every location disabled).
When a commit falls due, a timer thread marks it due and switches them back on;
a location that is not a safe point then returns DISABLE in C, and the next
safe point the program reaches commits through the session's handler.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from types import CodeType, FrameType
from typing import Callable

from .._native import monitor as _native
from ..errors import DartError
from ..astpath import function_nodes, nested_code, source_span
from .sites import CodeSites, LoopSite, analyze
from .tracked import TrackedLoops
from .usercode import UserCode, module_functions, module_tree

log = logging.getLogger("dart")
mon = sys.monitoring
E = mon.events
DISABLE = mon.DISABLE
TOOL_NAME = "dart"
_NOT_CONTINUABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _defs_by_line(tree) -> dict:
    # co_firstlineno is the line of the first decorator, as is source_span()'s start.
    return {(node.name, source_span(node)[0]): node for node in function_nodes(tree)}


# The ids of CPython's well-known tools, tried last (dart is none of them).
_PREFERRED_IDS = (4, 3, 5, 2, 1, 0)

# (frame, sites, kind, path, line, site) -> None
SafePointHandler = Callable[[FrameType, CodeSites, str, tuple, int, "LoopSite | None"], None]


def _claim_tool_id() -> int:
    for tool in _PREFERRED_IDS:
        if mon.get_tool(tool) is None:
            mon.use_tool_id(tool, TOOL_NAME)
            return tool
    users = ", ".join(f"{i}={mon.get_tool(i)}" for i in range(6))
    raise DartError(
        f"every sys.monitoring tool id is taken ({users}); dart needs one. "
        "Stop one of those tools (debugger, coverage, profiler) and run again."
    )


class Monitor:
    def __init__(self, on_safe_point: SafePointHandler, user_code: UserCode | None = None):
        self._on_safe_point = on_safe_point
        self.user_code = user_code
        self._main_thread = threading.get_ident()  # safe points only where the program runs
        self.watched: dict[CodeType, CodeSites] = {}
        self.tool = _claim_tool_id()
        _native.set_due(False)
        _native.set_handlers(self._on_line, self._on_jump)
        mon.register_callback(self.tool, E.LINE, _native.line_event)
        mon.register_callback(self.tool, E.JUMP, _native.jump_event)
        mon.register_callback(self.tool, E.BRANCH, _native.branch_event)
        # Loops over iterators dart cannot save, tracked so they can be re-created.
        self.loops = TrackedLoops(self.watched, self._set_events)
        _native.set_loop_handlers(self.loops.on_loop_entry, self.loops.on_first_item)
        # Events per code object while a commit is due, and between commits
        # (none, except what tracked loops need): instrumented code runs a few
        # percent slower even when every location has returned DISABLE.
        self._due_events: dict[CodeType, int] = {}
        self._idle_events: dict[CodeType, int] = {}
        self._armed = False
        self._timer: threading.Thread | None = None
        self._wake = threading.Condition()
        self._due_at: float | None = None
        self._stopped = False

    # -- what to watch -------------------------------------------------------
    def watch(self, code: CodeType, tree, root=None) -> CodeSites:
        """Watch the main script's module code compiled from ``tree`` and the
        plain functions and methods defined in it (generators and coroutines
        cannot be continued). ``root`` is the script's own AST when ``tree`` is
        a continuation or prologue built from it."""
        root = tree if root is None else root
        sites = analyze(code, tree, "__main__", root)
        self.watched[code] = sites
        self._set_events(code, due=E.LINE | E.JUMP)
        self.loops.track_in(code, sites)
        defs = _defs_by_line(tree)
        for inner in nested_code(code):
            node = defs.get((inner.co_name, inner.co_firstlineno))
            if node is not None and not inner.co_flags & _NOT_CONTINUABLE:
                self.watch_function(inner, node, "__main__", root)
        return sites

    def watch_function(self, code: CodeType, node, module: str = "__main__", root=None) -> CodeSites:
        sites = analyze(code, node, module, root)
        self.watched[code] = sites
        if sites.back_edges:
            self._set_events(code, due=E.JUMP)
        self.loops.track_in(code, sites)
        return sites

    def watch_new_modules(self) -> None:
        """Watch the functions of user modules imported since the last look."""
        if self.user_code is None:
            return
        for module in self.user_code.new_modules():
            tree = module_tree(module)
            if tree is None:
                continue
            defs = _defs_by_line(tree)
            for code in module_functions(module):
                node = defs.get((code.co_name, code.co_firstlineno))
                if node is not None and code not in self.watched and not code.co_flags & _NOT_CONTINUABLE:
                    self.watch_function(code, node, module.__name__, tree)

    def _set_events(self, code: CodeType, due: int = 0, idle: int = 0) -> None:
        """Add events to what ``code`` gets while a commit is due / between commits."""
        self._due_events[code] = self._due_events.get(code, 0) | due | idle
        self._idle_events[code] = self._idle_events.get(code, 0) | idle
        events = self._due_events[code] if self._armed else self._idle_events[code]
        mon.set_local_events(self.tool, code, events)

    def _arm(self, armed: bool) -> None:
        """Switch every watched code to its due (or idle) events. Setting a
        code's events anew also re-enables the locations that returned DISABLE."""
        if armed:
            try:
                self.watch_new_modules()
            except Exception:  # never let the timer thread die: commits depend on it
                log.exception("dart: could not look for new user modules; continuing without them")
        self._armed = armed
        table = self._due_events if armed else self._idle_events
        for code, events in list(table.items()):
            mon.set_local_events(self.tool, code, events)

    # -- reading loops at a safe point -------------------------------------------
    @staticmethod
    def loop_iterators(frame: FrameType, sites: CodeSites, kind: str, loops, names: dict | None = None) -> list | None:
        """The iterator of each loop in ``loops`` (None for a ``while``) as the
        frame holds it now; None if the frame's stack cannot be trusted (a
        caller suspended in a C call, whose stack pointer may be stale).
        ``names``: where a continuation keeps peeled loops' iterators (its
        globals, or a generator continuation's locals)."""
        out, stack = [], None
        for loop in loops:
            if loop.kind != "for":
                out.append(None)
                continue
            if loop.iterator.global_name is not None:
                iterator = (frame.f_globals if names is None else names).get(loop.iterator.global_name)
            else:
                if stack is None:
                    stack = _native.frame_stack(frame)
                    if kind == "before" and len(stack) > sites.depth_at(frame.f_lasti):
                        return None
                slot = loop.iterator.stack_slot
                iterator = stack[slot] if slot is not None and slot < len(stack) else None
            if iterator is None or not hasattr(iterator, "__next__"):
                return None
            out.append(iterator)
        return out

    # -- when a commit is due ------------------------------------------------
    def due_now(self) -> None:
        """Every safe point commits until :meth:`due_at` says otherwise."""
        if self._stopped:
            return  # a late word from the flusher after the run ended
        with self._wake:
            self._due_at = None
            _native.set_due(True)
            self._arm(True)

    def due_at(self, when: float | None) -> None:
        """Make the next commit due at monotonic time ``when`` (None: never)."""
        if self._stopped:
            return
        _native.set_due(False)
        with self._wake:
            self._arm(False)
            self._due_at = when
            self._wake.notify()
        if when is not None and self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="dart-timer", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        with self._wake:
            while not self._stopped:
                if self._due_at is None:
                    self._wake.wait()
                    continue
                delay = self._due_at - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                self._due_at = None
                _native.set_due(True)
                self._arm(True)

    # -- callbacks (only called while a commit is due) -----------------------
    def _on_line(self, frame: FrameType, line: int):
        if threading.get_ident() != self._main_thread:
            return None  # not DISABLE: that would disable the location for the main thread too
        sites = self.watched.get(frame.f_code)
        if sites is not None:
            if self.loops.is_entry(frame):
                self.loops.on_loop_entry(frame, frame.f_lasti)
                if frame.f_lasti not in sites.statement_entries:
                    return None
            entry = sites.statement_entries.get(frame.f_lasti)
            if entry is not None:
                self._on_safe_point(frame, sites, "before", entry[0], entry[1], None)
                return None if _native.is_due() else DISABLE
        return DISABLE

    def _on_jump(self, frame: FrameType, src: int, dst: int):
        if threading.get_ident() != self._main_thread:
            return None  # not DISABLE: that would disable the location for the main thread too
        sites = self.watched.get(frame.f_code)
        if sites is not None:
            site = sites.back_edges.get((src, dst))
            if site is not None:
                self._on_safe_point(frame, sites, "loop", site.path, site.line, site)
                return None if _native.is_due() else DISABLE
        return DISABLE

    # -- shutdown --------------------------------------------------------------
    def stop(self) -> None:
        """Undo everything: events, callbacks, the tool id (3.12/3.13 keep
        callbacks registered after free_tool_id, so clear them first)."""
        if self._stopped:
            return
        with self._wake:
            self._stopped = True
            self._wake.notify()
        _native.set_due(False)
        _native.set_handlers(None, None)
        for code in self.watched:
            mon.set_local_events(self.tool, code, 0)
        _native.set_loop_handlers(None, None)
        mon.register_callback(self.tool, E.LINE, None)
        mon.register_callback(self.tool, E.JUMP, None)
        mon.register_callback(self.tool, E.BRANCH, None)
        mon.free_tool_id(self.tool)
