"""Library objects that hold a live resource (threads, processes, open event
files) and so do not pickle, saved as what can be made of them again.

* A process or thread pool already shut down (``with Pool() as pool:`` leaves
  ``pool`` behind in the frame): saved as a stand-in that says so if used.
* A tensorboard ``SummaryWriter``: flushed at the commit and saved as its
  settings; after a resume it opens a new event file in the same folder at its
  first use (TensorBoard reads every event file of a folder; points logged
  after the commit by the run that was killed stay in the old file).
"""

from __future__ import annotations

import copyreg
import os
import sys

WRITER_MODULE = "torch.utils.tensorboard.writer"


def pool_types() -> tuple:
    """The process and thread pool classes of the modules the program imported."""
    kinds = []
    pools = sys.modules.get("multiprocessing.pool")
    if pools is not None:
        kinds.append(pools.Pool)
    futures = sys.modules.get("concurrent.futures.thread"), sys.modules.get("concurrent.futures.process")
    kinds += [m.ThreadPoolExecutor if "thread" in m.__name__ else m.ProcessPoolExecutor for m in futures if m is not None]
    return tuple(kinds)


def shut_down(pool) -> bool:
    """Has this pool or executor been shut down (left its ``with`` block)?"""
    state = getattr(pool, "_state", None)
    if isinstance(state, str):
        return state != "RUN"  # multiprocessing.pool: RUN, CLOSE, TERMINATE
    return bool(getattr(pool, "_shutdown", False) or getattr(pool, "_shutdown_thread", False))


class ShutDown:
    """Stands in for a pool or executor that was already shut down when it was
    saved (``with Pool() as pool:`` leaves ``pool`` behind): it cannot be used,
    so nothing of it is kept but its kind, and any use says so."""

    def __init__(self, kind: str):
        self.kind = kind

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"this {self.kind} was shut down before dart's commit; a resumed run cannot use it. "
                           "Create a new one where it is needed")

    def __reduce__(self):
        return ShutDown, (self.kind,)

    def __repr__(self):
        return f"<{self.kind}, shut down (saved by dart)>"


def summary_writer_class():
    """tensorboard's SummaryWriter class if the program imported it, else None."""
    module = sys.modules.get(WRITER_MODULE)
    return getattr(module, "SummaryWriter", None) if module is not None else None


def reduce_summary_writer(writer):
    """The writer without its event-file writers (threads and queues): they are
    made again on its next use, as after ``close()``."""
    if writer.all_writers is not None:
        writer.flush()  # what it logged before the commit is on disk with it
    state = dict(writer.__dict__, file_writer=None, all_writers=None)
    return copyreg.__newobj__, (type(writer),), state


# -- logging -------------------------------------------------------------------------
# A logger pickles by name only, so a resumed run got the logger without the
# handlers main() had attached before the commit (its log lines went nowhere),
# and a handler did not pickle at all (its lock), stopping every commit in a
# function that kept one in a local. Both are saved as what they are configured
# to do; a file handler reopens its file for appending.


def logging_types() -> tuple:
    """(Logger, RootLogger, FileHandler, StreamHandler, NullHandler) if the program imported logging, else ()."""
    logging = sys.modules.get("logging")
    if logging is None:
        return ()
    return logging.Logger, logging.RootLogger, logging.FileHandler, logging.StreamHandler, logging.NullHandler


