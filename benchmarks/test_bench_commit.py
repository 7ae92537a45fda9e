"""pytest-benchmark version of bench_commit.py (issue 4), quick sizes: the program's
stall at a commit (capture + copy of changed chunks into staging) against
torch.save of the same model and optimizer state with fsync, both timed by
pytest-benchmark in the same session.

    python -m pytest benchmarks/test_bench_commit.py --benchmark-only

For the full-size run with ratios and PASS/FAIL: ``python benchmarks/bench_commit.py``.
Outside ``tests/``, so the default ``pytest`` run does not collect it.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("pytest_benchmark")
torch = pytest.importorskip("torch")
import bench_commit  # noqa: E402


@pytest.fixture(scope="module")
def state():
    model, opt = bench_commit.make_model(float(os.environ.get("DART_BENCH_PARAMS", "20e6")), width=2048)
    bench_commit.train_step(model, opt)
    return model, opt


def test_dart_commit_stall(benchmark, state, tmp_path):
    """Timed: what blocks the program (capture + staging); the write goes on in the
    background and is waited for, untimed, before the next round."""
    model, opt = state
    run = bench_commit.DartRun(tmp_path / ".dart", staging=1 << 30)
    ns = {"model": model, "opt": opt}
    run.commit(ns)
    handles = []

    def setup():
        if handles:
            handles.pop().wait()
        bench_commit.train_step(model, opt)

    def stall():
        pods, keep, _ = run.capturer.capture(ns, {}, [])
        handles.append(run.writer.commit(pods, {"message": None}))

    benchmark.pedantic(stall, setup=setup, rounds=5, iterations=1)
    handles.pop().wait()
    run.close()


def test_torch_save_with_fsync(benchmark, state, tmp_path):
    model, opt = state

    def save():
        bench_commit.fsync_save(
            lambda f: torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, f), tmp_path / "s.pt"
        )

    benchmark.pedantic(save, setup=lambda: bench_commit.train_step(model, opt), rounds=5, iterations=1)
