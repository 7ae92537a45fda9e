"""What a dart.transaction costs over a big state that the block changes by 1 %: entry,
commit-exit and rollback, as ratios to copy.deepcopy of the state and to a memcpy of the
whole state (both measured in the same run), and rollback against a memcpy of just the
changed bytes.

    python benchmarks/bench_transaction.py [--gib 1] [--fraction 0.01] [--repeats 5] [--aligned]

The state is one float32 array of 4 KiB rows plus a dict and a list around it; the block
adds 1 to a random `fraction` of the rows, in place. Entry is measured twice: the first
transaction to reach the array (it makes the shadow: one full copy) and a steady entry
(the shadow exists; the previous transaction changed `fraction` of the rows). Both
trackers are measured: kernel dirty pages (where available) and hashing.

Targets (issue 12): steady entry <= 0.05x memcpy; rollback <= 2x the changed bytes' memcpy.
That baseline copies as many bytes as the block changed, from memory (a new place of the
arrays each time), as a rollback must: its source, the shadow, is not in the cache. The
same copy repeated on one pair of small buffers, hot in the cache (this machine's L3 holds
260 MiB), is printed too: it runs 2-3x faster and was the baseline before.

A NumPy array starts 16 bytes into a page, so each changed 4 KiB row dirties two pages
and the rollback copies about twice the changed bytes; `--aligned` puts the rows on page
boundaries (the array over an mmap) to show the cost apart from that. The rollback line
also gives the bytes it copied (the pages the tracker reported).
"""

from __future__ import annotations

import argparse
import copy
import mmap
import os
import statistics
import sys
import time

import numpy as np

from dart import rollback
from dart.delta import available

ROW = 4096


def median_time(fn, repeats, setup=lambda: None):
    times = []
    for _ in range(repeats):
        setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Injected(Exception):
    pass


def measure(state, rows, fraction, repeats, rng):
    weights = state["weights"]
    k = max(1, int(round(rows * fraction)))

    def change():
        weights[rng.choice(rows, k, replace=False)] += 1

    def enter():
        # only the state: the benchmark's own timers must not be rolled back with it
        t = rollback.Transaction(state, frames=False)
        t.__enter__()
        return t

    rollback.release_shadows()
    t0 = time.perf_counter()
    txn = enter()
    first_entry = time.perf_counter() - t0
    change()
    txn.__exit__(None, None, None)
    mode = next(iter(rollback._shadows.values())).mode

    steady, commit_exit, rolled, copied = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        txn = enter()  # the previous transaction changed `fraction` of the rows
        steady.append(time.perf_counter() - t0)
        change()
        t0 = time.perf_counter()
        txn.__exit__(None, None, None)
        commit_exit.append(time.perf_counter() - t0)

    for _ in range(repeats):
        before = weights[:2048].copy()
        txn = enter()
        change()
        exc = Injected()
        t0 = time.perf_counter()
        txn.__exit__(Injected, exc, None)
        rolled.append(time.perf_counter() - t0)
        shadow = next(iter(rollback._shadows.values()))
        if shadow.mode == "dirty":
            copied.append(sum(n for _, n in shadow.tracker.written_ranges()))
        assert np.array_equal(weights[:2048], before)
        change()  # between transactions: the next entry picks these rows up
    return (mode, first_entry, statistics.median(steady), statistics.median(commit_exit), statistics.median(rolled),
            statistics.median(copied) if copied else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--fraction", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--aligned", action="store_true", help="rows on page boundaries (the array over an mmap)")
    args = ap.parse_args()

    nbytes = int(args.gib * (1 << 30)) // ROW * ROW
    rows = nbytes // ROW
    rng = np.random.default_rng(0)
    if args.aligned:
        memory = mmap.mmap(-1, nbytes)
        weights = np.frombuffer(memory, dtype=np.float32).reshape(rows, ROW // 4)
        weights[...] = 1
    else:
        weights = np.ones((rows, ROW // 4), dtype=np.float32)
    state = {"weights": weights, "meta": {"step": 0, "names": [f"layer{i}" for i in range(100)]}, "log": list(range(1000))}

    dst = np.empty_like(weights)
    dst[...] = 0  # pre-faulted
    memcpy = median_time(lambda: np.copyto(dst, weights), args.repeats)
    k = max(1, int(round(rows * args.fraction)))
    # the changed bytes' memcpy, from memory: a rollback's source (the shadow) is not in
    # the cache, so this copies k rows between the two big arrays at a new place each time,
    # in their first 60 % (the whole-state memcpy above left only their ends in the cache)
    offsets = iter(range(0, max(1, int(rows * 0.6) - k), max(1, int(rows * 0.6) // (args.repeats * 4 + 1))))

    def cold_copy():
        at = next(offsets, 0)
        np.copyto(dst[at:at + k], weights[at:at + k])

    changed_memcpy = median_time(cold_copy, args.repeats * 4)
    part_src, part_dst = weights[:k].copy(), np.zeros((k, ROW // 4), dtype=np.float32)
    hot_memcpy = median_time(lambda: np.copyto(part_dst, part_src), args.repeats * 4)
    del dst, part_src, part_dst
    deepcopy = median_time(lambda: copy.deepcopy(state), max(1, args.repeats // 2))

    print(f"state {nbytes / (1 << 30):.2f} GiB, {args.fraction:.1%} of the {rows} rows changed per block "
          f"({k * ROW / (1 << 20):.1f} MiB); load {os.getloadavg()[0]:.1f}; Python {sys.version.split()[0]}; "
          f"dirty tracking: {available().reason or 'yes'}; rows {'page aligned' if args.aligned else 'as NumPy allocates them'}")
    print(f"baselines: memcpy {memcpy * 1e3:.1f} ms, copy.deepcopy {deepcopy * 1e3:.1f} ms, "
          f"memcpy of the changed bytes {changed_memcpy * 1e3:.2f} ms from memory "
          f"({hot_memcpy * 1e3:.2f} ms when the same bytes are copied again and again, hot in the cache)")
    modes = [None] if available() else []
    modes.append(lambda: False)
    real = rollback.available
    for forced in modes:
        if forced is not None:
            rollback.available = forced
        try:
            mode, first, steady, commit_exit, rolled, copied = measure(state, rows, args.fraction, args.repeats, rng)
        finally:
            rollback.available = real
        print(f"\n[{mode}] tracker")
        for name, t in (("first entry (makes the shadow)", first), ("steady entry", steady),
                        ("commit-exit", commit_exit), ("rollback", rolled)):
            print(f"  {name:32s} {t * 1e3:8.2f} ms  {t / memcpy:6.3f}x memcpy  {t / deepcopy:6.3f}x deepcopy"
                  + (f"  {t / changed_memcpy:6.2f}x changed-bytes memcpy ({t / hot_memcpy:.2f}x the hot one)"
                     if name == "rollback" else "")
                  + (f"  (copied {copied / (1 << 20):.1f} MiB = {copied / (k * ROW):.2f}x the changed bytes)"
                     if name == "rollback" and copied is not None else ""))
    rollback.release_shadows()


if __name__ == "__main__":
    main()