def reduce_logging(obj, kinds: tuple):
    """(callable, args, state) for a logger or a plain file/stream/null handler, or
    NotImplemented for other handlers (their own pickling, if any, applies). A
    logger with a handler of another kind (a RichHandler, a rotating file) is
    saved by name, as pickle itself does."""
    logger, root, file_handler, stream_handler, null_handler = kinds
    if isinstance(obj, logger):
        name = "" if isinstance(obj, root) else obj.name
        if not all(_savable_handler(h, kinds) for h in obj.handlers):
            return logging_by_name, (name,)  # as pickle saves it: the process's logger, as configured there
        return _configured_logger, (name, obj.level, obj.propagate, obj.disabled, list(obj.handlers))
    handler_state = {"level": obj.level, "formatter": obj.formatter, "filters": list(obj.filters), "_name": obj._name}
    if type(obj) is null_handler:
        return null_handler, (), handler_state
    if type(obj) is file_handler:
        obj.flush()
        mode = "a" if "w" in obj.mode else obj.mode
        try:
            size = os.fstat(obj.stream.fileno()).st_size if obj.stream is not None else None
        except (OSError, ValueError):
            size = None
        return _file_handler, (obj.baseFilename, mode, obj.encoding, obj.delay, obj.errors, size), handler_state
    rotating = _rotating_args(obj)
    if rotating is not None:
        obj.flush()
        return _rotating_handler, (type(obj).__name__, obj.baseFilename, rotating, _stream_size(obj)), handler_state
    if type(obj) is stream_handler and obj.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream = "stdout" if obj.stream in (sys.stdout, sys.__stdout__) else "stderr"
        return _stream_handler, (stream,), handler_state
    return NotImplemented


def _savable_handler(handler, kinds) -> bool:
    _, _, file_handler, stream_handler, null_handler = kinds
    kind = type(handler)
    return kind is file_handler or kind is null_handler or _rotating_args(handler) is not None or (
        kind is stream_handler and handler.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    )


def _rotating_args(handler) -> dict | None:
    """The settings of a RotatingFileHandler / TimedRotatingFileHandler (exactly those
    types), as keyword arguments; None for any other handler."""
    handlers = sys.modules.get("logging.handlers")
    kind = type(handler)
    if handlers is None or kind not in (handlers.RotatingFileHandler, handlers.TimedRotatingFileHandler):
        return None
    common = {"encoding": handler.encoding, "delay": handler.delay, "errors": handler.errors}
    if kind is handlers.RotatingFileHandler:
        mode = "a" if "w" in handler.mode else handler.mode
        return dict(common, mode=mode, maxBytes=handler.maxBytes, backupCount=handler.backupCount)
    return dict(common, when=handler.when, interval=handler.interval // _unit_seconds(handler.when),
                backupCount=handler.backupCount, utc=handler.utc, atTime=handler.atTime)


def _unit_seconds(when: str) -> int:
    when = when.upper()
    if when.startswith("W"):
        return 7 * 24 * 3600
    return {"S": 1, "M": 60, "H": 3600, "D": 24 * 3600, "MIDNIGHT": 24 * 3600}.get(when, 1)


def _stream_size(handler) -> int | None:
    try:
        return os.fstat(handler.stream.fileno()).st_size if handler.stream is not None else None
    except (OSError, ValueError):
        return None


def _rotating_handler(kind: str, path: str, settings: dict, size: int | None):
    """A rotating file handler as configured, appending to its file cut back to its
    size at the commit (files it rotated away since stay as they are)."""
    import logging.handlers

    if size is not None and os.path.exists(path) and os.path.getsize(path) > size:
        os.truncate(path, size)
    return getattr(logging.handlers, kind)(path, **settings)


def logging_by_name(name):
    import logging

    return logging.getLogger(name or None)


def _file_handler(path, mode, encoding, delay, errors, size=None):
    """The handler, appending to its file cut back to its size at the commit (as
    dart does for open files: lines logged after the commit are logged again)."""
    import logging

    if size is not None and os.path.exists(path) and os.path.getsize(path) > size:
        os.truncate(path, size)
    return logging.FileHandler(path, mode, encoding, delay, errors)


def _stream_handler(stream):
    import logging

    return logging.StreamHandler(getattr(sys, stream))


def _configured_logger(name, level, propagate, disabled, handlers):
    """The process's logger of that name, configured as the saved one was: its
    handlers replace the ones it has now (set up again by module code re-run on
    resume, or none)."""
    import logging

    found = logging.getLogger(name or None)
    found.setLevel(level)
    found.propagate, found.disabled = propagate, disabled
    for handler in list(found.handlers):
        found.removeHandler(handler)
    for handler in handlers:
        found.addHandler(handler)
    return found
