"""Runs as a user sees them: exceptions and re-runs, --fresh, finished runs,
several scripts and argument lists in one store, `dart log`, and a script
seeing the same world as under plain python."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import (
    DEADLINE,
    PYTHON,
    check_resumed,
    child_env,
    dart_cmd,
    dart_log,
    plain_cmd,
    run,
    run_and_kill,
    script,
)

LOG_FIELDS = {"id", "parent", "run", "time", "position", "location", "message", "bytes_written", "durable", "resumable"}


def traceback_of(stderr: str) -> str:
    """The traceback block of a stderr, without dart's own lines."""
    lines = [line for line in stderr.splitlines() if not line.startswith("dart:")]
    start = next(i for i, line in enumerate(lines) if line.startswith("Traceback"))
    return "\n".join(lines[start:])


@pytest.mark.slow
def test_exception_then_rerun_resumes_before_the_failing_statement(tmp_path):
    target = script("fail_once.py")
    marker = tmp_path / "failed-once"
    # Reference: a run that does not fail (the marker exists already).
    reference_marker = tmp_path / "reference-marker"
    reference_marker.touch()
    reference = run(plain_cmd(target), tmp_path, env=child_env(FAIL_MARKER=str(reference_marker)))
    assert reference.returncode == 0, reference.describe()
    # What plain python prints when the script fails.
    plain_marker = tmp_path / "plain-marker"
    plain_fail = run(plain_cmd(target), tmp_path, env=child_env(FAIL_MARKER=str(plain_marker)))
    assert plain_fail.returncode == 1

    env = child_env(FAIL_MARKER=str(marker))
    cmd = dart_cmd(target, store=tmp_path / "store", every="0")
    failed = run(cmd, tmp_path, env=env)
    assert failed.returncode == 1, failed.describe()
    assert failed.stdout == plain_fail.stdout
    # The traceback is the one plain python prints: the script's line, no dart frames.
    assert traceback_of(failed.stderr) == traceback_of(plain_fail.stderr), failed.describe()
    raise_line = next(
        n for n, text in enumerate(target.read_text().splitlines(), 1) if text.strip().startswith("raise RuntimeError")
    )
    assert f'File "{target}", line {raise_line}, in <module>' in failed.stderr
    for internal in ("dart/runner.py", "dart/session.py", "site-packages/dart"):
        assert internal not in failed.stderr, failed.describe()

    resumed = run(cmd, tmp_path, env=env)
    assert "dart: resuming run" in resumed.stderr, resumed.describe()
    # Only the failing iteration runs again; nothing it did before raising was kept
    # (the final sha256 covers `total` and `seen`).
    assert failed.lines[:-1] + resumed.lines == reference.lines, resumed.describe()
    check_resumed(reference.lines, failed, resumed, max_repeated=1)


@pytest.mark.slow
def test_fresh_starts_over(tmp_path, reference_outputs):
    reference = reference_outputs("train_numpy.py")
    store = tmp_path / "store"
    cmd = dart_cmd(script("train_numpy.py"), store=store, every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=8)
    assert len(killed.lines) < len(reference)
    fresh = run(dart_cmd(script("train_numpy.py"), store=store, every="0", fresh=True), tmp_path)
    assert fresh.returncode == 0, fresh.describe()
    assert "resuming" not in fresh.stderr, fresh.describe()
    assert fresh.lines == reference
    runs = {c["run"] for c in dart_log(store, tmp_path)}
    assert len(runs) == 2


def test_finished_run_rerun_starts_a_new_run(tmp_path):
    target = script("counter_while.py")
    reference = run(plain_cmd(target), tmp_path).lines
    store = tmp_path / "store"
    cmd = dart_cmd(target, store=store, every="0")
    first = run(cmd, tmp_path)
    second = run(cmd, tmp_path)
    for res in (first, second):
        assert res.returncode == 0, res.describe()
        assert res.lines == reference, res.describe()
        assert "resuming" not in res.stderr, res.describe()
    log = dart_log(store, tmp_path)
    runs = [c["run"] for c in log]
    assert len(set(runs)) == 2
    # Newest first: every commit of the second run comes before the first run's.
    newest_run = runs[0]
    assert runs == sorted(runs, key=lambda r: r != newest_run)


