"""A run of a program under dart, from choosing how to start to the last commit.

``plan_run`` decides whether a command starts a new run or resumes the newest
unfinished run of the same script and arguments. ``Session`` owns the pieces of
the pipeline for that run (monitor -> coordinator -> capture -> commit writer ->
store), turns safe points into commits, and applies a resume plan
(``dart.resume.restore.plan_resume``). ``dart.runner`` (``dart run``) and
``dart.enable()`` both drive a Session; they differ only in who executes the
module code.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from .capture import (
    Capturer, appended, csvwriter, dataloader, filechanges, loading_commit, pickler, progressbars, statics, textfiles,
)
from .capture.hidden import environment, restore_hidden
from .capture.path import (
    FrameSpot,
    NotContinuable,
    call_path,
    call_on_path,
    describe,
    iteration_count,
    savable,
    short_value,
)
from .config import Options
from .coordinate import LocalTimer, SafePoint
from .errors import (
    CaptureError,
    CommitFailedError,
    DartError,
    DartWarning,
    ResumeError,
    RunBusyError,
    StoreError,
    TransactionError,
)
from .flush import CommitHandle, CommitWriter
from . import rollback
from .flush import _restored_handle as restored_handle
from .astpath import annotate_paths, innermost_statement, node_at, position_after, position_at
from .monitor import Monitor
from .monitor.steps import AtomicSteps
from .monitor.usercode import UserCode
from .monitor.sites import CodeSites, LoopSite
from .monitor.tracked import CountingIterator, SavedLoop, saved_form
from .resume import continuation as cont
from .resume.anchors import anchors_of
from .resume.restore import Program, ResumePlan, plan_resume
from .store import CommitRecord, Lease, Store, open_store
from .store.local import crash_point
from .store.reach import GC_LEASE
from .store.trust import warn_if_foreign

log = logging.getLogger("dart")


def run_key(script: Path, args: list[str], home: Path | None) -> str:
    """Identity of "the same command": the script and its arguments. The script
    is named relative to the folder a local store sits in (so a copied folder
    resumes), or relative to the working directory for a store that is not local
    (so another machine with the same checkout resumes)."""
    base = home if home is not None else Path.cwd()
    try:
        name = os.path.relpath(script, base)
    except ValueError:  # another drive
        name = str(script)
    if name.startswith("..") and home is not None:
        name = str(script)  # outside the store's folder: a copy of the folder does not hold it
    # (with a remote store, "../src/train.py" names the same script in every checkout)
    return xxhash.xxh3_64_hexdigest(json.dumps([name, list(args)]).encode())


@dataclass
class RunPlan:
    """How a command starts: a new run, or the run it continues."""

    store: Store
    run_id: str
    resume_from: CommitRecord | None  # the commit record to continue from
    parent: str | None  # the run's newest durable commit
    lease: Lease  # held: this process advances the run
    command: dict  # what identifies the run (key, script, argv), copied into each commit
    older: list[CommitRecord] = field(default_factory=list)  # to fall back on, newest first
    failed: bool = False  # the run it continues ended with an exception (it was not killed)


#: How long a start waits for another start of the same command to decide.
START_WAIT = 10.0
#: Safe points in a loop over a text file where its line is not found (equal lines
#: nearby) before dart gives up on the loop's current run and counts its next one.
TEXT_FILE_MISSES = 100


def plan_run(options: Options, script: Path, args: list[str], at: str | None = None) -> RunPlan:
    """Start a new run of this command or continue its newest unfinished one.
    Two starts of one command at the same instant are serialized by a start
    lease on the command's key: the second finds the first's run and is told
    it is already running. With ``at`` (a commit name, see
    dart.history.address), start a new run that continues from that commit: a
    branch; the commits after it stay where they are."""
    store = open_store(options.store, mode=options.store_mode, s3_endpoint=options.s3_endpoint)
    if not store.writable:
        _warn(f"store {store.location} is read-only here: a run can resume from it but commits nothing")
    warn_if_foreign(store)
    key = run_key(script, args, store.home)
    command = {"key": key, "script": str(script), "argv": list(args)}
    gate = _wait_for_gc(store)  # no run starts or resumes while `dart gc` collects
    try:
        starting = _start_lease(store, key)
    except BaseException:
        gate.release()
        raise
    try:
        if at is not None:
            return _plan_branch(store, command, at)
        unreadable: list[str] = []
        runs = [r for r in store.list_runs(damage=unreadable) if r.get("key") == key]
        lost = unreadable or not runs or store.runs_without_file()
        if lost and not options.fresh:
            recovered = store.recover_runs(key)  # run files lost or damaged: rebuilt from the records
            for run in recovered:
                _warn(f"the run file of run {run['id']} was missing or damaged; rebuilt it from its commits")
            runs = sorted(runs + recovered, key=lambda r: (r.get("created", 0.0), r.get("id", "")))
        if runs and not options.fresh and runs[-1].get("status") != "finished":
            last = runs[-1]
            lease = store.lock_run(last["id"])  # RunBusyError while it runs elsewhere
            try:
                damage: list[str] = []
                commits = store.log(run=last["id"], damage=damage)
                for problem in damage:
                    _warn(f"store {store.location} is damaged: {problem}")
                resumable = [c for c in commits if c.resumable]
                if commits and commits[0].position.get("kind") == "end":
                    # Its newest commit is the one at the program's end: it was stopped while
                    # the interpreter exited, its work done. It counts as finished.
                    if store.writable:
                        store.update_run(last["id"], status="finished")
                    _warn(f"run {last['id']} had made its final commit {commits[0].short} when it was stopped: "
                          "it counts as finished, and this run starts from the beginning")
                elif resumable:
                    if damage and store.writable and _ref_of(store, last["id"]) != commits[0].id:
                        store.repair_ref(f"runs/{last['id']}", commits[0].id)  # the flusher moves it from here
                    return RunPlan(store, last["id"], resumable[0], commits[0].id, lease, command, resumable[1:],
                                   failed=last.get("status") == "failed")
                elif damage:  # its history is there but damaged: starting over is the user's call
                    raise ResumeError(
                        f"run {last['id']} cannot be resumed: its history in store {store.location} is damaged "
                        f"({damage[0]}) and no intact commit of it can be continued; `dart fsck` tells more",
                        next_step="fresh",
                    )
                elif last.get("branched_from"):  # a branch killed before its first commit: start it again
                    branched = last["branched_from"]
                    return RunPlan(store, last["id"], store.get_commit(branched), branched, lease, command)
                elif store.writable:
                    store.update_run(last["id"], status="abandoned")
            except BaseException:
                lease.release()
                raise
            lease.release()
        run_id = store.create_run(dict(command, cwd=os.getcwd(), pid=os.getpid()))
        return RunPlan(store, run_id, None, None, store.lock_run(run_id), command)
    finally:
        starting.release()
        gate.release()


def _wait_for_gc(store: Store) -> Lease:
    """Take the gc gate for the instant a run starts (dart gc holds it while it
    collects; other starts hold it while they plan, a moment)."""
    said = False
    started = time.monotonic()
    while True:
        try:
            return store.lock_run(GC_LEASE)
        except RunBusyError as exc:
            if not said and time.monotonic() - started > 2.0:
                log.warning("dart: waiting for %s (a `dart gc` collecting store %s) to finish", exc.holder,
                            store.location)
                said = True
            time.sleep(0.05)


def _plan_branch(store: Store, command: dict, at: str) -> RunPlan:
    """A new run that continues from commit ``at`` (``dart checkout``, ``dart run --at``)."""
    from .history.address import resolve_commit
    from .history.environment import check_environment

    record = resolve_commit(store, at)
    if not record.resumable:
        raise ResumeError(
            f"commit {record.short} ({record.where}) cannot be continued: it was taken where the program "
            f"cannot resume (the end of the run, or a dart.commit() outside a plain statement); choose "
            f"another, e.g. {record.short}~1 (`dart log --run {record.run}` lists them)")
    check_environment(record, "resume from", store)
    run_id = store.create_run(dict(command, cwd=os.getcwd(), pid=os.getpid(), branched_from=record.id))
    return RunPlan(store, run_id, record, record.id, store.lock_run(run_id), command)


def _ref_of(store: Store, run_id: str) -> str | None:
    try:
        return store.read_ref(f"runs/{run_id}")
    except StoreError:
        return None


def _root_error(error: DartError) -> DartError:
    """The innermost dart error a failure came from (what actually went wrong)."""
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, DartError):
            error = cause
        cause = cause.__cause__
    return error


def _problem(error: BaseException) -> str:
    """What kind of store failure this is, to warn once per kind."""
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return f"errno {cause.errno}"
        cause = cause.__cause__
    return type(error).__name__


def _warn(message: str) -> None:
    warnings.warn(message, DartWarning, stacklevel=3)


def _start_lease(store: Store, key: str) -> Lease:
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            return store.lock_run(f"start-{key}")
        except RunBusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# Objects that carry no program state worth keeping, only a resource: running
# the assignment that made them again gives an equivalent one. Anything else
# that cannot be pickled (a closure, a generator, a hash object, an instance
# holding a lock) has state a new one would lose: resume refuses instead.
_REBUILDABLE_MODULES = (
    "_thread",
    "threading",
    "concurrent.futures",
    "multiprocessing",
    "queue",
    "tqdm",
    "torch.utils.tensorboard",
    "tensorboardX",
    "matplotlib",
    "wandb",
    "joblib",  # Parallel: settings and a lock (its workers are made per call)
    "sqlite3",  # a connection or cursor: the data is in the database file, connect() again
)


def _modules_named(saved: dict) -> dict:
    """The user modules a commit saved attributes of, imported (resume sets them back
    before the program would import them)."""
    import importlib

    out = {}
    for name in {key.partition(":")[0] for key in saved} - {"__main__"}:
        try:
            out[name] = sys.modules.get(name) or importlib.import_module(name)
        except Exception:  # noqa: BLE001 - named in the warning that its state is not set back
            continue
    return out


def _rebuildable_kind(value) -> bool:
    module = type(value).__module__ or ""
    if module == "queue" and getattr(value, "qsize", lambda: 1)() != 0:
        return False  # a queue with items in it holds state
    return any(module == m or module.startswith(m + ".") for m in _REBUILDABLE_MODULES)


def explicit_commit_form(stmt: ast.stmt | None, pos) -> tuple[str | None, str] | None:
    """How a ``dart.commit(...)`` call at source position ``pos`` is used, when a
    resumed run can continue right after its statement: ``dart.commit()``,
    ``dart.commit().wait()``, ``h = dart.commit()`` or ``cid = dart.commit().wait()``.
    Returns (assigned name or None, "handle" | "id": what the name holds), or None
    for any other use (the statement would do more after the commit than wait)."""
    call = call_on_path(stmt, pos)
    if call is None:
        return None
    target = None
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        target = stmt.targets[0].id
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.simple and stmt.value:
        target = stmt.target.id
    elif not isinstance(stmt, ast.Expr):
        return None
    value = stmt.value
    if value is call:
        return target, "handle"
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "wait"
            and value.func.value is call):
        return target, "id"
    return None


class CommitResult:
    """Saved in a commit as the variable ``h = dart.commit()`` is about to assign:
    loaded back, it is what dart.commit() returned for that commit (its durable
    handle, or its id for ``dart.commit().wait()``), since a run resumed from a
    commit continues right after the statement that took it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self):
        return _commit_result, (self.kind,)


