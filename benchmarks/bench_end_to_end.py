"""End-to-end cost of ``dart run`` on a CPU training loop, side by side with a plain run.

    python benchmarks/bench_end_to_end.py [--rounds N] [--steps N] [--python PY]

Each round runs ``benchmarks/workloads/e2e_train.py`` (a ~6.3 M-parameter MLP
trained with Adam, one torch thread, ~30 s) twice, alternating so that drift
hits both alike:

* plain: ``python e2e_train.py STEPS``
* dart:  ``python -m dart run --every 5 --fresh --staging 512M --store TMP/.dart e2e_train.py STEPS``

Every run gets a fresh temporary directory (the script is copied there and
the store lives there), so nothing is written into the repository.  For each
run it records the whole-process wall time (interpreter start, imports, dart's
set-up and final commit included) and the process's peak RSS, taken from
``os.wait4`` (ru_maxrss of exactly that child, its whole life); the workload's
own ``peak_rss_kib`` line (taken before dart's final commit) is shown beside
it.  dart's commits are counted with ``python -m dart log --json``.  All runs
must print the same ``sha256`` of the final weights, or the benchmark stops.

Targets, on the medians: wall time dart / plain <= 1.02, and peak RSS with
dart <= peak RSS without + the staging bound (512 MiB) + 10 % of peak RSS
without.  The exit status is 1 if a target fails.  The machine's noise shows in
the spread of the per-round lines: read a 1-2 % difference with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOAD = Path(__file__).resolve().parent / "workloads" / "e2e_train.py"
EVERY = "5"
STAGING = "512M"
STAGING_MIB = 512
WALL_TARGET = 1.02
RSS_SLACK = 0.10


def last_value(stdout: str, key: str) -> str:
    for line in reversed(stdout.splitlines()):
        if line.startswith(key + " "):
            return line.split()[1]
    raise SystemExit(f"the workload printed no {key!r} line; its output ended with:\n{stdout[-2000:]}")


def run_once(python: str, mode: str, steps: list[str], env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"dart-e2e-{mode}-") as tmp:
        work = Path(tmp)
        shutil.copy(WORKLOAD, work / WORKLOAD.name)
        store = work / ".dart"
        cmd = [python, WORKLOAD.name, *steps]
        if mode != "plain":  # "dart": commits every EVERY s; "never": the monitor alone, no commit
            every = EVERY if mode == "dart" else "never"
            cmd[1:1] = ["-m", "dart", "run", "--every", every, "--fresh", "--staging", STAGING,
                        "--store", str(store)]
        with open(work / "out", "w+") as out, open(work / "err", "w+") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}")
        run = {
            "mode": mode,
            "wall": wall,
            "rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
            "cpu": usage.ru_utime + usage.ru_stime,  # all threads: the flusher's work included
            "self_rss_mib": int(last_value(stdout, "peak_rss_kib")) / 1024,
            "sha": last_value(stdout, "sha256"),
            "commits": None,
        }
        if mode == "dart":
            log = subprocess.run([python, "-m", "dart", "log", "--store", str(store), "--json"],
                                 cwd=work, env=env, capture_output=True, text=True, check=True)
            run["commits"] = len(json.loads(log.stdout))
        return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="plain/dart pairs (default 3)")
    parser.add_argument("--steps", type=int, help="training steps (default: the workload's, ~30 s)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the runs")
    parser.add_argument("--monitor-only", action="store_true",
                        help="also run `dart run --every never` (the monitor without commits) each round")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("DART_")}
    steps = [] if args.steps is None else [str(args.steps)]
    print(f"{WORKLOAD.name} steps={args.steps or 'default'} rounds={args.rounds} python={args.python}")
    print(f"dart run --every {EVERY} --fresh --staging {STAGING}")
    runs = []
    modes = ("plain", "dart", "never") if args.monitor_only else ("plain", "dart")
    for rnd in range(1, args.rounds + 1):
        for mode in modes:
            r = run_once(args.python, mode, steps, env)
            runs.append(r)
            extra = f"  commits {r['commits']}" if mode == "dart" else ""
            print(f"round {rnd} {mode:5}  wall {r['wall']:7.2f} s  cpu {r['cpu']:7.2f} s  peak RSS {r['rss_mib']:7.1f} MiB"
                  f" (workload's own {r['self_rss_mib']:.1f}){extra}", flush=True)

    shas = {r["sha"] for r in runs}
    if len(shas) != 1:
        raise SystemExit(f"FAIL: the runs' final weights differ: {sorted(shas)}")
    print(f"sha256 {shas.pop()} (identical in all {len(runs)} runs)")

    med = {m: {k: statistics.median(r[k] for r in runs if r["mode"] == m) for k in ("wall", "cpu", "rss_mib")}
           for m in modes}
    pairs = [d["wall"] / p["wall"] for p, d in zip(runs[0::len(modes)], runs[1::len(modes)])]
    commits = statistics.median(r["commits"] for r in runs if r["mode"] == "dart")
    ratio = med["dart"]["wall"] / med["plain"]["wall"]
    bound = med["plain"]["rss_mib"] * (1 + RSS_SLACK) + STAGING_MIB
    wall_ok = ratio <= WALL_TARGET
    rss_ok = med["dart"]["rss_mib"] <= bound
    print()
    print(f"{'median':16}{'plain':>12}{'dart':>12}")
    print(f"{'wall time (s)':16}{med['plain']['wall']:12.2f}{med['dart']['wall']:12.2f}")
    print(f"{'cpu time (s)':16}{med['plain']['cpu']:12.2f}{med['dart']['cpu']:12.2f}")
    print(f"{'peak RSS (MiB)':16}{med['plain']['rss_mib']:12.1f}{med['dart']['rss_mib']:12.1f}")
    print(f"{'commits':16}{'-':>12}{commits:12g}")
    print()
    print(f"wall ratio dart/plain {ratio:.4f} (target <= {WALL_TARGET}): {'PASS' if wall_ok else 'FAIL'}"
          f"; per round: {', '.join(f'{x:.3f}' for x in pairs)}; cpu ratio {med['dart']['cpu'] / med['plain']['cpu']:.4f}")
    if "never" in med:
        print(f"monitor alone (--every never) / plain: wall {med['never']['wall'] / med['plain']['wall']:.4f}, "
              f"cpu {med['never']['cpu'] / med['plain']['cpu']:.4f}")
    print(f"peak RSS dart {med['dart']['rss_mib']:.1f} MiB <= plain {med['plain']['rss_mib']:.1f}"
          f" + {STAGING_MIB} staging + 10% = {bound:.1f} MiB: {'PASS' if rss_ok else 'FAIL'}")
    return 0 if wall_ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
