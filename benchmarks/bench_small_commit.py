"""What one durable commit of a small state costs (``--every 0``: each commit is
durable before the program goes on), against one atomic small-file write on the
same filesystem (write, fsync, rename, fsync of the directory), measured
alternately in one run. Target (issue 14): <= 2x.

    python benchmarks/bench_small_commit.py [--commits 200] [--dir /tmp]

Also prints the fsyncs per commit (counted by wrapping os.fsync and os.fdatasync) and the median
CPU time of the program's thread per commit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_commit import DartRun  # noqa: E402  (same folder)


def atomic_write(folder: Path, data: bytes) -> None:
    tmp = folder / f"f.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / "state.bin")
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--dir", default=None, help="where the store and the baseline file go (default: a temp dir)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir))
    (root / "plain").mkdir()
    run = DartRun(root / "store", staging=16 << 20)
    state = {"step": 0, "loss": 1.0, "history": [0.5] * 32, "config": {"lr": 1e-3, "name": "small"}}
    fsyncs = [0]
    real = os.fsync, os.fdatasync

    def counting(sync):
        def call(fd):
            fsyncs[0] += 1
            return sync(fd)
        return call

    os.fsync, os.fdatasync = (counting(f) for f in real)
    run.commit(state)  # the first commit writes everything once
    commit_s, commit_cpu, write_s, per_commit = [], [], [], []
    for step in range(args.commits):
        state["step"], state["loss"] = step, 1.0 / (step + 1)
        state["history"][step % 32] = state["loss"]
        before = fsyncs[0]
        t0, c0 = time.perf_counter(), time.thread_time()
        run.commit(state)  # returns once durable
        commit_s.append(time.perf_counter() - t0)
        commit_cpu.append(time.thread_time() - c0)
        per_commit.append(fsyncs[0] - before)
        t0 = time.perf_counter()
        atomic_write(root / "plain", b"x" * 1024)
        write_s.append(time.perf_counter() - t0)
    os.fsync, os.fdatasync = real
    t0 = time.perf_counter()
    run.close()  # settles the run's journal: its files made durable in place
    settle = time.perf_counter() - t0
    c, w = statistics.median(commit_s), statistics.median(write_s)
    ratio = c / w
    load = os.getloadavg()[0]
    print(f"{args.commits} commits, load {load:.1f}")
    print(f"durable commit, median {c * 1e3:.3f} ms (program thread CPU {statistics.median(commit_cpu) * 1e3:.3f} ms, "
          f"{statistics.median(per_commit):.0f} fsyncs)")
    print(f"atomic small-file write, median {w * 1e3:.3f} ms (2 fsyncs)")
    print(f"ratio {ratio:.2f} (target <= 2) {'PASS' if ratio <= 2 else 'FAIL'}")
    print(f"closing the writer (settles the journal of {args.commits + 1} commits): {settle * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