@pytest.mark.slow
def test_two_scripts_share_one_store(tmp_path, reference_outputs):
    store = tmp_path / "store"
    a = script("counter_while.py")
    a_reference = run(plain_cmd(a), tmp_path).lines
    b_reference = reference_outputs("train_numpy.py", "2")
    a_cmd = dart_cmd(a, store=store, every="0")
    b_cmd = dart_cmd(script("train_numpy.py"), "2", store=store, every="0")

    a_killed = run_and_kill(a_cmd, tmp_path, after_lines=10)
    b_killed = run_and_kill(b_cmd, tmp_path, after_lines=4)
    assert "resuming" not in b_killed.stderr, b_killed.describe()
    # B resumes its own run, A is untouched by it ...
    b_resumed = run(b_cmd, tmp_path)
    assert "resuming run" in b_resumed.stderr
    assert "counter_while" not in b_resumed.stderr
    k = b_killed.lines
    assert any(k[:m] + b_resumed.lines == b_reference for m in range(len(k) + 1)), b_resumed.describe()
    # ... and A then resumes its own.
    a_resumed = run(a_cmd, tmp_path)
    assert "train_numpy" not in a_resumed.stderr, a_resumed.describe()
    check_resumed(a_reference, a_killed, a_resumed, max_repeated=len(a_reference))
    # A finished script in the shared store does not make the other one start over.
    b_again = run(b_cmd, tmp_path)
    assert b_again.lines == b_reference and "resuming" not in b_again.stderr


@pytest.mark.slow
def test_different_arguments_are_a_different_run(tmp_path, reference_outputs):
    store = tmp_path / "store"
    target = script("train_numpy.py")
    killed = run_and_kill(dart_cmd(target, "3", store=store, every="0"), tmp_path, after_lines=8)
    other = run(dart_cmd(target, "2", store=store, every="0"), tmp_path)
    assert other.returncode == 0, other.describe()
    assert "resuming" not in other.stderr, other.describe()
    assert other.lines == reference_outputs("train_numpy.py", "2")
    resumed = run(dart_cmd(target, "3", store=store, every="0"), tmp_path)
    assert "resuming" in resumed.stderr, resumed.describe()
    reference = reference_outputs("train_numpy.py", "3")
    k = killed.lines
    assert any(k[:m] + resumed.lines == reference for m in range(len(k) + 1)), resumed.describe()


def test_log_json_and_table(tmp_path):
    target = script("counter_while.py")
    store = tmp_path / "store"
    cmd = dart_cmd(target, store=store, every="0")
    assert run(cmd, tmp_path).returncode == 0
    first_run = dart_log(store, tmp_path)
    assert run(cmd, tmp_path).returncode == 0
    rows = dart_log(store, tmp_path)
    assert len(rows) == 2 * len(first_run)
    assert all(LOG_FIELDS <= set(row) for row in rows), rows[0]
    # Newest first.
    times = [row["time"] for row in rows]
    assert times == sorted(times, reverse=True)
    newest_run = rows[0]["run"]
    assert {row["run"] for row in rows[: len(first_run)]} == {newest_run}
    assert len({row["id"] for row in rows}) == len(rows)
    for run_rows in (rows[: len(first_run)], rows[len(first_run) :]):
        # Each commit's parent is the one before it in the same run; the first has none.
        for newer, older in zip(run_rows, run_rows[1:]):
            assert newer["parent"] == older["id"]
            assert newer["run"] == older["run"]
        assert run_rows[-1]["parent"] is None
        assert run_rows[0]["message"] == "finished"
    for row in rows:
        assert isinstance(row["id"], str) and re.fullmatch(r"[0-9a-f]{12,}", row["id"])
        assert isinstance(row["time"], (int, float)) and row["time"] > 0
        assert row["position"].startswith("counter_while.py:"), row["position"]
        assert isinstance(row["location"], dict) and isinstance(row["location"].get("line"), int)
        assert isinstance(row["bytes_written"], int) and row["bytes_written"] >= 0
        assert row["durable"] is True
        assert isinstance(row["resumable"], bool)
    assert sum(row["bytes_written"] for row in rows) > 0
    assert any("while@" in row["position"] for row in rows)
    # --run and -n
    only = dart_log(store, tmp_path, "--run", newest_run, "-n", "3")
    assert [r["id"] for r in only] == [r["id"] for r in rows[:3]]

    table = run([PYTHON, "-m", "dart", "log", "--store", str(store)], tmp_path)
    assert table.returncode == 0, table.describe()
    lines = table.lines
    assert len(lines) == len(rows) + 1
    header = lines[0].split()
    for column in ("COMMIT", "TIME", "RUN", "POSITION"):
        assert column in header
    for line, row in zip(lines[1:], rows):
        assert line.startswith(row["id"][:12])
        assert row["run"] in line and row["position"] in line
    assert table.stderr == ""


