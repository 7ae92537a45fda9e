"""Seeded subsets of the reliability campaigns (benchmarks/campaign_*.py): the
full ones (>= 1000 kills, >= 500 damages) are run by hand, figures in
docs/reliability.md. Each subset must end with no failed trial."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import campaign_corruption  # noqa: E402
import campaign_crash  # noqa: E402


@pytest.mark.slow
def test_corruption_campaign_subset(capsys):
    assert campaign_corruption.main(["--trials", "24", "--seed", "7"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "24 trials" in out and "0 failed" in out


@pytest.mark.slow
def test_crash_campaign_subset(capsys):
    code = campaign_crash.main(["--kills", "30", "--seed", "7", "--workloads", "numpy_top_level,while_counter"])
    assert code == 0, capsys.readouterr().err
    assert "30 kills" in capsys.readouterr().out
