"""Crash campaign (issue 13): SIGKILL real training scripts at random instants and
exactly between the writes of the commit protocol, then check the store and the
resumed result.

    python benchmarks/campaign_crash.py [--kills 1000] [--seed 1] [--workloads a,b] [--json FILE]

Each trial runs a workload under ``dart run`` (``--every 0`` or an interval),
kills it, then runs ``dart fsck`` (nothing but garbage may be found) and the same
command again (it must end with the output of the uninterrupted run: the killed
run's lines, then the resumed run's). A kill is either a SIGKILL after a random
number of output lines plus a random delay, or a death exactly at one step of the
protocol (``DART_TEST_CRASH_AT=STEP:N``: after an object's temporary file is
written, after it is renamed into place, the same for the record, before the
ref is renamed) at the N-th commit. Prints outcomes per workload and kill kind
and exits 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE.parent / "tests" / "scripts"
#: name -> (script, its arguments, lines it prints)
WORKLOADS = {
    "numpy_top_level": ("train_numpy.py", [], None),
    "while_counter": ("counter_while.py", [], None),
    "torch_main_sparse": ("sparse_table.py", ["20"], None),
    "torch_dataloader": ("corpus/trainer_dataloader.py", [], None),
}
STEPS = ["object-tmp", "object", "record-tmp", "record", "ref-tmp"]
DEADLINE = 180


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DART_")}
    e.update(PYTHONUNBUFFERED="1", PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", **extra)
    return e


def plain(work: Path, script: str, args: list) -> list[str]:
    done = subprocess.run([sys.executable, script, *args], cwd=work, env=env(), capture_output=True, text=True,
                          timeout=DEADLINE)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed without dart: {done.stderr[-400:]}")
    return done.stdout.splitlines()


def killed_run(cmd, work: Path, rng: random.Random, nlines: int, kind: str) -> tuple[list[str], str]:
    """Run ``cmd`` until it is killed; returns (lines it printed, how it died)."""
    if kind == "protocol":
        step, nth = rng.choice(STEPS), rng.randint(1, 6)
        done = subprocess.run(cmd, cwd=work, env=env(DART_TEST_CRASH_AT=f"{step}:{nth}"), capture_output=True,
                              text=True, timeout=DEADLINE)
        return done.stdout.splitlines(), f"died at {step}:{nth} (exit {done.returncode})"
    after = rng.randint(1, max(1, nlines - 2))
    delay = rng.random() * 0.3
    proc = subprocess.Popen(cmd, cwd=work, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    timer = None
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if len(lines) == after:
                timer = threading.Timer(delay, proc.kill)
                timer.start()
    finally:
        if timer is not None:
            timer.join()
        proc.kill()
        proc.wait()
    return lines, f"SIGKILL after {after} lines + {delay:.2f} s"


def trial(name: str, reference: list[str], folder: Path, rng: random.Random, kinds=("random", "random", "protocol")
          ) -> tuple[str, str, str]:
    script, args, _ = WORKLOADS[name]
    work = folder / "work"
    shutil.copytree(SCRIPTS / Path(script).parent, work) if "/" in script else work.mkdir()
    if "/" not in script:
        shutil.copy(SCRIPTS / script, work / script)
    local = Path(script).name
    every = rng.choice(["0", "0", "0.2"])
    kind = rng.choice(list(kinds))
    cmd = [sys.executable, "-m", "dart", "run", "--store", ".dart", "--every", every, local, *args]
    killed, how = killed_run(cmd, work, rng, len(reference), kind)
    label = f"{kind} every={every}"
    fsck = subprocess.run([sys.executable, "-m", "dart", "fsck", "--store", ".dart", "--json"], cwd=work, env=env(),
                          capture_output=True, text=True, timeout=DEADLINE)
    if (work / ".dart").exists():
        if fsck.returncode != 0:
            return label, "fsck-damage", f"{how}: {fsck.stdout[-800:]}{fsck.stderr[-400:]}"
    again = subprocess.run(cmd, cwd=work, env=env(), capture_output=True, text=True, timeout=DEADLINE)
    lines = again.stdout.splitlines()
    if again.returncode != 0 or "Traceback" in again.stderr:
        return label, "resume-failed", f"{how}: exit {again.returncode}: {again.stderr[-800:]}"
    if killed == reference:
        return label, "finished-before-kill", ""
    if not any(killed[:m] + lines == reference for m in range(len(killed) + 1)):
        return label, "wrong-result", f"{how}\nkilled: {killed[-3:]}\nresumed: {lines[:3]}\n{again.stderr[-400:]}"
    return label, "resumed", ""


FAILURES = {"fsck-damage", "resume-failed", "wrong-result"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, from: " + ", ".join(WORKLOADS))
    parser.add_argument("--kinds", default="random,random,protocol",
                        help="kill kinds to draw from (random, protocol; repeat one to weigh it)")
    parser.add_argument("--json", metavar="FILE", help="append each trial's result here as a JSON line, as it ends")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    rng = random.Random(args.seed)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="dart-crash-") as tmp:
        tmp = Path(tmp)
        references = {}
        for name in names:
            script, wargs, _ = WORKLOADS[name]
            work = tmp / f"ref-{name}"
            shutil.copytree(SCRIPTS / Path(script).parent, work) if "/" in script else work.mkdir()
            if "/" not in script:
                shutil.copy(SCRIPTS / script, work / script)
            references[name] = plain(work, Path(script).name, wargs)
        number = kills = 0
        while kills < args.kills:  # a trial whose run finished before the kill landed does not count
            name = names[number % len(names)]
            folder = tmp / f"trial-{number}"
            folder.mkdir()
            kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
            label, outcome, detail = trial(name, references[name], folder, random.Random(rng.random()), kinds)
            results.append({"trial": number, "workload": name, "kill": label, "outcome": outcome, "detail": detail})
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps(results[-1]) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            number += 1
            kills += outcome != "finished-before-kill"
            if outcome in FAILURES:
                print(f"trial {number} ({name}, {label}): {outcome}\n{detail}", file=sys.stderr)
    table: dict[tuple, Counter] = defaultdict(Counter)
    for r in results:
        table[(r["workload"], r["kill"])][r["outcome"]] += 1
    for (workload, kill), counts in sorted(table.items()):
        print(f"{workload:20} {kill:22} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    totals = Counter(r["outcome"] for r in results)
    failed = sum(v for k, v in totals.items() if k in FAILURES)
    print(f"\n{kills} kills ({len(results)} trials) in {time.monotonic() - started:.0f} s (seed {args.seed}): "
          + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) + f"; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
