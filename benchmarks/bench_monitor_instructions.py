"""The idle monitor's cost counted in instructions, not seconds (issue 14).

Each workload runs under ``valgrind --tool=cachegrind --cache-sim=no`` (a count of
instructions executed: the same on a loaded machine as on a quiet one) at two
lengths, as ``python SCRIPT`` and as ``python -m dart run --every E SCRIPT`` with
an interval ``E`` no run reaches (the monitor armed, no commit due, one commit at
the end in both lengths). Start-up, imports and that last commit cancel in the
difference of the two lengths, so

    ratio = (dart long - dart short) / (plain long - plain short)

is what dart costs per unit of the program's own work. Target: <= 1.005.

    python benchmarks/bench_monitor_instructions.py [--workloads loop,torch,torch-commits,torch-thread]
        [--jobs N] [--keep DIR] [--json out.json]

Compare only counts of one invocation: a plain run of another version of the
script, or from another path, moved the torch workload's per-step count by 2.6 %
(docs/performance.md, issue 14), more than the target.

Workloads: benchmarks/workloads/loop_heavy.py (pure Python) and torch_train.py
(a small MLP trained with Adam, torch pinned to one thread, 128 and 320 steps);
their SCALE argument sets the length. ``torch-commits`` is torch_train.py with a
commit falling due at the end of epoch 1 in both lengths (what dart's timer does
there), so the steps after it measure the monitor idle *after* a commit; its
plain runs are those of ``torch``. ``torch-thread`` is a control without dart: its
"dart" columns are plain python with one idle thread started before torch is
imported (does a sleeping thread, as dart's session has, cost per step?). (A timed interval cannot be used: under
valgrind the two lengths would commit at different steps and different amounts
of state, which does not cancel.) Under valgrind a run takes 30-60x its normal
time (torch's kernels: 3-6 CPU minutes a torch run), so on a busy machine use
``--jobs`` only for idle cores. ``--keep DIR`` keeps each run's
per-function counts: ``cg_diff`` of the long and short run of one mode, then
``cg_annotate`` of that, shows where the per-step instructions go.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    # name: (script, short scale, long scale, environment of the compared runs)
    "loop": (HERE / "workloads" / "loop_heavy.py", 0.02, 0.06, {}),
    # 2 and 5 epochs of 64 steps: a run takes 3-6 CPU minutes under valgrind, most of it in torch's kernels
    "torch": (HERE / "workloads" / "torch_train.py", 0.04, 0.09, {}),
    "torch-commits": (HERE / "workloads" / "torch_train.py", 0.04, 0.09, {"DART_BENCH_COMMIT_EPOCHS": "1"}),
    # A control, no dart: plain python with one idle thread started first (as dart's session starts its own)
    "torch-thread": (HERE / "workloads" / "torch_train.py", 0.04, 0.09, {"DART_BENCH_IDLE_THREADS": "1"}),
}
CONTROLS = {"torch-thread"}  # workloads whose compared runs are plain python, not dart run


def instructions(cmd: list[str], env: dict, out_file: str = "/dev/null") -> int:
    """Instructions executed by ``cmd`` (cachegrind's "I refs"); the per-function
    counts go to ``out_file`` (read them with cg_annotate / cg_diff)."""
    full = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out_file}", *cmd]
    out = subprocess.run(full, check=False, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    match = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output for {' '.join(cmd)}:\n{out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="loop,torch,torch-commits", help="comma-separated: " + ", ".join(WORKLOADS))
    ap.add_argument("--every", default="100000", help="dart's commit interval for the dart runs (seconds)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="valgrind runs at once (counts do not depend on it; use at most the idle cores)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep each run's per-function counts here (cachegrind.out.WORKLOAD.MODE.LENGTH)")
    ap.add_argument("--json", help="write the counts and ratios here")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONHASHSEED="0", DART_BENCH_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    env = {k: v for k, v in env.items() if not k.startswith("DART_") or k.startswith("DART_BENCH")}
    for switch in ("DART_BENCH_COMMIT_EPOCHS", "DART_BENCH_IDLE_THREADS"):
        env.pop(switch, None)  # set only where a workload asks for it
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    results = {}
    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}; instructions (cachegrind)")
    print("| workload | plain short | plain long | dart short | dart long | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    plain_runs = {}  # (script, scale) -> its count, shared by the workloads of one script
    for name in args.workloads.split(","):
        if name not in WORKLOADS:
            ap.error(f"unknown workload {name!r}; choose among {', '.join(WORKLOADS)}")
        script, short, long, dart_env = WORKLOADS[name]
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
            runs = {}
            for mode in ("plain", "dart"):
                for label, scale in (("short", short), ("long", long)):
                    out_file = (str(Path(args.keep) / f"cachegrind.out.{name}.{mode}.{label}")
                                if args.keep else "/dev/null")
                    if mode == "plain":
                        if (script, scale) not in plain_runs:
                            plain_runs[script, scale] = pool.submit(
                                instructions, [sys.executable, str(script), str(scale)], env, out_file)
                        runs[f"plain {label}"] = plain_runs[script, scale]
                        continue
                    store = Path(tmp) / f"{mode}-{label}"
                    cmd = ([sys.executable, str(script), str(scale)] if name in CONTROLS else
                           [sys.executable, "-m", "dart", "run", "--store", str(store), "--every", args.every,
                            str(script), str(scale)])
                    runs[f"dart {label}"] = pool.submit(instructions, cmd, dict(env, **dart_env), out_file)
            counts = {key: run.result() for key, run in runs.items()}
        ratio = (counts["dart long"] - counts["dart short"]) / (counts["plain long"] - counts["plain short"])
        results[name] = dict(counts, ratio=ratio)
        print(f"| {name} | " + " | ".join(f"{counts[k] / 1e9:.3f} G" for k in
                                          ("plain short", "plain long", "dart short", "dart long"))
              + f" | {ratio:.4f} | <= 1.005 {'PASS' if ratio <= 1.005 else 'FAIL'} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
