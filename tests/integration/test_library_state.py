"""Library objects that hold live resources, inside the state of a real run
killed with SIGKILL and resumed (capture/resources.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEADLINE, child_env, dart_cmd, plain_cmd, run, script

pytest.importorskip("tensorboard")


def scalars(log_dir: Path) -> dict[int, float]:
    """step -> the value logged last (by wall time) for the tag 'loss', over every event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        points += [(e.wall_time, e.step, e.value) for e in acc.Scalars("loss")] if "loss" in acc.Tags()["scalars"] else []
    return {step: value for _, step, value in sorted(points)}


def test_a_trainer_holding_a_summary_writer_commits_and_resumes(tmp_path):
    """Before, the Trainer did not pickle (the writer's lock): no commit held
    anything and a kill lost all the work. Now the writer is saved as its
    settings and opens a new event file after the resume."""
    ref_dir, work = tmp_path / "ref", tmp_path / "work"
    ref_dir.mkdir(), work.mkdir()
    trainer = script("tensorboard_trainer.py")
    ref = run(plain_cmd(trainer), ref_dir)
    assert ref.returncode == 0, ref.describe()

    out = work / "first.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(dart_cmd(trainer), cwd=work, env=child_env(), stdout=sink, stderr=subprocess.PIPE)
        started = time.monotonic()
        while proc.poll() is None and out.read_text().count("\n") < 8 and time.monotonic() - started < DEADLINE:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    first = out.read_text().splitlines()
    assert 8 <= len(first) < len(ref.lines), (first, err)
    assert b"cannot be saved" not in err and b"not committing" not in err, err.decode()

    again = run(dart_cmd(trainer), work)
    assert again.returncode == 0, again.describe()
    assert "resuming run" in again.stderr, again.describe()
    resumed_at = ref.lines.index(again.lines[0])
    assert resumed_at >= len(first) - 1  # at most the step in flight again
    assert first[:resumed_at] + again.lines == ref.lines

    logged, expected = scalars(work / "runs" / "exp2"), scalars(ref_dir / "runs" / "exp2")
    assert len(list((work / "runs" / "exp2").glob("events.out.tfevents.*"))) == 2
    assert logged.keys() == expected.keys() == set(range(20))
    assert logged == pytest.approx(expected, rel=1e-6)
