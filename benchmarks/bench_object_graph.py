"""A commit of a large object graph that changes a little (issue 14, target 1):
a dict of N small lists and strings with 1 % of its entries replaced between
commits. Side by side in one run, each commit:

* the commit's stall (capture + staging, the program's thread) against
  ``pickle.dumps`` of the whole dict, both as CPU time of the calling thread
  (steadier than wall time on a shared machine) and as wall time;
* bytes written against the pickled size of the replaced entries.

Targets: stall <= 1.0x pickle.dumps; bytes <= 2x the changed entries.

    python benchmarks/bench_object_graph.py [--entries 200000] [--commits 5]
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_commit import DartRun  # noqa: E402  (same folder)


def entry(i: int) -> list:
    return [i, f"name-{i}", [float(i), i * 2], "x" * (i % 13)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--commits", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    data = {f"key{i}": entry(i) for i in range(args.entries)}
    ns = {"data": data, "step": 0}
    run = DartRun(Path(tempfile.mkdtemp()) / "store", staging=256 << 20)
    run.commit(ns)
    rows = []
    for step in range(1, args.commits + 1):
        picked = rng.sample(sorted(data), args.entries // 100)
        for key in picked:
            data[key] = entry(rng.randrange(10**7))
        ns["step"] = step
        changed = sum(len(pickle.dumps([k, data[k]], 5)) for k in picked)
        t0, c0 = time.perf_counter(), time.thread_time()
        pickle.dumps(data, 5)
        dumps_wall, dumps_cpu = time.perf_counter() - t0, time.thread_time() - c0
        t0, c0 = time.perf_counter(), time.thread_time()
        pods, keep, _ = run.capturer.capture(ns, {}, [])
        handle = run.writer.commit(pods, {"message": None})
        del keep
        stall_wall, stall_cpu = time.perf_counter() - t0, time.thread_time() - c0
        handle.wait()
        rows.append((stall_cpu / dumps_cpu, stall_wall / dumps_wall, handle.bytes_written / changed))
        print(f"commit {step + 1}: stall {stall_cpu * 1e3:.0f} ms CPU / {stall_wall * 1e3:.0f} ms wall; "
              f"pickle.dumps {dumps_cpu * 1e3:.0f} / {dumps_wall * 1e3:.0f} ms; wrote {handle.bytes_written} B "
              f"for {changed} B of changed entries")
    run.close()
    cpu, wall, written = (statistics.median(c) for c in zip(*rows))
    print(f"{args.entries} entries, 1 % replaced, load {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}")
    print(f"median stall / pickle.dumps: CPU {cpu:.2f}, wall {wall:.2f} (target <= 1.0) {'PASS' if cpu <= 1.0 else 'FAIL'}")
    print(f"median bytes written / changed entries: {written:.2f} (target <= 2) {'PASS' if written <= 2 else 'FAIL'}")


if __name__ == "__main__":
    main()
