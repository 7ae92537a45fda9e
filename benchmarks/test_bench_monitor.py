"""pytest-benchmark version of the monitor-overhead benchmark (issue 2), quick sizes.

    python -m pytest benchmarks/ --benchmark-only [--benchmark-group-by=param:workload]

Each benchmark runs one workload process (``python SCRIPT``, ``python -m dart
run SCRIPT`` or ``... --every 0.5``) with a fresh temporary store; the timed
value is the whole process.  The workload's own wall and CPU times (what the
targets of issue 2 are about) and the number of commits go into
``extra_info`` (see ``--benchmark-json``).  For the alternating comparison with
ratios and PASS/FAIL, run ``python benchmarks/bench_monitor.py``.

This file lives outside ``tests/`` (``testpaths = ["tests"]``), so the default
``pytest`` / ``pytest tests`` run does not collect it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_monitor  # noqa: E402

pytest.importorskip("pytest_benchmark")

SCALE = float(os.environ.get("DART_BENCH_SCALE", "0.2"))  # about 1 s of workload
ROUNDS = int(os.environ.get("DART_BENCH_ROUNDS", "3"))
HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("config", bench_monitor.CONFIGS)
@pytest.mark.parametrize(
    "workload",
    [
        "loop_heavy",
        pytest.param("torch_train", marks=pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")),
    ],
)
def test_monitor_overhead(benchmark, workload, config):
    env = bench_monitor.clean_env(torch_threads=1)
    runs = []

    def once():
        runs.append(bench_monitor.run_once(sys.executable, workload, config, SCALE, len(runs), env))

    benchmark.group = workload
    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    median = bench_monitor.statistics.median
    benchmark.extra_info.update(
        scale=SCALE,
        workload_s_median=median(r.workload_s for r in runs),
        workload_cpu_s_median=median(r.workload_cpu_s for r in runs),
        commits=[r.commits for r in runs],
    )
    if config != "baseline":
        # dart really ran: at least the final commit at exit, more with --every 0.5.
        assert all(r.commits is not None and r.commits >= 1 for r in runs)
    if config == "every0.5" and min(r.workload_s for r in runs) > 1.0:
        # a commit falls due 0.5 s in, so a workload over 1 s has at least one
        assert min(r.loop_commits for r in runs) >= 1, "no commit inside the workload with --every 0.5"
