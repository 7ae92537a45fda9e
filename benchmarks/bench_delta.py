"""Change detection on a 1 GiB array with 0 %, 0.1 %, 1 % and 10 % of its rows changed
at random between commits: detection time per strategy (median of repeats), bytes the
commit would copy, and ratios against a plain memcpy of the whole buffer measured in the
same run. Also the price dirty tracking makes the program pay: its own writes, with
the pages write-protected and without.

    python benchmarks/bench_delta.py [--gib 1] [--repeats 5] [--chunks 1048576,65536,4096]

Targets (issue 4): 0 % changed detected in <= 10 ms with dirty-page tracking, <= 100 ms
with the portable strategy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from dart.delta import ChunkTracker, DirtyTracker, available

ROW = 4096  # bytes per row: 1024 float32


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def change_rows(a, fraction, rng):
    """Add 1 to a random `fraction` of the rows (at least one if fraction > 0)."""
    if fraction == 0:
        return 0
    k = max(1, int(round(a.shape[0] * fraction)))
    rows = rng.choice(a.shape[0], k, replace=False)
    a[rows] += 1
    return k


def thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().strip()
    except OSError:
        return "n/a"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunks", default=f"{1 << 20},{1 << 16},{1 << 12}")
    p.add_argument("--fractions", default="0,0.001,0.01,0.1")
    args = p.parse_args(argv)
    nbytes = int(args.gib * (1 << 30)) // ROW * ROW
    chunks = [int(c) for c in args.chunks.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    rng = np.random.default_rng(0)

    a = rng.random(nbytes // 4, dtype=np.float32).reshape(-1, ROW // 4)
    out = np.empty_like(a)
    out.fill(0)  # pre-faulted staging memory
    dirty = available()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, kernel {os.uname().release}, "
          f"THP {thp_mode()}")
    print(f"buffer {nbytes / (1 << 30):.2f} GiB, {a.shape[0]} rows of {ROW} B; dirty tracking: "
          f"{dirty.reason}")

    t_copy = timed(lambda: np.copyto(out, a), args.repeats)
    print(f"memcpy of the whole buffer (pre-faulted): {t_copy * 1e3:.1f} ms, "
          f"{nbytes / t_copy / 1e9:.1f} GB/s\n")

    rows = []
    for chunk in chunks:
        makers = {"hash": lambda: ChunkTracker(nbytes, chunk, "hash"),
                  "hash x2": lambda: ChunkTracker(nbytes, chunk, "hash", threads=2),
                  "compare": lambda: ChunkTracker(nbytes, chunk, "compare")}
        if dirty:  # one at a time: two trackers cannot hold the same pages
            makers["dirty"] = lambda: DirtyTracker(a, chunk)
            makers["dirty+v"] = lambda: DirtyTracker(a, chunk, verify=True)
        for name, make in makers.items():
            t = make()
            t.changed(a)
            for frac in fractions:
                det, tot, copied, changed_bytes = [], [], 0, 0
                for r in range(args.repeats):
                    change_rows(a, frac, rng)
                    t0 = time.perf_counter()
                    t.changed(a)
                    det.append(time.perf_counter() - t0)
                    k = change_rows(a, frac, rng)
                    changed_bytes = k * ROW
                    t0 = time.perf_counter()
                    spans = t.copy_changed(a, out)
                    tot.append(time.perf_counter() - t0)
                    copied = sum(n for _, _, n in spans)
                d, c = statistics.median(det), statistics.median(tot)
                rows.append((chunk, frac, name, d, c, copied, changed_bytes))
                print(f"chunk {chunk >> 10:>5} KiB  {frac * 100:>5.1f} %  {name:<8} detect "
                      f"{d * 1e3:8.2f} ms ({d / t_copy:5.2f}x memcpy)  detect+copy {c * 1e3:8.2f} ms "
                      f"({c / t_copy:5.2f}x)  copied {copied / (1 << 20):9.2f} MiB "
                      f"(changed rows {changed_bytes / (1 << 20):8.2f} MiB)", flush=True)
            if hasattr(t, "close"):
                t.close()
            del t

    # what the program pays for dirty tracking: its own writes, protected vs not
    if dirty:
        print()
        for frac in (0.001, 0.1, 1.0):
            def write():
                if frac == 1.0:
                    a.__iadd__(1)
                else:
                    change_rows(a, frac, rng)
            base = timed(write, args.repeats)
            with DirtyTracker(a, 1 << 20) as t:
                t.changed()
                ts = []
                for _ in range(args.repeats):
                    t.changed()
                    t0 = time.perf_counter()
                    write()
                    ts.append(time.perf_counter() - t0)
            prot = statistics.median(ts)
            print(f"program writes {frac * 100:5.1f} % of rows: {base * 1e3:8.2f} ms unprotected, "
                  f"{prot * 1e3:8.2f} ms write-protected ({prot / base:.2f}x)")
    return rows


if __name__ == "__main__":
    main()
