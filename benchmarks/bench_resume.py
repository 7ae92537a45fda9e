"""Resume to first iteration (issue 14, target 7): a training script killed
after a few steps, resumed under ``dart run``, against the same script written
the usual way (it ``torch.save``s model + Adam state + step, fsync'd, and on
start ``torch.load``s them and calls ``load_state_dict``). Each resume is a
fresh interpreter; the time is from starting it to the first iteration's line
on its stdout. Both resume from files in the page cache (each is resumed
``--repeat`` times, interleaved, so the machine's load hits both alike).

A second plain baseline skips building the model: it ``torch.load``s the
model and optimizer objects themselves (``weights_only=False``), the least a
plain script can do to get the same state back. Also printed: a start from scratch (no checkpoint: import torch, build the
model, first iteration), so that the part beyond it can be compared too.

    python benchmarks/bench_resume.py [--params 20e6] [--repeat 5]

Target: dart's resume <= 1.1x the plain torch.load resume.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = '''
import os, signal, sys
import torch

CHECKPOINT = os.environ.get("BENCH_CHECKPOINT")  # the plain script's own checkpoint file


OBJECTS = os.environ.get("BENCH_OBJECTS")  # or the whole objects, pickled by torch.save


def save(path, state):
    if path:
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())


def main():
    torch.set_num_threads(1)
    if OBJECTS and os.path.exists(OBJECTS):
        model, opt, x, start = torch.load(OBJECTS, weights_only=False)
    else:
        torch.manual_seed(0)
        model = torch.nn.Sequential(*[torch.nn.Linear({width}, {width}) for _ in range({layers})])
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.randn(8, {width})
        start = 0
    if CHECKPOINT and os.path.exists(CHECKPOINT):
        state = torch.load(CHECKPOINT)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"] + 1
    for step in range(start, 1000):
        if not hasattr(sys, "bench_started"):  # a module attribute: not restored by dart
            sys.bench_started = True
            print("first iteration", step, flush=True)
            if os.environ.get("BENCH_EXIT_AT_FIRST"):
                os._exit(0)
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == 3 and os.environ.get("BENCH_KILL"):
            # no loop here: a loop is a safe point, and a resume would land in it
            save(CHECKPOINT, {{"model": model.state_dict(), "opt": opt.state_dict(), "step": step}})
            save(OBJECTS, (model, opt, x, step + 1))
            os.kill(os.getpid(), signal.SIGKILL)


main()
'''


def to_first_iteration(command: list[str], env: dict, cwd: str) -> tuple[float, float, int]:
    """(seconds from start to the first iteration's line, CPU seconds of the
    process (user + system; it exits at that line), its step)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    for line in child.stdout:
        if line.startswith("first iteration"):
            elapsed = time.perf_counter() - started
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            child.communicate()
            return elapsed, usage.ru_utime + usage.ru_stime, int(line.split()[2])
    child.wait(60)
    raise SystemExit(f"{' '.join(command)} printed no first iteration:\n{child.stderr.read()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=20e6, help="model parameters (Adam doubles the state)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    width = 2048
    layers = max(1, round(args.params / (width * width + width)))
    import compileall

    import dart

    # An installed dart has its bytecode compiled; a source checkout run with
    # PYTHONDONTWRITEBYTECODE (this project's machines) would compile ~70 modules
    # at every start: compile them once, as an install does.
    compileall.compile_dir(os.path.dirname(dart.__file__), quiet=1)
    env = dict(os.environ, DART_QUIET="1")
    env.pop("DART_EVERY", None)
    with tempfile.TemporaryDirectory(prefix="dart-bench-resume-") as folder:
        script = Path(folder) / "train.py"
        script.write_text(SCRIPT.format(width=width, layers=layers))
        checkpoint = str(Path(folder) / "plain.pt")
        objects = str(Path(folder) / "objects.pt")
        store = str(Path(folder) / "store")
        dart = [sys.executable, "-m", "dart", "run", "--store", store, str(script)]
        plain = [sys.executable, str(script)]
        # the runs that get killed after step 3: dart commits at every safe point
        subprocess.run(dart, env=dict(env, BENCH_KILL="1", DART_EVERY="0"), cwd=folder, capture_output=True)
        subprocess.run(plain, env=dict(env, BENCH_KILL="1", BENCH_CHECKPOINT=checkpoint, BENCH_OBJECTS=objects),
                       cwd=folder, capture_output=True)
        cases = {
            "from scratch (no checkpoint)": (plain, dict(env, BENCH_EXIT_AT_FIRST="1")),
            "plain torch.load resume": (plain, dict(env, BENCH_EXIT_AT_FIRST="1", BENCH_CHECKPOINT=checkpoint)),
            "plain torch.load of the objects": (plain, dict(env, BENCH_EXIT_AT_FIRST="1", BENCH_OBJECTS=objects)),
            "dart run resume": (dart, dict(env, BENCH_EXIT_AT_FIRST="1")),
        }
        times = {name: [] for name in cases}
        cpu = {name: [] for name in cases}
        steps = {}
        for _ in range(args.repeat):
            for name, (command, case_env) in cases.items():
                elapsed, used, step = to_first_iteration(command, case_env, folder)
                times[name].append(elapsed)
                cpu[name].append(used)
                steps[name] = step
        size = os.path.getsize(checkpoint)
    print(f"{layers} x Linear({width}, {width}) + Adam: {size / 2**20:.0f} MiB of state; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; medians of {args.repeat}")
    for what, values in (("wall time", times), ("CPU time (user + system)", cpu)):
        medians = {name: statistics.median(v) for name, v in values.items()}
        print(f"{what} to the first iteration:")
        for name, median in medians.items():
            print(f"  {name:<32} {median * 1000:7.0f} ms  (step {steps[name]})  {[round(v * 1000) for v in values[name]]}")
        scratch, plain_t, objects_t, dart_t = (medians[n] for n in cases)
        for name, base in (("plain torch.load resume (state dicts)", plain_t),
                           ("plain torch.load of the objects", objects_t)):
            ratio = dart_t / base
            print(f"  dart resume / {name}: {ratio:.3f} (target <= 1.1) {'PASS' if ratio <= 1.1 else 'FAIL'}")
        print(f"  beyond a start from scratch: dart {(dart_t - scratch) * 1000:+.0f} ms, plain state dicts "
              f"{(plain_t - scratch) * 1000:+.0f} ms, plain objects {(objects_t - scratch) * 1000:+.0f} ms")

if __name__ == "__main__":
    main()
