"""Bytes a commit writes for float training state (issue 14 target 3): a torch model
after an optimizer step, committed through dart's pipeline (capture -> buffer book ->
staging -> flusher -> store), with XOR deltas on the previous version (flush/xordelta.py)
and without them (DART_XOR_MEMORY=0), in the same run. Prints, per optimizer, bytes
written / changed bytes for commits 2..N (target <= 0.7), the stall, and the time the
flusher spent on deltas.

    python benchmarks/bench_xor_delta.py [--params 20e6] [--commits 6] [--optimizers adam,sgd] [--warmup 0]

--warmup N takes N optimizer steps before the first commit: right after its start,
Adam's second moment grows by a large factor at every step (it is an average over
the steps so far), so its bytes change more than later in training.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from bench_commit import DartRun, make_model  # same folder: the benchmark model and pipeline

MiB = 1 << 20


def step(model, opt):
    x = torch.randn(8, model[0].in_features)
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def one(kind: str, params: float, commits: int, xor: bool, tmp: Path, warmup: int = 0) -> dict:
    os.environ["DART_XOR_MEMORY"] = str(4 << 30) if xor else "0"
    model, _ = make_model(params)
    opt = (torch.optim.Adam(model.parameters(), lr=1e-4) if kind == "adam"
           else torch.optim.SGD(model.parameters(), lr=1e-2))
    torch.manual_seed(1)
    for _ in range(1 + warmup):
        step(model, opt)
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    changed = 3 * n if kind == "adam" else n  # weights (+ both moments)
    run = DartRun(tmp / f"{kind}-{xor}.dart", staging=2 * changed)
    run.commit({"model": model, "opt": opt})
    ratios, stalls, durables = [], [], []
    for _ in range(2, commits + 1):
        step(model, opt)
        stall, durable, rec = run.commit({"model": model, "opt": opt})
        ratios.append(rec.bytes_written / changed)
        stalls.append(stall)
        durables.append(durable)
    stats = run.writer.flusher.xor.stats
    run.close()
    return {"ratios": ratios, "stall": statistics.median(stalls), "durable": statistics.median(durables), "xor_s": stats["seconds"] / (commits - 1),
            "changed": changed, "covered": stats["raw_bytes"] / (changed * (commits - 1)),
            "delta_ratio": stats["delta_bytes"] / max(1, stats["raw_bytes"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, default=20e6)
    ap.add_argument("--commits", type=int, default=6)
    ap.add_argument("--optimizers", default="adam,sgd")
    ap.add_argument("--warmup", type=int, default=0, help="optimizer steps before the first commit")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.params:.0f} parameters, {args.commits} commits, "
          f"{args.warmup} warm-up steps")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.optimizers.split(","):
            plain = one(kind, args.params, args.commits, False, Path(tmp), args.warmup)
            xor = one(kind, args.params, args.commits, True, Path(tmp), args.warmup)
            r_plain, r_xor = statistics.median(plain["ratios"]), statistics.median(xor["ratios"])
            print(f"\n## {kind}: {xor['changed'] / MiB:.0f} MiB change per step")
            print("bytes written / changed, commits 2..N: raw path " + " ".join(f"{r:.3f}" for r in plain["ratios"]))
            print("                                       XOR deltas " + " ".join(f"{r:.3f}" for r in xor["ratios"]))
            print(f"median: raw {r_plain:.3f}, XOR {r_xor:.3f} (target <= 0.7) {'PASS' if r_xor <= 0.7 else 'FAIL'}")
            print(f"written as deltas: {xor['covered']:.2f} of the changed bytes, at {xor['delta_ratio']:.3f} of their size")
            print(f"stall median: raw {plain['stall'] * 1e3:.0f} ms, XOR {xor['stall'] * 1e3:.0f} ms; "
                  f"flusher time on deltas per commit {xor['xor_s'] * 1e3:.0f} ms "
                  f"({xor['changed'] / MiB / max(xor['xor_s'], 1e-9):.0f} MiB/s)")
            print(f"time to durable median: raw {plain['durable']:.2f} s, XOR {xor['durable']:.2f} s "
                  f"(ratio {xor['durable'] / plain['durable']:.2f})")


if __name__ == "__main__":
    main()
