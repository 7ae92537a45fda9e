"""Isolate the cost of dart's armed-but-idle monitor from the rest of dart.

    python benchmarks/diagnose_events.py [--rounds N] [--scale S] [SCRIPT]

Runs SCRIPT (default: workloads/loop_heavy.py) in a fresh process per run,
compiled and exec'd as ``__main__`` the way ``dart run`` does it, under these
modes, alternating:

* ``plain``       no sys.monitoring at all
* ``line+jump``   dart's native callbacks (``dart._monitor.line_event`` /
                  ``jump_event``) registered and LINE|JUMP enabled on the
                  module's code, no commit ever due: every location is
                  DISABLEd the first time it fires (dart's default interval
                  between commits)
* ``line``, ``jump``  one of the two event kinds only
* ``cleared``     ``line+jump``, then 0.2 s in, ``set_local_events(tool, code, 0)``
* ``+restart``    ``line+jump`` plus a thread calling
                  ``sys.monitoring.restart_events()`` every 0.5 s (what the
                  timer does once per commit with ``--every 0.5``), still
                  never due

and prints the median workload CPU and wall time per mode and the ratio to
``plain``.  Nothing of dart but its native callbacks is involved.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("plain", "line+jump", "line", "jump", "+restart", "cleared")


def child(mode: str, script: str, args: list[str]) -> None:
    import threading
    import time

    mon = sys.monitoring
    E = mon.events
    source = Path(script).read_text()
    code = compile(source, script, "exec")
    if not mode.startswith("plain"):
        from dart import _monitor as native

        tool = 4
        mon.use_tool_id(tool, "dart-diagnose")
        native.set_due(False)
        mon.register_callback(tool, E.LINE, native.line_event)
        mon.register_callback(tool, E.JUMP, native.jump_event)
        events = {"line": E.LINE, "jump": E.JUMP}.get(mode, E.LINE | E.JUMP)
        mon.set_local_events(tool, code, events)
        if mode == "+restart":

            def restarter():
                while True:
                    time.sleep(0.5)
                    mon.restart_events()

            threading.Thread(target=restarter, daemon=True).start()
        if mode == "cleared":
            # Armed as above, then (0.2 s in) all of the code's local events are removed:
            # what an idle monitor costs if it switches events off between commits.
            def clearer():
                time.sleep(0.2)
                mon.set_local_events(tool, code, 0)

            threading.Thread(target=clearer, daemon=True).start()
    module = types.ModuleType("__main__")
    module.__file__ = script
    sys.modules["__main__"] = module
    sys.argv = [script, *args]
    exec(code, module.__dict__)


def parse(stdout: str, key: str) -> float:
    for line in reversed(stdout.splitlines()):
        if line.startswith(key + " "):
            return float(line.split()[1])
    raise RuntimeError(stdout[-2000:])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", default="0.3")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("script", nargs="?", default=str(HERE / "workloads" / "loop_heavy.py"))
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for rnd in range(args.rounds):
        order = modes[rnd % len(modes):] + modes[: rnd % len(modes)]
        for mode in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, args.script, args.scale],
                capture_output=True, text=True, check=True,
            ).stdout
            results[mode].append((parse(out, "WORKLOAD_CPU_SECONDS"), parse(out, "WORKLOAD_SECONDS")))
            print(f"  round {rnd + 1} {mode:<10} cpu {results[mode][-1][0]:.3f} s wall {results[mode][-1][1]:.3f} s", flush=True)
    med = statistics.median
    base_cpu = med(c for c, _ in results[modes[0]])
    base_wall = med(w for _, w in results[modes[0]])
    print(f"\npython {sys.version.split()[0]}, {args.rounds} rounds, scale {args.scale}")
    print(f"{'mode':<10} {'cpu med s':>10} {'cpu ratio':>10} {'wall med s':>11} {'wall ratio':>11}")
    for mode in modes:
        c = med(x for x, _ in results[mode])
        w = med(y for _, y in results[mode])
        print(f"{mode:<10} {c:10.3f} {c / base_cpu:10.3f} {w:11.3f} {w / base_wall:11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
