"""Where does dart's overhead go?  Runs ``dart run`` in-process with probes.

    python benchmarks/diagnose_monitor.py [--every S] [--store DIR] SCRIPT [ARGS...]

Wraps (at run time, without changing dart) the pieces that cost the program
time and prints, at exit, to stderr:

* commits: the application stall of each (``Session._commit``: capture + pickle
  + copying the buffers + handing them to the flusher), min/median/max/total;
* the flusher's background work per commit (``Flusher._write``: write objects,
  fsync, commit record, ref), which competes with the program for cores;
* ``sys.monitoring.restart_events()``: calls and time spent in the call itself
  (the lazy re-instrumentation of every code object it triggers is paid later
  by the program and only shows up in the workload time);
* calls of dart's Python-level safe-point handlers (made only while a commit
  is due) and what the native callbacks see between commits (nothing: they
  return DISABLE in C and are not counted here).

It is a diagnostic, not a benchmark: the probes themselves cost a little.
"""

from __future__ import annotations

import atexit
import statistics
import sys
import threading
import time


def _stats(values: list[float]) -> str:
    if not values:
        return "none"
    ms = [v * 1e3 for v in values]
    return (
        f"n={len(ms)} min={min(ms):.2f} ms median={statistics.median(ms):.2f} ms "
        f"max={max(ms):.2f} ms total={sum(ms):.1f} ms"
    )


def install_probes() -> dict:
    import importlib

    # (``dart.flush`` is also a function in ``dart``'s namespace: import the modules by name.)
    native = importlib.import_module("dart._native")
    flush = importlib.import_module("dart.flush")
    session = importlib.import_module("dart.session")

    probes: dict = {"stall": [], "write": [], "restart": [], "line": 0, "jump": 0, "write_cpu": []}

    original_commit = session.Session._commit

    def _commit(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original_commit(self, *args, **kwargs)
        finally:
            probes["stall"].append(time.perf_counter() - t0)

    session.Session._commit = _commit

    original_write = flush.Flusher._write

    def _write(self, *args, **kwargs):
        t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            return original_write(self, *args, **kwargs)
        finally:
            probes["write"].append(time.perf_counter() - t0)
            probes["write_cpu"].append(time.thread_time() - c0)

    flush.Flusher._write = _write

    mon = sys.monitoring
    original_restart = mon.restart_events

    def restart_events():
        t0 = time.perf_counter()
        try:
            return original_restart()
        finally:
            probes["restart"].append(time.perf_counter() - t0)

    mon.restart_events = restart_events

    original_set_handlers = native.set_handlers

    def set_handlers(on_line, on_jump):
        if on_line is None:
            return original_set_handlers(on_line, on_jump)

        def line(frame, lineno):
            probes["line"] += 1
            return on_line(frame, lineno)

        def jump(frame, src, dst):
            probes["jump"] += 1
            return on_jump(frame, src, dst)

        return original_set_handlers(line, jump)

    native.set_handlers = set_handlers
    return probes


def report(probes: dict, wall0: float, cpu0: float) -> None:
    wall = time.perf_counter() - wall0
    out = sys.stderr
    print("\n== dart overhead probes ==", file=out)
    print(f"process (after probes): wall {wall:.3f} s, cpu {time.process_time() - cpu0:.3f} s", file=out)
    print(f"commit stall (program blocked): {_stats(probes['stall'])}", file=out)
    print(f"flusher write (background, wall): {_stats(probes['write'])}", file=out)
    print(f"flusher write (background, its thread's cpu): {_stats(probes['write_cpu'])}", file=out)
    print(f"restart_events() call: {_stats(probes['restart'])}", file=out)
    print(f"python safe-point handler calls while due: line {probes['line']}, jump {probes['jump']}", file=out)
    print(f"threads alive at exit: {[t.name for t in threading.enumerate()]}", file=out)


def main() -> int:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    probes = install_probes()
    atexit.register(report, probes, wall0, cpu0)
    from dart.cli import main as dart_main

    return dart_main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
