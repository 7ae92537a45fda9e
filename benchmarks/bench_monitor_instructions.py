"""The idle monitor's cost counted in instructions, not seconds (issue 14).

Each workload runs under ``valgrind --tool=cachegrind --cache-sim=no`` (a count of
instructions executed: the same on a loaded machine as on a quiet one) at two
lengths, as ``python SCRIPT`` and as ``python -m dart run --every E SCRIPT`` with
an interval ``E`` no run reaches (the monitor armed, no commit due, one commit at
the end in both lengths). Start-up, imports and that last commit cancel in the
difference of the two lengths, so

    ratio = (dart long - dart short) / (plain long - plain short)

is what dart costs per unit of the program's own work. Target: <= 1.005.

    python benchmarks/bench_monitor_instructions.py [--workloads loop,torch] [--json out.json]

Workloads: benchmarks/workloads/loop_heavy.py (pure Python) and torch_train.py
(a small MLP trained with Adam, torch pinned to one thread); their SCALE argument
sets the length. Under valgrind a run takes 30-60x its normal time; the torch
runs take a few minutes each (importing torch).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    # name: (script, short scale, long scale)
    "loop": (HERE / "workloads" / "loop_heavy.py", 0.02, 0.06),
    "torch": (HERE / "workloads" / "torch_train.py", 0.09, 0.25),  # ~300 and ~900 steps
}


def instructions(cmd: list[str], env: dict) -> int:
    """Instructions executed by ``cmd`` (cachegrind's "I refs")."""
    full = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", *cmd]
    out = subprocess.run(full, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    match = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output for {' '.join(cmd)}:\n{out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="loop,torch", help="comma-separated: loop, torch")
    ap.add_argument("--every", default="100000", help="dart's commit interval for the dart runs (seconds)")
    ap.add_argument("--json", help="write the counts and ratios here")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONHASHSEED="0", DART_BENCH_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    env = {k: v for k, v in env.items() if not k.startswith("DART_") or k.startswith("DART_BENCH")}
    results = {}
    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}; instructions (cachegrind)")
    print("| workload | plain short | plain long | dart short | dart long | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    for name in args.workloads.split(","):
        script, short, long = WORKLOADS[name]
        counts = {}
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("plain", "dart"):
                for label, scale in (("short", short), ("long", long)):
                    store = Path(tmp) / f"{mode}-{label}"
                    prefix = [sys.executable] if mode == "plain" else [
                        sys.executable, "-m", "dart", "run", "--store", str(store), "--every", args.every]
                    counts[f"{mode} {label}"] = instructions([*prefix, str(script), str(scale)], env)
        ratio = (counts["dart long"] - counts["dart short"]) / (counts["plain long"] - counts["plain short"])
        results[name] = dict(counts, ratio=ratio)
        print(f"| {name} | " + " | ".join(f"{counts[k] / 1e9:.3f} G" for k in
                                          ("plain short", "plain long", "dart short", "dart long"))
              + f" | {ratio:.4f} | <= 1.005 {'PASS' if ratio <= 1.005 else 'FAIL'} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
