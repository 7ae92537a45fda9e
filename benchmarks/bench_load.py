"""The first ``dart.load`` in a new process against importing what the objects
need (issue 10: "the first call must not take seconds more than importing the
modules the objects need"), and ``dart show`` / ``dart gc --dry-run`` on the
same store.

A run of a script holding a torch model and a NumPy array of ``--mib`` MiB in
main()'s frame makes the store; then, each in a fresh interpreter, ``--repeat``
times: (a) ``import numpy, torch`` (the baseline), (b) ``import dart`` +
``dart.load(names=["main.model"])`` (a frame-local model), (c) the same for the
big array. Prints medians and the ratios (b)/(a), (c)/(a) with the load average.

    python benchmarks/bench_load.py [--mib 256] [--repeat 5]
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
import sys
import numpy as np
import torch

def main():
    big = np.random.default_rng(0).random({n} // 8)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256))
    for step in range(3):
        big[step] += 1.0
        print("step", step)

main()
'''


def timed(code: str, env: dict, cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=cwd, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    # the model needs torch, the array only numpy: compare each with its own baseline
    args = parser.parse_args()
    env = dict(os.environ, DART_QUIET="1")
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "hold.py"
        script.write_text(SCRIPT.format(n=args.mib << 20))
        store = Path(folder) / "store"
        subprocess.run([sys.executable, "-m", "dart", "run", "--store", str(store), "--every", "0", str(script)],
                       check=True, env=env, cwd=folder, capture_output=True)
        from dart.store import open_store

        commit = next(c for c in open_store(store, create=False).log() if "main()" in c.where).id
        cases = {
            "import numpy, torch (baseline)": "import numpy, torch",
            "import numpy (baseline of the array)": "import numpy",
            "dart.load main.model": f"import dart; dart.load({commit!r}, names=['main.model'], store={str(store)!r})",
            f"dart.load main.big ({args.mib} MiB)":
                f"import dart; dart.load({commit!r}, names=['main.big'], store={str(store)!r})",
            "dart show --no-load": f"import sys; from dart.cli import main; sys.argv[1:] = []; "
                                   f"main(['show', '--no-load', '--store', {str(store)!r}, {commit!r}])",
            "dart gc --dry-run": f"from dart.cli import main; main(['gc', '--dry-run', '--store', {str(store)!r}])",
        }
        times = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, code in cases.items():  # interleaved: the machine's load hits every case alike
                times[name].append(timed(code, env, folder))
    base = statistics.median(times["import numpy, torch (baseline)"])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; medians of {args.repeat}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<36} {median * 1000:8.0f} ms   {median / base:5.2f}x baseline   (+{(median - base) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