def test_script_sees_what_plain_python_shows(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    shutil.copy(script("show_env.py"), folder / "show_env.py")
    plain = run([PYTHON, "sub/show_env.py", "3", "x y"], tmp_path)
    under = run(
        [PYTHON, "-m", "dart", "run", "--store", str(tmp_path / "store"), "--every", "0", "sub/show_env.py", "3", "x y"],
        tmp_path,
    )
    assert plain.returncode == 3
    assert under.returncode == 3, under.describe()
    assert json.loads(under.lines[0]) == json.loads(plain.lines[0])
    assert under.stdout == plain.stdout
    info = json.loads(under.lines[0])
    assert info["argv"] == ["sub/show_env.py", "3", "x y"]
    assert info["path0"] == str(folder.resolve())
    assert info["is_main"] is True


def test_exit_zero_and_default_interval(tmp_path):
    """sys.exit(0) is a normal end; the default interval (no --every) works too."""
    target = script("show_env.py")
    plain = run(plain_cmd(target, "0"), tmp_path)
    under = run([PYTHON, "-m", "dart", "run", "--store", str(tmp_path / "store"), str(target), "0"], tmp_path)
    assert under.returncode == 0 == plain.returncode, under.describe()
    assert under.stdout == plain.stdout


@pytest.mark.slow
def test_finished_stdout_identical_to_plain_python(tmp_path, reference_outputs):
    reference = reference_outputs("train_numpy.py")
    res = run(dart_cmd(script("train_numpy.py"), store=tmp_path / "store", every="0"), tmp_path)
    assert res.returncode == 0, res.describe()
    assert res.stdout == "\n".join(reference) + "\n"


@pytest.mark.parametrize("attempt", range(3))
def test_two_starts_at_once_make_one_run(tmp_path, attempt):
    """Started within the same instant on an empty store: one runs, the other is
    told the run is already running (they race for one start lease)."""
    store = tmp_path / "store"
    cmd = [str(c) for c in dart_cmd(script("counter_while.py"), store=store, every="0")]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=DEADLINE) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2], results
    loser = next(err for _, err, code in results if code == 2)
    assert "is already running in process" in loser and "dart: error:" in loser, loser
    assert len(list((store / "runs").glob("*.json"))) == 1


def test_run_stopped_after_its_final_commit_counts_as_finished(tmp_path):
    """Killed while the interpreter exits, after the end-of-program commit but
    before the run's end was recorded: the work is done, so the next run of the
    command starts over (as after a finished run) instead of redoing the last
    iterations from an older commit."""
    target = script("counter_while.py")
    reference = run(plain_cmd(target), tmp_path).lines
    store = tmp_path / "store"
    cmd = dart_cmd(target, store=store, every="0")
    stopped = run(cmd, tmp_path, env=child_env(DART_TEST_CRASH_AT="run-end"))
    assert stopped.returncode == 70 and stopped.lines == reference, stopped.describe()
    first_run = dart_log(store, tmp_path)[0]
    assert first_run["position"].endswith("(end)")
    again = run(cmd, tmp_path)
    assert again.returncode == 0 and again.lines == reference, again.describe()
    assert "resuming" not in again.stderr, again.describe()
    assert f"run {first_run['run']} had made its final commit {first_run['id'][:12]}" in again.stderr
    runs = run([PYTHON, "-m", "dart", "runs", "--store", str(store), "--json"], tmp_path)
    assert runs.returncode == 0, runs.describe()
    statuses = {r["id"]: r["status"] for r in json.loads(runs.stdout)}
    assert statuses[first_run["run"]] == "finished" and len(statuses) == 2, statuses
