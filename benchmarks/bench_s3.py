"""Commit stall and time to durable with an S3 store against a local store, on the
same training state, measured in one run (issue 11). Target: stall ratio <= 1.1
(uploads happen on the flusher thread: the program waits only for capture).

The S3 store is a moto server process on 127.0.0.1 (tests/integration/s3server.py),
so "time to durable" measures dart's upload path against a local, in-memory server,
not a real network: a real bucket adds its latency and bandwidth to it, never to
the stall. The two stores take turns commit by commit so that both see the same
machine load; figures are medians.

    python benchmarks/bench_s3.py [--params 8e6] [--frozen-mib 256] [--commits 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from dart.capture import Capturer  # noqa: E402
from dart.flush import CommitWriter  # noqa: E402
from dart.store import open_store  # noqa: E402

MiB = 1 << 20


class Committer:
    """dart's commit path (capture -> staging -> flusher -> store) on one store."""

    def __init__(self, location: str, staging: int, endpoint: str | None = None):
        self.store = open_store(location, s3_endpoint=endpoint)
        self.capturer = Capturer(types.ModuleType("__main__"))
        run = self.store.create_run({"key": "bench"})
        self.writer = CommitWriter(self.store, run, None, staging=staging)

    def commit(self, namespace) -> tuple[float, float, int]:
        """(stall s, durable s, bytes written)."""
        t0 = time.perf_counter()
        pods, keep, _ = self.capturer.capture(namespace, {}, [])
        handle = self.writer.commit(pods, {"message": None})
        del keep
        stall = time.perf_counter() - t0
        handle.wait()
        return stall, time.perf_counter() - t0, handle.bytes_written

    def close(self):
        self.writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=8e6, help="float32 weights (plus two Adam moments)")
    parser.add_argument("--frozen-mib", type=int, default=256, help="an array that never changes")
    parser.add_argument("--commits", type=int, default=8)
    args = parser.parse_args()

    from s3server import AWS_ENV, MotoServer

    os.environ.update(AWS_ENV)
    server = MotoServer()
    rng = np.random.default_rng(0)
    n = int(args.params)
    state = {
        "w": rng.standard_normal(n, dtype=np.float32),
        "m": np.zeros(n, np.float32),
        "v": np.zeros(n, np.float32),
        "frozen": np.ones(args.frozen_mib * MiB // 4, np.float32),
        "step": 0,
    }
    total = sum(a.nbytes for a in state.values() if isinstance(a, np.ndarray))
    print(f"# commit stall and time to durable: S3 (moto on 127.0.0.1) vs local store")
    print(f"state {total / MiB:.0f} MiB: 3 x {n * 4 / MiB:.0f} MiB changed at every step, "
          f"{args.frozen_mib} MiB never; {args.commits} commits each; load average {os.getloadavg()[0]:.2f} at start")
    staging = 2 * total
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Committer(str(Path(tmp) / "local.dart"), staging)
            remote = Committer(f"s3://{server.new_bucket()}/bench", staging, server.endpoint)
            figures = {"local": [], "s3": []}
            for k in range(args.commits + 1):
                state["w"] -= 1e-3 * state["m"] + 1e-4
                state["m"] = 0.9 * state["m"] + 0.1 * state["w"]
                state["v"] = 0.99 * state["v"] + 0.01 * state["w"] ** 2
                state["step"] = k
                order = [("local", local), ("s3", remote)] if k % 2 else [("s3", remote), ("local", local)]
                for name, committer in order:
                    stall, durable, wrote = committer.commit(state)
                    if k:  # the first commit writes everything: reported apart
                        figures[name].append((stall, durable, wrote))
                    else:
                        print(f"commit 1 ({name}, everything): stall {stall * 1e3:.0f} ms, durable {durable:.2f} s, "
                              f"wrote {wrote / MiB:.0f} MiB")
            local.close()
            remote.close()
    finally:
        server.stop()
    med = {name: [statistics.median(x[i] for x in rows) for i in range(3)] for name, rows in figures.items()}
    for name, (stall, durable, wrote) in med.items():
        print(f"{name:5s}: median stall {stall * 1e3:.1f} ms, time to durable {durable:.2f} s, "
              f"wrote {wrote / MiB:.0f} MiB per commit")
    stall_ratio = med["s3"][0] / med["local"][0]
    durable_ratio = med["s3"][1] / med["local"][1]
    print(f"stall ratio S3/local {stall_ratio:.2f} (target <= 1.1) {'PASS' if stall_ratio <= 1.1 else 'FAIL'}")
    print(f"time-to-durable ratio S3/local {durable_ratio:.2f} (no target: network/server bound)")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0 if stall_ratio <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
