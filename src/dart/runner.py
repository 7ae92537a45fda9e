"""Run the main script under dart: ``dart run`` and ``dart.enable()``.

The script runs as ``__main__`` exactly as ``python SCRIPT ARGS`` would run it
(same ``sys.argv``, ``sys.path[0]``, exit code and output); on a re-run of the
same command it continues from the newest commit instead of the top.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import os
import sys
import types
from pathlib import Path

from .config import Options
from .errors import CommitFailedError, DartError, ScriptError
from .present import progress_on_terminal, report_error, report_exception, user_traceback
from .session import Session, plan_run

_active: Session | None = None


def active_session() -> Session | None:
    return _active


def read_script(path: str) -> tuple[Path, str]:
    """The script's absolute path and source; ScriptError if it cannot be run."""
    script = Path(path)
    if not script.exists():
        raise ScriptError(f"no script {path!r} (looked from {os.getcwd()}); check the path")
    if script.is_dir():
        raise ScriptError(f"{path!r} is a directory; give the path of a .py script")
    try:
        source = script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"cannot read script {path!r}: {exc}") from exc
    try:
        ast.parse(source, str(script))
    except SyntaxError as exc:
        raise ScriptError(
            f"{path} does not compile: {exc.msg} (line {exc.lineno}). Fix it and run again; "
            "nothing was run and nothing was written."
        ) from None
    return script.resolve(), source


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _execute(session: Session, code, module: types.ModuleType) -> int:
    """Run ``code`` as the main module, record how it ended, return the exit
    code ``python SCRIPT`` would have had."""
    try:
        exec(code, module.__dict__)
    except SystemExit as exc:
        status = _exit_code(exc)
        if status == 0:
            session.finish()
        else:
            session.fail(exc, status="exited")
        return status
    except KeyboardInterrupt as exc:
        session.fail(exc, status="interrupted")
        report_exception(exc)
        return 130
    except CommitFailedError as exc:  # on_store_error=stop: dart's own error, presented by the front end
        session.fail(exc, status="stopped")
        raise
    except BaseException as exc:
        session.fail(exc)
        report_exception(exc)
        return 1
    session.finish()
    return 0


def _start(session: Session) -> tuple:
    """The code to run: the whole script, or its continuation from the commit."""
    if session.plan.resume_from is not None:
        # A bar on a terminal while a big commit (64 MiB or more of buffers) is read.
        with progress_on_terminal(f"dart: loading commit {session.plan.resume_from.short}", least=64 << 20) as tick:
            code, tree = session.prepare_resume(progress=tick)
    else:
        tree = session.tree
        # dont_inherit: dart's own `from __future__ import annotations` must not reach the script
        code = compile(tree, str(session.script), "exec", dont_inherit=True)
    session.start(code, tree)
    return code


def _end(session: Session, lock) -> None:
    global _active
    if not session._closed:
        session.fail(RuntimeError("dart stopped before the program ended"))
    _active = None
    lock.release()
    sys.stdout.flush()


def quiet() -> bool:
    """``--quiet`` or ``DART_QUIET=1``: no line when a run starts or resumes."""
    return os.environ.get("DART_QUIET", "").strip().lower() not in ("", "0", "false", "no")


def say_start(plan, options: Options) -> None:
    """One line on stderr when a new run starts (a resume says so in Session.apply)."""
    if plan.resume_from is not None or quiet():
        return
    every = options.every
    when = ("only on dart.commit()" if every is None else "at every safe point" if every == 0
            else f"every {every:g} s")
    print(f"dart: run {plan.run_id} started, store {plan.store.location}, commits {when}", file=sys.stderr)


def run_script(script_arg: str, args: list[str], options: Options, at: str | None = None) -> int:
    """``dart run``: returns the exit code the script would have had. ``at``:
    continue from that commit as a new run (a branch) instead."""
    global _active
    script, source = read_script(script_arg)
    plan = plan_run(options, script, args, at=at)
    say_start(plan, options)
    lock = plan.lease
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    module.__builtins__ = builtins
    module.__cached__ = None
    sys.modules["__main__"] = module
    sys.argv = [script_arg, *args]
    sys.path[0] = str(script.parent)
    session = _active = Session(plan, options, module, script, source)
    try:
        return _execute(session, _start(session), module)
    finally:
        _end(session, lock)


def enable_in_main(frame, options: Options) -> None:
    """``dart.enable()`` called at the top level of the main script."""
    global _active
    module = sys.modules.get("__main__")
    if frame.f_code.co_name != "<module>" or module is None or frame.f_globals is not module.__dict__:
        raise ScriptError(
            "dart.enable() must be called at the top level of the main script "
            "(or run the script with `python -m dart run SCRIPT`)"
        )
    path = getattr(module, "__file__", None)
    if not path:
        raise ScriptError(
            "dart.enable() needs the main program to be a script file; "
            "interactive sessions and notebooks are not supported yet"
        )
    script, source = read_script(path)
    plan = plan_run(options, script, sys.argv[1:])
    say_start(plan, options)
    lock = plan.lease
    session = _active = Session(plan, options, module, script, source)
    if plan.resume_from is None:
        # The script is already running: watch its own code from here on.
        session.start(frame.f_code, session.tree)
        _finish_at_exit(session, lock)
        return
    try:
        status = _execute(session, _start(session), module)
    except DartError as exc:
        report_error(exc, "enable")
        status = 2
    finally:
        _end(session, lock)
    # The resumed program has ended; the rest of the original module must not run.
    raise SystemExit(status)


def _finish_at_exit(session: Session, lock) -> None:
    """With dart.enable() the interpreter runs the module; learn how it ended
    from sys.excepthook (uncaught exception) and atexit (every exit)."""
    previous_hook = sys.excepthook

    def excepthook(kind, exc, tb):
        if exc is not None and not session._closed:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            session.fail(exc, status="stopped" if isinstance(exc, CommitFailedError) else status)
        if isinstance(exc, CommitFailedError):
            report_error(exc, "enable")
            return
        tb = user_traceback(tb)
        previous_hook(kind, exc.with_traceback(tb) if exc is not None else exc, tb)

    def at_exit():
        global _active
        try:
            if not session._closed:
                session.finish()
        finally:
            _active = None
            lock.release()

    sys.excepthook = excepthook
    atexit.register(at_exit)
