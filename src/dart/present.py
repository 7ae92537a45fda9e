"""How dart reaches people: its own lines on stderr (never stdout), each error
presented once, worded for where the user is, and tracebacks of the user's code
without dart's frames.

Lower layers raise facts (``dart.errors``); the front ends (``dart.cli`` for the
commands, ``dart.enable()`` in a script) hand them to :func:`report_error`,
which words the next step for that front end. A notebook front end would
present the same errors its own way.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import types
import warnings

from .errors import DartError, DartWarning, with_step

_installed = False
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_NATIVE_SOURCES = frozenset({"_monitor.pyx", "_delta.pyx"})  # as Cython names its frames


def setup() -> None:
    """Route the "dart" logger and DartWarning to stderr as ``dart: ...`` lines."""
    global _installed
    if _installed:
        return
    _installed = True
    logger = logging.getLogger("dart")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DartWarning):
            print(f"dart: warning: {message}", file=sys.stderr if file is None else file)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def error_line(exc: DartError, front_end: str) -> str:
    """The line a user sees for ``exc``: the fact, then the next step as
    ``front_end`` ("cli", "enable" or "api") words it."""
    return f"dart: error: {with_step(exc.message, exc.next_step, front_end)}"


def report_error(exc: DartError, front_end: str) -> None:
    print(error_line(exc, front_end), file=sys.stderr)


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(os.path.abspath(d) + os.sep for d in dirs)


def user_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without dart's own frames: the runner above the user's code, and
    below it dart's callbacks with what they called (the standard library, say,
    when Ctrl-C lands while a commit waits), up to the next frame of the user's
    own code (a continuation helper may call back into it)."""
    libraries = _library_dirs()
    kept, inside_dart = [], False
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.startswith(_PACKAGE) or name in _NATIVE_SOURCES:
            inside_dart = True
        elif not inside_dart or not name.startswith(libraries):
            inside_dart = False
            kept.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for entry in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


def report_exception(exc: BaseException) -> None:
    """Print ``exc`` through sys.excepthook as it would look without dart."""
    tb = user_traceback(exc.__traceback__)
    if tb is not None:
        exc = exc.with_traceback(tb)
    sys.excepthook(type(exc), exc, tb)


class progress_on_terminal:
    """``with progress_on_terminal("loading") as tick: tick(done, total)``: a
    transient progress bar on stderr when it is a terminal and the work is big
    enough to be worth one (``total >= least``), nothing otherwise. It starts at
    the first such tick and never takes over stdout (the program's own output,
    e.g. a resumed script's imports printing, stays where it goes)."""

    def __init__(self, what: str, least: int = 0):
        self.what = what
        self.least = least
        self.bar = None
        self._task = None

    def __enter__(self):
        return self._tick if sys.stderr.isatty() else None

    def _tick(self, done, total) -> None:
        if self.bar is None:
            if total is None or total < self.least:
                return
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True, redirect_stdout=False,
                                redirect_stderr=False)
            self._task = self.bar.add_task(self.what, total=total)
            self.bar.start()
        self.bar.update(self._task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
