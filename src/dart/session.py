"""A run of a program under dart, from choosing how to start to the last commit.

``plan_run`` decides whether a command starts a new run or resumes the newest
unfinished run of the same script and arguments. ``Session`` owns the pieces of
the pipeline for that run (monitor -> capture -> flusher -> store) and turns
safe points into commits. ``dart.runner`` (``dart run``) and ``dart.enable()``
both drive a Session; they differ only in who executes the module code.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import os
import sys
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import xxhash

from . import _native
from .capture import Capturer, restore
from .capture.hidden import capture_hidden, compare_environment, environment, restore_hidden
from .config import DEFAULT_BUDGET, Options
from .errors import CaptureError, DartWarning, ResumeError, StoreError
from .flush import CommitHandle, Flusher, StagedCommit
from .monitor import Monitor
from .monitor.usercode import UserCode, module_tree
from .capture.path import FrameSpot, NotContinuable, call_path, call_statement
from .monitor.sites import (
    CodeSites,
    LoopSite,
    annotate_paths,
    innermost_statement,
    nested_code,
    node_at,
    position_after,
)
from .resume import continuation as cont
from .resume.anchors import anchors_of, relocate
from .store import Store

log = logging.getLogger("dart")


def run_key(script: Path, args: list[str], store_root: Path) -> str:
    """Identity of "the same command": the script (relative to the store's
    folder, so a copied folder resumes) and its arguments."""
    try:
        name = os.path.relpath(script, store_root.parent)
    except ValueError:  # another drive
        name = str(script)
    if name.startswith(".."):
        name = str(script)
    return xxhash.xxh3_64_hexdigest(json.dumps([name, list(args)]).encode())


@dataclass
class Plan:
    store: Store
    run_id: str
    resume_from: dict | None  # the commit record to continue from
    parent: str | None  # the run's newest durable commit


def plan_run(options: Options, script: Path, args: list[str]) -> Plan:
    store = Store(options.store)
    key = run_key(script, args, options.store)
    runs = store.find_runs(key)
    if runs and not options.fresh and runs[-1].get("status") != "finished":
        last = runs[-1]
        commits = store.log(run=last["id"])
        resumable = next((c for c in commits if c.get("resumable")), None)
        if resumable is not None:
            return Plan(store, last["id"], resumable, commits[0]["id"])
        store.update_run(last["id"], status="abandoned")
    run_id = store.create_run(
        {"key": key, "script": str(script), "argv": list(args), "cwd": os.getcwd(), "pid": os.getpid()}
    )
    return Plan(store, run_id, None, None)


def _short_value(name: str, frame) -> str | None:
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


def _savable(iterator, depth: int = 0) -> bool:
    """Can this iterator be pickled? Wrappers (enumerate, zip, map, ...) are
    as savable as the iterators they hold; other kinds are asked once per type."""
    kind = type(iterator)
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
    return depth < 8 and all(_savable(a, depth + 1) for a in inner)


def iteration_count(iterator) -> int | None:
    """How many items an iterator has produced, when its pickle state says so."""
    try:
        reduced = iterator.__reduce__()
    except Exception:
        return None
    if isinstance(reduced, tuple) and len(reduced) >= 3 and type(reduced[2]) is int:
        return reduced[2]  # range, list and tuple iterators: the index
    if type(iterator) is enumerate and len(reduced) >= 2 and len(reduced[1]) == 2:
        return reduced[1][1]
    return None


def _recreator(saved: dict):
    """``__dart_recreate__(key, thunk)``: the iterator of a SavedLoop loop,
    re-created under the random state from the loop's start and advanced past
    the items it had taken; the random state of the commit is then put back."""

    def recreate(key: str, thunk):
        loop = saved.pop(key)
        now = capture_hidden()
        restore_hidden(loop.entry)
        iterator = iter(thunk())
        for _ in range(loop.count):
            next(iterator)
        restore_hidden(now)
        return _native.CountingIterator(iterator, loop.count, loop.entry)

    return recreate


def _resolve_function(namespace: dict, qualname: str):
    """The live function object for ``qualname`` (methods and decorated
    functions included: decorators made with functools.wraps are looked through)."""
    import inspect

    if "<locals>" in qualname:
        raise ResumeError(
            f"cannot resume inside {qualname}(): functions defined inside other functions "
            "cannot be resumed yet. Run again with --fresh to start over."
        )
    parts = qualname.split(".")
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


class Session:
    def __init__(self, plan: Plan, options: Options, module: types.ModuleType, script: Path, source: str):
        self.plan = plan
        self.store = plan.store
        self.options = options
        self.module = module
        self.script = script
        self.source = source
        self.tree = annotate_paths(ast.parse(source, str(script)))
        self.display_name = script.name
        self.source_hash = xxhash.xxh3_64_hexdigest(source.encode())
        self.capturer = Capturer(module, self._rebuild_statement)
        self._frame_defs: dict[str, tuple] = {}  # qualname -> (module AST, def path)
        self._rebuild_paths: dict[tuple, tuple] = {}  # (qualname or None, name) -> statement path
        self.flusher = Flusher(self.store, plan.run_id, plan.parent)
        user_code = UserCode(script.parent, options.local_modules, options.user_code)
        self.monitor = Monitor(self._on_safe_point, user_code)
        self._warned_loops: set[tuple] = set()
        self._closed = False
        self._recreated: frozenset = frozenset()  # SavedLoop keys of the commit resumed from
        self._anchors: dict[tuple, list[str]] = {}
        self.commits = 0

    # -- starting ---------------------------------------------------------------
    def prepare_resume(self) -> tuple[types.CodeType, ast.Module]:
        """Run the prologue, restore the saved state into the module and return
        the continuation's code (and AST) to execute."""
        commit = self.plan.resume_from
        position = commit["position"]
        filename = str(self.script)
        namespace = self.module.__dict__
        renamed = self._relocate(position)
        commit["recreated"] = [renamed.get(k, k) for k in commit.get("recreated", [])]
        for module, def_path, loop_path in commit.get("tracked", []):
            key = tuple(map(tuple, def_path)) if def_path else None
            self.monitor.tracked.add((module, key, tuple(map(tuple, loop_path))))
        recreated = frozenset(commit.get("recreated", []))
        self._recreated = recreated
        if commit.get("source", {}).get("hash") != self.source_hash:
            log.warning("dart: %s changed since commit %s; resuming with the edited code", self.display_name, commit["id"][:12])
        try:
            body = cont.continuation(self.tree, position, recreated)
        except ResumeError as exc:
            raise ResumeError(
                f"cannot resume run {self.plan.run_id} from commit {commit['id'][:12]} "
                f"({describe(position)}): {exc}. The script may have changed too much; "
                "run again with --fresh to start over."
            ) from None
        prologue = cont.prologue(self.tree, position)
        skipped = commit.get("skipped", {})
        needed = sorted((cont.names_read(body) & set(skipped)) - cont.names_defined(prologue))
        if needed:
            details = "; ".join(f"'{n}' ({skipped[n]})" for n in needed)
            raise ResumeError(
                f"cannot resume run {self.plan.run_id} from commit {commit['id'][:12]}: the rest of "
                f"{self.display_name} uses {details}, which could not be saved and cannot be rebuilt. "
                "Run again with --fresh to start over."
            )
        try:
            prologue_code = compile(prologue, filename, "exec")
            exec(prologue_code, namespace)
        except Exception as exc:
            raise ResumeError(
                f"re-running the imports and definitions of {self.display_name} before the resume point "
                f"failed: {type(exc).__name__}: {exc}. Fix the script or run again with --fresh."
            ) from exc
        state = commit["state"]
        try:
            stream = self.store.get_object(state["pickle"])
            buffers = [self.store.get_object(oid) for oid in state["buffers"]]
            roots = restore(stream, buffers, main_namespace=namespace)
        except (CaptureError, StoreError) as exc:
            raise ResumeError(
                f"cannot load the state of commit {commit['id'][:12]} in {self.store.root}: {exc}. "
                "Run again with --fresh to start over."
            ) from None
        namespace.update(roots["globals"])
        self._rebuild_globals(commit, position)
        saved_loops = {}
        roots["iterators"] = {renamed.get(k, k): v for k, v in roots["iterators"].items()}
        for key, iterator in roots["iterators"].items():
            if isinstance(iterator, cont.SavedLoop):
                saved_loops[key] = iterator
            else:
                namespace[cont.iterator_global(key)] = iterator
        namespace[cont.ONE_NAME] = (None,)
        namespace[cont.RECREATE_NAME] = _recreator(saved_loops)
        self.monitor.watch(prologue_code, prologue, self.tree)  # the functions it defined
        self.monitor.watch_new_modules()  # and the user modules it imported
        self._arm_function_frames(commit, roots.get("frames", []))
        restore_hidden(roots["hidden"])
        for problem in compare_environment(commit.get("env", {})):
            warnings.warn(f"resuming commit {commit['id'][:12]}: {problem}", DartWarning, stacklevel=2)
        log.warning("dart: resuming run %s from commit %s at %s", self.plan.run_id, commit["id"][:12], describe(position))
        return compile(body, filename, "exec"), body

    def _rebuild_globals(self, commit: dict, position: dict) -> None:
        """Run again the statements that created the globals dart could not save."""
        stop = cont.module_frame(position)["path"][0][1]
        for name, path in commit.get("rebuild", {}).get("0", {}).items():
            path = tuple(map(tuple, path))
            if path[0][1] >= stop:
                continue  # the continuation runs it anyway
            stmt = node_at(self.tree, path)
            try:
                exec(compile(ast.Module(body=[stmt], type_ignores=[]), str(self.script), "exec"), self.module.__dict__)
            except Exception as exc:
                raise ResumeError(
                    f"cannot rebuild variable '{name}' by running line {stmt.lineno} of {self.display_name} "
                    f"again: {type(exc).__name__}: {exc}. Run again with --fresh to start over."
                ) from exc

    def _relocate(self, position: dict) -> dict[str, str]:
        """Find each frame's saved path again in the current source (which may
        have been edited since the commit) and rewrite the position with the
        paths found. Returns old -> new iterator keys."""
        frames = position.get("frames") or []
        renamed: dict[str, str] = {}
        for index, frame in enumerate(frames):
            module = frame.get("module", "__main__")
            what = self.display_name if index == 0 else f"{frame['qualname']}()"
            try:
                root = self._module_source(module, frame["qualname"])[1]
                old = tuple(map(tuple, frame["path"]))
                new = relocate(root, old, frame.get("anchors"), what)
            except ResumeError as exc:
                raise ResumeError(
                    f"cannot resume from commit {self.plan.resume_from['id'][:12]}: {exc}. dart finds the "
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

    def _arm_function_frames(self, commit: dict, frame_locals: list[dict]) -> None:
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

        main = self.module.__dict__
        helpers = {
            cont.ENTER_NAME: enter,
            cont.LOCALS_NAME: saved_locals,
            cont.ONE_NAME: (None,),
            cont.RECREATE_NAME: main[cont.RECREATE_NAME],
        }
        helpers.update({k: v for k, v in main.items() if k.startswith("__dart_iter_")})
        main.update(helpers)
        for index, frame in enumerate(frames[1:], start=1):
            name = frame.get("module", "__main__")
            namespace, tree, filename = self._module_source(name, frame["qualname"])
            namespace.update(helpers)
            function = _resolve_function(namespace, frame["qualname"])
            freevars = function.__code__.co_freevars
            try:
                rebuild = commit.get("rebuild", {}).get(str(index), {})
                module, node = cont.function_variant(
                    tree, frame, index, list(frame_locals[index - 1]), freevars, self._recreated,
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
            self.monitor.watch_function(variant, node, name, tree)

    def _module_source(self, name: str, qualname: str) -> tuple[dict, ast.Module, str]:
        """(globals, annotated AST, file name) of the user module ``name``."""
        if name == "__main__":
            return self.module.__dict__, self.tree, str(self.script)
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

    def start(self, code: types.CodeType, tree: ast.Module) -> None:
        """Watch ``code`` (compiled from ``tree``) and arm the first commit."""
        self.monitor.watch(code, tree, self.tree)
        every = self.options.every
        if every == 0:
            self.monitor.due_now()
        elif every is not None:
            self.monitor.due_at(time.monotonic() + every)

    # -- committing -----------------------------------------------------------------
    def _on_safe_point(self, frame, sites: CodeSites, kind: str, path, line: int, site: LoopSite | None) -> None:
        try:
            self.monitor.watch_new_modules()  # callers in user modules imported since the last look
        except Exception:
            log.exception("dart: could not look for new user modules; continuing without them")
        loops = (*site.enclosing, site) if site is not None else ()
        spot = FrameSpot(frame, sites, kind, path, line, loops)
        try:
            spots = call_path(frame, spot, self.monitor.watched)
        except NotContinuable as exc:
            self._warn_once(
                ("path", frame.f_code, path),
                f"not committing inside {frame.f_code.co_qualname}() at "
                f"{os.path.basename(frame.f_code.co_filename)}:{line}: {exc}; commits happen further out instead",
            )
            return
        self._commit(spots, message=None)

    def _rebuild_statement(self, frame_key: str | None, name: str, value) -> str | None:
        """Where ``name`` (a global, or a local of function ``frame_key``) is
        created by a plain assignment at the top of its body that resume can run
        again; None if there is none (or the value is a generator, which a new
        run of the assignment would restart)."""
        if isinstance(value, types.GeneratorType):
            return None
        if frame_key is None:
            root, base = self.tree, ()
        else:
            root, base = self._frame_defs[frame_key]
        body = node_at(root, base).body if base else root.body
        for index, stmt in enumerate(body):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                if len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id == name:
                    self._rebuild_paths[(frame_key, name)] = base + (("body", index),)
                    return f"line {stmt.lineno} ({ast.unparse(stmt)[:60]})"
        return None

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned_loops:
            self._warned_loops.add(key)
            warnings.warn(message, DartWarning, stacklevel=3)

    def _frame_state(self, index: int, spot: FrameSpot, iterators: dict) -> dict | None:
        """The JSON description of one frame on the path; fills ``iterators``.
        None when the frame's stack is not what the analysis expects."""
        frame = spot.frame
        loop_info = []
        stack = None
        for loop in spot.loops:
            info = {"path": [list(p) for p in loop.path], "kind": loop.kind, "line": loop.line, "iteration": None}
            if loop.kind == "for" and frame is not None:
                if loop.iterator.global_name is not None:
                    iterator = frame.f_globals.get(loop.iterator.global_name)
                else:
                    if stack is None:
                        stack = _native.frame_stack(frame)
                        if spot.kind == "before" and len(stack) > spot.sites.depth_at(frame.f_lasti):
                            return None  # stack pointer not saved by this kind of call
                    slot = loop.iterator.stack_slot
                    iterator = stack[slot] if slot is not None and slot < len(stack) else None
                if iterator is None or not hasattr(iterator, "__next__"):
                    return None
                key = cont.iterator_key(index, loop.path)
                if isinstance(iterator, _native.CountingIterator):
                    if iterator.entry is None:
                        return None  # this run of the loop began before dart tracked it
                    info["iteration"] = iterator.count
                    iterator = cont.SavedLoop(iterator.count, iterator.entry)
                elif not _savable(iterator):
                    self.monitor.track(spot.sites, loop)
                    self._warn_once(
                        ("track", spot.def_path, loop.path),
                        f"the loop at {os.path.basename(frame.f_code.co_filename)}:{loop.line} runs over a {type(iterator).__name__}, "
                        "which cannot be saved; from its next start dart counts its items and re-creates it "
                        "on resume (no commits inside it until then)",
                    )
                    return None
                else:
                    info["iteration"] = iteration_count(iterator)
                iterators[key] = iterator
                if loop.target is not None:
                    info["target"] = _short_value(loop.target, frame)
            loop_info.append(info)
        anchors = None
        if spot.sites is not None and spot.path:
            cache_key = (id(spot.sites.root), spot.path)
            anchors = self._anchors.get(cache_key)
            if anchors is None:
                anchors = self._anchors[cache_key] = anchors_of(spot.sites.root, spot.path)
        state = {
            "module": spot.sites.module if spot.sites is not None else "__main__",
            "anchors": anchors,
            "qualname": spot.qualname,
            "def": [list(p) for p in spot.def_path] if spot.def_path is not None else None,
            "kind": spot.kind,
            "path": [list(p) for p in spot.path],
            "line": spot.line,
            "loops": loop_info,
        }
        return state

    def _commit(self, spots: list[FrameSpot], message, resumable=True) -> CommitHandle | None:
        started = time.perf_counter()
        iterators: dict = {}
        frames = []
        for index, spot in enumerate(spots):
            state = self._frame_state(index, spot, iterators)
            if state is None:
                return None  # the stack is not what the analysis expected: no commit here
            frames.append(state)
        frame_locals = []
        for spot in spots[1:]:
            hidden = set(spot.frame.f_code.co_freevars)
            self._frame_defs[spot.qualname] = (spot.sites.root, spot.def_path)
            local_vars = {k: v for k, v in spot.frame.f_locals.items() if k not in hidden and not k.startswith("__dart_")}
            frame_locals.append((spot.qualname, local_vars))
        namespace = self.module.__dict__
        try:
            stream, buffers, info = self.capturer.capture(namespace, iterators, frame_locals)
        except CaptureError as exc:
            where = " > ".join(f"{f['qualname']}:{f['line']}" for f in frames)
            self._warn_once(
                ("capture", tuple(f["qualname"] for f in frames), tuple(map(tuple, frames[-1]["path"]))),
                f"not committing at {self.display_name} {where}: {exc}; commits happen elsewhere instead",
            )
            return None
        innermost = frames[-1]
        last = spots[-1].frame
        position = {
            "file": os.path.basename(last.f_code.co_filename) if last is not None else self.display_name,
            "line": innermost["line"],
            "kind": innermost["kind"],
            "path": innermost["path"],
            "loops": [loop for f in frames for loop in f["loops"]],
            "frames": frames,
        }
        meta = {
            "time": time.time(),
            "position": position,
            "where": describe(position),
            "message": message,
            "resumable": resumable and innermost["kind"] in ("before", "loop"),
            "skipped": info["skipped"],
            "rebuild": {
                str(index): {
                    name: [list(p) for p in self._rebuild_paths[(None if index == 0 else spots[index].qualname, name)]]
                    for name in names
                }
                for index, names in info["rebuilt"].items()
            },
            "recreated": sorted(k for k, v in iterators.items() if isinstance(v, cont.SavedLoop)),
            "tracked": sorted(
                [m, list(map(list, d)) if d else None, list(map(list, p))] for m, d, p in self.monitor.tracked
            ),
            "env": environment(),
            "source": {"file": str(self.script), "hash": self.source_hash},
        }
        handle = self.flusher.submit(StagedCommit(payload=stream, buffers=buffers, meta=meta))
        self.commits += 1
        if self.options.every == 0 and message is None:
            # Every safe point commits: each commit is durable before the program
            # goes on, so a kill repeats at most the iteration in flight.
            handle.wait()
        self._schedule_next(time.perf_counter() - started)
        return handle

    def _schedule_next(self, stall: float) -> None:
        every = self.options.every
        if every is None or every == 0:
            return
        if self.options.every_is_default:
            every = max(every, stall / DEFAULT_BUDGET)
        self.monitor.due_at(time.monotonic() + every)

    def commit_explicit(self, frame, message: str | None) -> CommitHandle:
        """``dart.commit()``: resumable right after the calling statement when it
        is a plain ``dart.commit(...)`` statement in watched code."""
        sites = self.monitor.watched.get(frame.f_code) if frame is not None else None
        spots = None
        if sites is not None:
            stmt = innermost_statement(sites.tree, frame.f_code, frame.f_lasti)
            after = position_after(sites.root, stmt._dart_path) if isinstance(stmt, ast.Expr) else None
            if after is not None and after[0] in ("before", "loop") and call_statement(stmt) is not None:
                kind, path = after
                around = sites.statement_loops.get(stmt._dart_path, ())
                depth = len(path) if kind == "loop" else len(path) - 1
                loops = tuple(l for l in around if len(l.path) <= depth and path[: len(l.path)] == l.path)
                line = node_at(sites.root, path).lineno if path else frame.f_lineno
                try:
                    spots = call_path(frame, FrameSpot(frame, sites, kind, path, line, loops), self.monitor.watched)
                except NotContinuable:
                    spots = None
        resumable = spots is not None
        if spots is None:
            # Not resumable from here, but the state is still saved (for dart.load).
            spots = [FrameSpot(None, None, "explicit", (), frame.f_lineno if frame else 0, ())]
        handle = self._commit(spots, message, resumable=resumable)
        if handle is None:
            raise CaptureError(
                f"dart.commit() at {self.display_name}:{frame.f_lineno} could not capture the program's "
                "state; see the warning above"
            )
        return handle

    # -- ending -----------------------------------------------------------------------
    def finish(self) -> None:
        """Normal end of the program: a last commit (unless every=never), drain,
        mark the run finished."""
        if self._closed:
            return
        if self.options.every is not None:
            last_line = self.tree.body[-1].end_lineno if self.tree.body else 0
            self._commit([FrameSpot(None, None, "end", (), last_line, ())], "finished", resumable=False)
        self._close(status="finished")

    def fail(self, exc: BaseException, status: str = "failed") -> None:
        """The program died of ``exc``: keep the commits made so far, record where."""
        if self._closed:
            return
        tb = exc.__traceback__
        where = None
        while tb is not None:
            if tb.tb_frame.f_globals is self.module.__dict__:
                where = f"{self.display_name}:{tb.tb_lineno}"
            tb = tb.tb_next
        error = {"type": type(exc).__name__, "message": str(exc)[:500], "where": where}
        self._close(status=status, error=error)

    def _close(self, **run_fields) -> None:
        self._closed = True
        self.monitor.stop()
        try:
            self.flusher.close()
        finally:
            self.store.update_run(self.plan.run_id, ended=time.time(), commits=self.commits, **run_fields)
