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
