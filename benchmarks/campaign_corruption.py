"""Corruption campaign (issue 13): damage a store at random, then check that dart
notices and never loses progress it could keep.

    python benchmarks/campaign_corruption.py [--trials 500] [--seed 1] [--json FILE]

A base store is made per workload by a real run under ``dart run --every 0``,
killed part-way. Each trial copies it and applies one seeded damage: a bit flip,
a truncation, garbage or a deletion of an object, a commit record, a ref or a run
file; garbage refs (NUL bytes, ``../../x``, wrong length); the ``refs/`` or
``runs/`` folder deleted; the newest record deleted; ``store.json`` damaged.
Then:

- ``dart fsck`` must report the damage (exit 1), or refuse the store with one
  ``dart: error:`` line (exit 2) when the damage is to ``store.json``;
- running the same command again must either resume and end with the output of
  the uninterrupted run (lines of the killed run, then the resumed run), or stop
  with one ``dart: error:`` line and exit 2 when fsck found no intact resumable
  commit of the run; never a traceback, never a silent start from the top while
  an intact commit exists, never a wrong result.

Prints a table of outcomes per damage kind and exits 1 if any trial failed.
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
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE.parent / "tests" / "scripts"
WORKLOADS = {"counter_while": ("counter_while.py", 8), "train_numpy": ("train_numpy.py", 12)}
DEADLINE = 120


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DART_")}
    e.update(PYTHONUNBUFFERED="1", PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    return e


def dart(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dart", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=DEADLINE)


def run_and_kill(cmd, cwd, after_lines: int) -> list[str]:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        while len(lines) < after_lines:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{cmd} ended before it printed {after_lines} lines")
            lines.append(line.rstrip("\n"))
        proc.kill()
        rest = proc.communicate(timeout=DEADLINE)[0]
    finally:
        proc.kill()
    return lines + rest.splitlines()


def make_base(folder: Path, name: str) -> dict:
    script, after = WORKLOADS[name]
    work = folder / name
    work.mkdir()
    shutil.copy(SCRIPTS / script, work / script)
    reference = subprocess.run([sys.executable, script], cwd=work, env=env(), capture_output=True, text=True,
                               timeout=DEADLINE).stdout.splitlines()
    cmd = [sys.executable, "-m", "dart", "run", "--store", ".dart", "--every", "0", script]
    killed = run_and_kill(cmd, work, after)
    return {"name": name, "work": work, "cmd": cmd, "reference": reference, "killed": killed}


# ---------------------------------------------------------------------------- damages


def _files(store: Path, kind: str) -> list[Path]:
    folder = {"object": "objects", "record": "commits", "ref": "refs/runs", "run": "runs"}[kind]
    return sorted(p for p in (store / folder).rglob("*") if p.is_file())


def damage(store: Path, rng: random.Random) -> str:
    """Apply one damage; return its description (kind: what)."""
    how = rng.choice(["flip", "flip", "truncate", "garbage", "delete", "special"])
    if how == "special":
        what = rng.choice(["refs-dir", "runs-dir", "newest-record", "ref-nul", "ref-traversal", "ref-short",
                           "store-json", "run-garbage-all"])
        if what == "refs-dir":
            shutil.rmtree(store / "refs")
        elif what == "runs-dir":
            shutil.rmtree(store / "runs")
        elif what == "newest-record":
            ref = _files(store, "ref")[0]
            (store / "commits" / f"{ref.read_text().strip()}.json").unlink()
        elif what.startswith("ref-"):
            value = {"ref-nul": "\0" * 8 + "abc", "ref-traversal": "../../../etc/passwd", "ref-short": "abc"}[what]
            _files(store, "ref")[0].write_text(value)
        elif what == "store-json":
            (store / "store.json").write_bytes(rng.randbytes(12))
        else:
            for path in _files(store, "run"):
                path.write_bytes(rng.randbytes(20))
        return f"special: {what}"
    kind = rng.choice(["object", "object", "record", "record", "ref", "run"])
    path = rng.choice(_files(store, kind))
    data = path.read_bytes()
    if how == "flip" and data:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
        path.write_bytes(data)
    elif how == "truncate" and data:
        path.write_bytes(data[: rng.randrange(len(data))])
    elif how == "garbage":
        path.write_bytes(rng.randbytes(max(1, len(data))))
    else:
        path.unlink()
        how = "delete"
    return f"{how}: {kind}"


# ---------------------------------------------------------------------------- checks


def trial(base: dict, folder: Path, rng: random.Random) -> tuple[str, str, str]:
    """(damage, outcome, failure or '') of one trial."""
    work = folder / "work"
    shutil.copytree(base["work"], work)
    store = work / ".dart"
    what = damage(store, rng)
    fsck = dart("fsck", "--store", store, "--json", cwd=work)
    if "Traceback" in fsck.stderr:
        return what, "fsck-traceback", fsck.stderr[-600:]
    if fsck.returncode == 2:
        if "dart: error:" not in fsck.stderr:
            return what, "fsck-unclear", fsck.stderr[-600:]
        report = None
    elif fsck.returncode == 1:
        report = json.loads(fsck.stdout)
    else:
        return what, "undetected", "fsck found nothing"
    resumable = _intact_resumable(work, report)
    again = subprocess.run(base["cmd"], cwd=work, env=env(), capture_output=True, text=True, timeout=DEADLINE)
    if "Traceback" in again.stderr:
        return what, "traceback", again.stderr[-800:]
    lines, killed, reference = again.stdout.splitlines(), base["killed"], base["reference"]
    if again.returncode == 0:
        faithful = any(killed[:m] + lines == reference for m in range(len(killed) + 1))
        if "resuming run" in again.stderr:
            return (what, "resumed", "") if faithful else (what, "wrong-state", again.stderr[-600:])
        if resumable:
            return what, "silent-restart", again.stderr[-600:]
        return (what, "started-over-said", "") if "dart: warning" in again.stderr else (what, "silent-restart", "")
    if again.returncode == 2 and "dart: error:" in again.stderr:
        if resumable:
            return what, "refused-though-intact", again.stderr[-600:]
        return what, "refused", ""
    return what, "other-exit", f"exit {again.returncode}: {again.stderr[-600:]}"


def _intact_resumable(work: Path, report: dict | None) -> bool:
    """Does an intact, resumable commit of the run exist (by fsck's account)?"""
    if report is None:
        return False
    store = work / ".dart"
    code = (
        "import json, sys\nfrom dart.store import open_store\nfrom dart.store.check import check\n"
        f"r = check(open_store({str(store)!r}, create=False))\n"
        "print(json.dumps([c.resumable for c in r.intact.values()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env(), capture_output=True, text=True,
                         timeout=DEADLINE)
    return out.returncode == 0 and any(json.loads(out.stdout or "[]"))


FAILURES = {"undetected", "fsck-traceback", "fsck-unclear", "traceback", "wrong-state", "silent-restart",
            "refused-though-intact", "other-exit"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="append each trial's result here as a JSON line, as it ends")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="dart-corrupt-") as tmp:
        tmp = Path(tmp)
        bases = [make_base(tmp, name) for name in WORKLOADS]
        for number in range(args.trials):
            base = bases[number % len(bases)]
            folder = tmp / f"trial-{number}"
            folder.mkdir()
            what, outcome, detail = trial(base, folder, random.Random(rng.random()))
            results.append({"trial": number, "workload": base["name"], "damage": what, "outcome": outcome,
                            "detail": detail})
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps(results[-1]) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            if outcome in FAILURES:
                print(f"trial {number} ({base['name']}, {what}): {outcome}\n{detail}", file=sys.stderr)
    by_damage: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_damage[r["damage"]][r["outcome"]] += 1
    print(f"{'damage':28} outcomes")
    for name in sorted(by_damage):
        print(f"{name:28} " + ", ".join(f"{k} {v}" for k, v in sorted(by_damage[name].items())))
    totals = Counter(r["outcome"] for r in results)
    failed = sum(v for k, v in totals.items() if k in FAILURES)
    print(f"\n{len(results)} trials in {time.monotonic() - started:.0f} s (seed {args.seed}): "
          + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) + f"; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