def _commit_result(kind: str):
    cid = loading_commit.get()
    return cid if kind == "id" else restored_handle(0, cid)


class Session:
    def __init__(self, plan: RunPlan, options: Options, module: types.ModuleType, script: Path, source: str):
        self.plan = plan
        self.store = plan.store
        self.options = options
        self.module = module
        self.script = script
        self.source = source
        self.tree = annotate_paths(ast.parse(source, str(script)))
        coroutine = next((n for n in ast.walk(self.tree) if isinstance(n, ast.AsyncFunctionDef)), None)
        if coroutine is not None:  # said once: nothing else would tell why no commit lands inside them
            _warn(f"{script.name} defines async functions ({coroutine.name}() at line {coroutine.lineno}): dart "
                  "commits only outside coroutines, so a loop inside one (run by asyncio.run) is not resumed "
                  "from its middle")
        self.display_name = script.name
        self.source_hash = xxhash.xxh3_64_hexdigest(source.encode())
        self.capturer = Capturer(module, self._rebuild_statement)
        self._frame_defs: dict[str, tuple] = {}  # qualname -> (module AST, def path)
        self._rebuild_paths: dict[tuple, tuple] = {}  # (qualname or None, name) -> statement path
        self.writer = CommitWriter(
            self.store, plan.run_id, plan.parent, staging=options.staging, on_result=self._on_commit_result
        )
        self._failing = False  # commits are failing now (store full, gone, read-only, ...)
        self._store_problems: set = set()  # problems already warned about
        self._stop: StoreError | None = None  # on_store_error=stop: raised at the next safe point
        self.flusher = self.writer.flusher
        user_code = UserCode(script.parent, options.local_modules, options.user_code)
        self.monitor = Monitor(self._on_safe_point, user_code)
        dataloader.install()  # DataLoader iterators created from now on can be saved
        csvwriter.install()  # and csv writers
        progressbars.install()  # and loops over tqdm bars
        # and files it appends to between commits (a journal of first opens in a local store)
        self._appends_journal = (
            os.path.join(self.store.location, "appends", plan.run_id) if os.path.isdir(self.store.location) else None
        )
        appended.install(os.getcwd(), skip=(self.store.location,), journal=self._appends_journal)
        # and files it removes or creates between commits (a journal in a local store)
        self._file_changes = (
            os.path.join(self.store.location, "files", plan.run_id) if os.path.isdir(self.store.location) else None
        )
        filechanges.install(os.getcwd(), self._file_changes, skip=(self.store.location,))
        self._resumable_seqs: set[int] = set()  # commits a resume can start from
        self.coordinator = LocalTimer(options)
        self._warned_loops: set[tuple] = set()
        self._closed = False
        self._anchors: dict[tuple, list[str]] = {}
        self.commits = 0
        self._after_transaction = False  # a dart.transaction(commit=True) asked for a commit
        self._retry_at = 0.0  # perf_counter time before which safe points do not try to commit again
        self._whole_iterators: dict[str, bool] = {}  # counted loops whose iterator pickles as it is
        self._text_misses: dict[tuple, int] = {}  # loops over text files: safe points where the line was not found
        self.steps: AtomicSteps | None = None  # --atomic-steps

    # -- starting ---------------------------------------------------------------
    def prepare_resume(self, progress=None) -> tuple[types.CodeType, ast.Module]:
        """Plan the resume from the run's commit (``dart.resume.restore``), apply
        the plan, and return the continuation's code (and AST) to execute."""
        program = Program(self.module, self.script, self.tree, self.source_hash, self.plan.run_id)
        candidates = [self.plan.resume_from, *self.plan.older]
        skipped = []
        from .history.environment import check_environment

        # A package the saved objects need, missing or at another major version: no
        # older commit would load either; say which (other differences: plan_resume warns).
        check_environment(self.plan.resume_from, "resume from", self.store, warn=False)
        for record in candidates:
            try:
                plan = plan_resume(program, record, self.store, progress)
            except ResumeError as exc:
                # Damage or a variable that cannot be rebuilt: an older commit may do.
                # A changed script: it would not, and is the user's to decide.
                if record is candidates[-1] or not exc.facts.get("older_may_work"):
                    if skipped:
                        exc.message += f" (newer commits could not be continued either: {'; '.join(skipped)})"
                    raise
                skipped.append(f"{record.short}: {exc.message}")
                continue
            if skipped:
                _warn(f"resuming from commit {record.short}, the newest that can be continued; skipped "
                      + "; ".join(skipped))
            self.apply(plan)
            return plan.code, plan.tree
        raise AssertionError("no commit to resume from")  # pragma: no cover - candidates is never empty

    def apply(self, plan: ResumePlan) -> None:
        """Put the program in the state ``plan`` describes: globals, rebuilt
        variables, armed functions, tracked loops, the writer's starting point and
        the random state, in that order."""
        self.monitor.loops.restore(plan.tracked)
        if plan.edited:
            log.warning("dart: %s changed since commit %s; resuming with the edited code", self.display_name, plan.record.short)
        self.writer.seed(plan.state)  # the next commit writes only what changed since this one
        for namespace, values in plan.namespaces:
            namespace.update(values)
        for name, code, where in plan.rebuild:
            try:
                exec(code, self.module.__dict__)
            except Exception as exc:
                raise ResumeError(
                    f"cannot rebuild variable '{name}' by running {where} again: {type(exc).__name__}: {exc}",
                    next_step="fresh",
                ) from exc
        self.monitor.watch(*plan.prologue, self.tree)  # the functions it defined
        self.monitor.watch_new_modules()  # and the user modules it imported
        for arm in plan.arms:
            arm.function.__code__ = arm.variant
            self.monitor.watch_function(arm.variant, arm.node, arm.module, arm.tree)
        for problem in statics.apply(plan.statics, self.module, _modules_named(plan.statics)):
            warnings.warn(f"resuming commit {plan.record.short}: {problem}", DartWarning, stacklevel=2)
        restore_hidden(plan.hidden)
        journal = appended.read_journal(self._appends_journal) if self._appends_journal else {}
        appended.cut_back(plan.record.appended, journal)  # lines appended after the commit are redone
        # Files removed after the commit are back; those made after it are gone too unless
        # the run ended with an exception: what it wrote then may be what the user looks at.
        filechanges.restore(self._file_changes, plan.record.time, undo_made=not self.plan.failed)
        for problem in plan.problems:
            warnings.warn(problem, DartWarning, stacklevel=2)
        if os.environ.get("DART_QUIET", "").strip().lower() in ("", "0", "false", "no"):
            log.warning("dart: resuming run %s from commit %s at %s%s", self.plan.run_id, plan.record.short,
                        describe(plan.position), self._redone(plan.record))

    def _redone(self, record: CommitRecord) -> str:
        """How much work the resume repeats: what ran after the commit before the run stopped."""
        if self.plan.resume_from is not None and self.plan.run_id != record.run:
            return f" (a new run, branched from run {record.run})"
        try:
            ended = self.store.get_run(self.plan.run_id).get("ended")
        except StoreError:
            ended = None
        if ended and ended >= record.time:
            return f"; redoing the {ended - record.time:.1f} s the run ran after that commit"
        return "; redoing the work done after that commit (the run was killed before it could record when)"

    def start(self, code: types.CodeType, tree: ast.Module) -> None:
        """Watch ``code`` (compiled from ``tree``) and arm the first commit."""
        self.monitor.watch(code, tree, self.tree)
        self.coordinator.start(self.monitor)
        rollback._commit_hooks.append(self._commit_after_transaction)
        if self.options.atomic_steps:
            self.steps = AtomicSteps(code, self.tree, rollback.Step)
            self.steps.start()

    def _commit_after_transaction(self, txn) -> None:
        """``dart.transaction(commit=True)`` completed: commit at the next safe point
        (right after the ``with`` statement in watched code), where resume can start."""
        if not self._closed:
            self._after_transaction = True
            self.monitor.due_now()

    # -- committing -----------------------------------------------------------------
    # -- when the store fails --------------------------------------------------------
    def _on_commit_result(self, handle: CommitHandle) -> None:
        """From the flusher thread, once a commit is durable or has failed."""
        if handle.error is None:
            if handle.seq in self._resumable_seqs and handle.time is not None:
                self._resumable_seqs.discard(handle.seq)
                filechanges.prune(handle.time)  # no resume starts before this commit now
            if self._failing:
                self._failing = False
                log.warning("dart: commits are durable again (commit %s)", handle.id[:12])
                self.coordinator.recovered()
            return
        self._failing = True
        self.coordinator.failed()
        error = _root_error(handle.error)
        reason = _problem(handle.error)
        if self.options.on_store_error == "stop":
            self._stop = error
        if reason not in self._store_problems:
            self._store_problems.add(reason)
            head = self.writer.flusher.head
            lost = f"progress since commit {head[:12]} is not saved" if head else "no commit of this run is saved yet"
            then = (
                "dart stops the program at its next safe point (on_store_error=stop)"
                if self.options.on_store_error == "stop"
                else "the program goes on and dart tries again, less and less often; "
                "--on-store-error=stop stops the program instead"
            )
            _warn(f"a commit could not be written to store {self.store.location}: {error.message}; {lost}; {then}")

    def _check_stop(self) -> None:
        if self._stop is not None and not self._closed:
            error, self._stop = self._stop, None
            head = self.writer.flusher.head
            then = (
                f"running the same command again resumes from its last durable commit, {head[:12]}"
                if head
                else "no commit of this run is durable yet"
            )
            raise CommitFailedError(
                f"stopping the program (on_store_error=stop): commits cannot be written to store "
                f"{self.store.location} ({_root_error(error).message}); {then}",
            ) from error

    def _on_safe_point(self, frame, sites: CodeSites, kind: str, path, line: int, site: LoopSite | None) -> None:
        self._check_stop()
        if rollback.is_open():
            return  # never commit the inside of an unfinished transaction: the commit stays due
        if time.perf_counter() < self._retry_at:
            return  # the last try could not capture the state: wait (the commit stays due)
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
        if self.coordinator.agree(SafePoint(frame.f_code.co_qualname, path, kind, line)):
            self._commit(spots, message=None)
            if self._after_transaction:
                self._after_transaction = False
                if self.options.every is None:
                    self.monitor.due_at(None)  # every=never: just the one commit=True asked for

    def _rebuild_statement(self, frame_key: str | None, name: str, value) -> str | None:
        """Where ``name`` (a global, or a local of function ``frame_key``) is
        created by a plain assignment at the top of its body that resume can run
        again; None if there is none (or the value is a generator, which a new
        run of the assignment would restart)."""
        if not _rebuildable_kind(value):
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

    def _saves_whole(self, key: str, iterator) -> bool:
        """Can a counted loop's iterator (a generator of the user's code, maybe in
        enumerate/zip) be saved as it is, so that resume need not replay it
        (replaying runs the generator's body again: its prints, its reads)? Its
        pickling is tried once per loop."""
        known = self._whole_iterators.get(key)
        if known is None:
            known = savable(iterator)
            if known:
                try:
                    pickler.dumps(iterator, main_module=self.module)
                except Exception:  # noqa: BLE001 - then it is replayed, as before
                    known = False
            self._whole_iterators[key] = known
        return known

    def _text_file_found(self, frame, spot: FrameSpot, loop: LoopSite, iterator) -> bool:
        """A loop over a text file (``for line in f``): False to commit at a later
        iteration, when the file's place is not found at this one (equal lines in its
        read-ahead); after many such misses the loop is left to the usual fallback
        (counted from its next start, with a warning)."""
        answer = textfiles.resync_loop(frame, node_at(spot.sites.root, loop.path), iterator)
        if answer != textfiles.NOT_HERE:
            return True
        key = (spot.def_path, loop.path)
        self._text_misses[key] = misses = self._text_misses.get(key, 0) + 1
        return misses > TEXT_FILE_MISSES

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned_loops:
            self._warned_loops.add(key)
            warnings.warn(message, DartWarning, stacklevel=3)

    def _frame_state(self, index: int, spot: FrameSpot, iterators: dict) -> dict | None:
        """The JSON description of one frame on the path; fills ``iterators``.
        None when the frame's stack is not what the analysis expects."""
        frame = spot.frame
        loop_info = []
        live = Monitor.loop_iterators(frame, spot.sites, spot.kind, spot.loops) if frame is not None else None
        if frame is not None and live is None:
            return None  # the stack is not what the analysis expects
        for number, loop in enumerate(spot.loops):
            info = {"path": [list(p) for p in loop.path], "kind": loop.kind, "line": loop.line, "iteration": None}
            iterator = live[number] if live is not None else None
            if type(iterator) in (io.TextIOWrapper, enumerate) and spot.sites is not None:
                if not self._text_file_found(frame, spot, loop, iterator):
                    return None  # `for line in f` whose line is not found here: a later iteration may commit
            if iterator is not None:
                key = cont.iterator_key(index, loop.path)
                if isinstance(iterator, CountingIterator) and self._saves_whole(key, iterator.inner):
                    info["iteration"] = iterator.count
                    iterator = iterator.inner  # a generator saved as its frame: nothing replayed on resume
                elif isinstance(iterator, CountingIterator):
                    iterator = saved_form(iterator)
                    if iterator is None:
                        return None  # this run of the loop began before dart tracked it
                    info["iteration"] = iterator.count
                elif not savable(iterator):
                    self.monitor.loops.track(spot.sites, loop)
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
                    info["target"] = short_value(loop.target, frame)
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
            "route": spot.route,
            "qualname": spot.qualname,
            "def": [list(p) for p in spot.def_path] if spot.def_path is not None else None,
            "kind": spot.kind,
            "path": [list(p) for p in spot.path],
            "line": spot.line,
            "loops": loop_info,
        }
        if spot.blank is not None:
            state["blank"] = spot.blank
        if spot.receiver:
            state["receiver"] = True
        if spot.kind == "loop" and spot.loops and spot.loops[-1].kind == "while" and frame.f_lasti in spot.sites.tested_jumps:
            state["tested"] = True  # taken after the next iteration's test ran (and was true): resume runs the body
        return state

    def _commit(self, spots: list[FrameSpot], message, resumable=True, bind=None) -> CommitHandle | None:
        """``bind``: (name, value) to save as a variable of the innermost frame, the
        target of ``h = dart.commit()``, which a resumed run finds already assigned."""
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
        if bind is not None:
            if frame_locals:
                frame_locals[-1][1][bind[0]] = bind[1]
            else:
                namespace = {**namespace, bind[0]: bind[1]}
        try:
            held = statics.collect(self.module, self.monitor.user_code.modules if self.monitor.user_code else [])
            pods, keep, info = self.capturer.capture(namespace, iterators, frame_locals, held)
        except CaptureError as exc:
            # Trying again at every safe point would cost as much each time (a deep
            # structure that fails only at the recursion limit): safe points are
            # let by until nine times this try's cost has passed (at most 10 %).
            self._retry_at = time.perf_counter() + 9 * (time.perf_counter() - started)
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
            "recreated": sorted(k for k, v in iterators.items() if isinstance(v, SavedLoop)),
            "tracked": self.monitor.loops.recorded(),
            "env": environment(),
            "source": {"file": str(self.script), "hash": self.source_hash},
            "command": self.plan.command,
            "appended": appended.lengths(),
        }
        handle = self.writer.commit(pods, meta)
        if resumable:  # a resume can start from it: the file changes before it are history
            self._resumable_seqs.add(handle.seq)
        del keep
        self.commits += 1
        if self.options.every == 0 and message is None:
            # Every safe point commits: each commit is durable before the program
            # goes on, so a kill repeats at most the iteration in flight.
            try:
                handle.wait()
            except StoreError:
                self._check_stop()  # else: warned once, the program goes on without this commit
        self.coordinator.committed(time.perf_counter() - started)
        return handle

    def commit_explicit(self, frame, message: str | None) -> CommitHandle:
        """``dart.commit()``: resumable right after the calling statement when it
        is one of the forms of :func:`explicit_commit_form` in watched code;
        otherwise the state is still saved and a warning says why a re-run cannot
        continue from there. Refused inside a transaction: a commit never holds
        the inside of an unfinished one."""
        if rollback.is_open():
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "here"
            raise TransactionError(
                f"dart.commit() at {where} was called while a dart.transaction() is open; a commit never "
                "captures an unfinished transaction. Call dart.commit() after the with block, or use "
                "dart.transaction(commit=True) to commit when it completes"
            )
        sites = self.monitor.watched.get(frame.f_code) if frame is not None else None
        spots, bind, why = None, None, None
        if sites is None:
            why = "it is not called from the main script or from a function of it that dart watches"
        else:
            stmt = innermost_statement(sites.tree, frame.f_code, frame.f_lasti)
            form = explicit_commit_form(stmt, position_at(frame.f_code, frame.f_lasti))
            after = position_after(sites.root, stmt._dart_path) if form is not None else None
            if form is None:
                why = ("it is part of a larger expression; write it as a statement of its own: "
                       "`dart.commit()`, `h = dart.commit()` or `dart.commit().wait()`")
            elif after is None or after[0] not in ("before", "loop"):
                why = "no statement follows it where a resumed run could continue"
            else:
                kind, path = after
                around = sites.loops_at(frame.f_lasti)
                depth = len(path) if kind == "loop" else len(path) - 1
                loops = tuple(l for l in around if len(l.path) <= depth and path[: len(l.path)] == l.path)
                line = node_at(sites.root, path).lineno if path else frame.f_lineno
                try:
                    spots = call_path(frame, FrameSpot(frame, sites, kind, path, line, loops), self.monitor.watched)
                except NotContinuable as exc:
                    why = str(exc)
                if spots is not None and form[0] is not None:
                    bind = (form[0], CommitResult(form[1]))
        resumable = spots is not None
        if spots is None:
            # Not resumable from here, but the state is still saved (for dart.load).
            line = frame.f_lineno if frame else 0
            self._warn_once(
                ("explicit", frame.f_code if frame else None, line),
                f"dart.commit() at {os.path.basename(frame.f_code.co_filename) if frame else '?'}:{line} saves "
                f"only the main script's global variables and cannot be resumed from: {why}",
            )
            spots = [FrameSpot(None, None, "explicit", (), line, ())]
        handle = self._commit(spots, message, resumable=resumable, bind=bind)
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
        if self.steps is not None:
            self.steps.stop()
        if self._commit_after_transaction in rollback._commit_hooks:
            rollback._commit_hooks.remove(self._commit_after_transaction)
        self._closed = True
        self.monitor.stop()
        dataloader.uninstall()
        csvwriter.uninstall()
        progressbars.uninstall()
        appended.uninstall()
        filechanges.uninstall(finished=run_fields.get("status") == "finished")
        try:
            self.writer.close(settle=False)  # the run's end is recorded first, then the journal settled
            crash_point("run-end")  # test hook: the last commit is durable, the run's end not recorded
        finally:
            try:
                self.store.update_run(self.plan.run_id, ended=time.time(), commits=self.commits, **run_fields)
            except StoreError as exc:
                # The program's own ending is not dart's to change: say what is lost.
                if _problem(exc) not in self._store_problems:
                    _warn(f"the end of run {self.plan.run_id} could not be recorded in store "
                          f"{self.store.location}: {exc.message}")
            try:
                self.store.settle_journal(self.plan.run_id)
            except StoreError as exc:
                _warn(f"the last commits of run {self.plan.run_id} are durable only in its journal in store "
                      f"{self.store.location} ({exc.message}); the next run of this command makes them durable in place")
