"""dart: durability, atomicity, replicability and time-versioning for unmodified
Python programs.

    import dart; dart.enable()          # first lines of a script, or
    python -m dart run train.py ARGS    # no edit at all

Commits happen at safe points; re-running the same command after a crash
continues from the newest commit. See the README for the guarantees.
"""

from __future__ import annotations

import ast
import sys

from . import _native  # noqa: F401  (fails early, with a clear message, if the extension is missing)
from .config import resolve as _resolve
from .errors import (
    CaptureError,
    ConfigError,
    CorruptObjectError,
    DartError,
    DartWarning,
    ResumeError,
    ScriptError,
    StoreError,
    TransactionError,
)
from .flush import CommitHandle
from .rollback import Transaction, atomic, transaction

__version__ = "0.1.0"
__all__ = [
    "enable",
    "commit",
    "flush",
    "load",
    "transaction",
    "atomic",
    "Transaction",
    "CommitHandle",
    "DartError",
    "DartWarning",
    "CaptureError",
    "ConfigError",
    "CorruptObjectError",
    "ResumeError",
    "ScriptError",
    "StoreError",
    "TransactionError",
]


def enable(
    store: str | None = None,
    every: float | str | None = None,
    fresh: bool = False,
    user_code: list[str] | None = None,
    staging: str | int | None = None,
    on_store_error: str | None = None,
) -> None:
    """Commit this script's state at safe points from here on, and resume it.

    Call it at the top level of the main script, first thing after ``import
    dart``. ``store`` (default ``DART_STORE`` or ``.dart``) is the directory of
    commits; ``every`` is the commit interval in seconds (``0``: every safe
    point; ``"never"``: only ``dart.commit()``; default ``DART_EVERY`` or 30).
    ``user_code`` names installed packages whose functions may hold commits
    too (modules in the script's folder always may). ``staging`` bounds the
    memory commits copy changed bytes into ("8G", bytes; default
    ``DART_STAGING`` or a quarter of RAM up to 4G). ``on_store_error``: "warn"
    (default: the program goes on when commits cannot be written, dart retries)
    or "stop" (the program is stopped with a message). If an earlier run of the
    same command did not finish, the script continues from its newest commit
    instead of running from here.
    """
    from . import runner

    if runner.active_session() is not None:
        return  # already running under dart (or re-run while resuming)
    from . import present

    present.setup()
    try:
        options = _resolve(
            store=store, every=every, fresh=fresh, user_code=user_code, staging=staging, on_store_error=on_store_error
        )
        runner.enable_in_main(sys._getframe(1), options)
    except DartError as exc:
        # As `dart run` does: one clear line, no traceback, exit status 2.
        present.report_error(exc, "enable")
        raise SystemExit(2) from None


def commit(message: str | None = None) -> CommitHandle:
    """Commit now. Returns as soon as the state is captured; ``.wait()`` on the
    handle blocks until the commit is durable."""
    from . import runner

    session = runner.active_session()
    if session is None:
        raise DartError("dart.commit() needs dart to be running: call dart.enable() first or use `dart run`")
    return session.commit_explicit(sys._getframe(1), message)


def flush(timeout: float | None = None) -> None:
    """Block until every commit made so far is durable."""
    from . import runner

    session = runner.active_session()
    if session is not None:
        session.flusher.drain(timeout)


def load(commit: str | None = None, names=None, store: str | None = None, run_source: bool = False):
    """The variables saved by a commit (default: the newest in the store).
    ``commit`` is any commit name the commands take: an id or unique prefix, a
    tag, a run id (its newest commit), ``RUN@N``, ``HEAD``, ``X~N``.

    Without ``names``, a read-only mapping of the module's globals that loads
    each variable on first access (with what it shares with others); its
    ``frames`` maps each function on the commit's call path, outermost first, to
    the same kind of mapping of its locals: ``v.frames["main"]["model"]``. With
    ``names`` (a name or a list), a dict of just those, reading only the bytes
    they need: a global is ``"w"``, a frame's local ``"main.model"`` (the
    function's qualified name, a dot, the local: ``"Trainer.fit.model"``).

    Objects of classes and functions defined in the committed script were saved
    by reference to it; ``run_source=True`` runs that script's imports and
    definitions (not the rest of it) so they can be loaded. It is off by
    default because it runs code named by the store. Loading any store runs
    code from its pickles: load only stores you trust (``DART_HMAC_KEY`` makes
    dart refuse records and pickles it did not sign). A module the commit's
    objects need that is missing here, or at another major version, stops the
    load with a message naming it; smaller differences warn once."""
    from .capture import SavedVariables
    from .history.address import resolve_commit
    from .history.environment import check_environment
    from .store import open_store
    from .store.trust import warn_if_foreign

    options = _resolve(store=store)
    st = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    warn_if_foreign(st)
    record = resolve_commit(st, "HEAD" if commit is None else commit)
    script = record.source.get("file")
    namespace = _definitions(script) if run_source else None
    hint = None
    if script and not run_source:
        hint = (
            f"if it is an object of a class or function defined in {script}, pass run_source=True to "
            "dart.load to run that script's imports and definitions first (this runs code from it)"
        )
    check_environment(record, "load", st)
    variables = SavedVariables(st, record, main_namespace=namespace, hint=hint)
    if names is None:
        return variables
    if isinstance(names, str):
        names = [names]
    missing = [n for n in names if not variables.has(n)]
    if missing:
        raise DartError(
            f"commit {record.short} has no variable {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(variables.all_names()) or 'none'} (a frame's local is FUNCTION.NAME)"
        )
    return {n: variables.lookup(n) for n in names}


def _definitions(script: str | None) -> dict | None:
    """Classes and functions of the committed script, to load its objects in
    another process (they were saved by reference)."""
    from .resume.continuation import prologue

    if not script:
        return None
    try:
        with open(script, encoding="utf-8") as f:
            tree = ast.parse(f.read(), script)
    except (OSError, SyntaxError):
        return None
    namespace = {"__name__": "__dart_load__", "__file__": script}
    try:
        exec(compile(prologue(tree, {"path": []}), script, "exec", dont_inherit=True), namespace)
    except Exception:
        return None
    return namespace
