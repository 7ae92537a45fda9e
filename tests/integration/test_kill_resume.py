"""SIGKILL a training script at several points, run the same command again, and
check that killed + resumed output is the uninterrupted output (at most the
iteration in flight printed twice) and that the final state is bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import (
    PYTHON,
    check_resumed,
    child_env,
    dart_cmd,
    dart_log,
    orphan_objects,
    enable_variant,
    plain_cmd,
    run,
    run_and_kill,
    script,
    seeded_delay,
)

pytestmark = pytest.mark.slow

NUMPY = "train_numpy.py"
TORCH = "train_torch.py"
#: one line per batch, plus the line printed after the inner loop
NUMPY_ITERATION_LINES = 2
TORCH_ITERATION_LINES = 1


def resume_and_check(cmd, cwd, reference, killed, max_repeated, env=None):
    """Re-run ``cmd``: it must resume from the newest durable commit, and killed +
    resumed output must be the reference with at most ``max_repeated`` lines again."""
    store = store_of(cmd, env)
    newest = dart_log(store, cwd)[0]
    resumed = run(cmd, cwd=cwd, env=env)
    assert "dart: resuming run" in resumed.stderr, resumed.describe()
    assert f"from commit {newest['id'][:12]}" in resumed.stderr, (
        f"did not resume from the newest durable commit {newest['id'][:12]} ({newest['position']})\n"
        + resumed.describe()
    )
    check_resumed(reference, killed, resumed, max_repeated)
    return resumed


def store_of(cmd, env) -> Path:
    if "--store" in cmd:
        return Path(cmd[cmd.index("--store") + 1])
    return Path(env["DART_STORE"])




# ---------------------------------------------------------------------------- NumPy, dart run


@pytest.mark.parametrize("k", [1, 6, 14, 22])
def test_numpy_killed_after_k_lines(tmp_path, reference_outputs, k):
    reference = reference_outputs(NUMPY)
    cmd = dart_cmd(script(NUMPY), store=tmp_path / "store", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=k)
    assert len(killed.lines) >= k
    resume_and_check(cmd, tmp_path, reference, killed, NUMPY_ITERATION_LINES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_killed_at_random_time(tmp_path, reference_outputs, seed):
    reference = reference_outputs(NUMPY)
    cmd = dart_cmd(script(NUMPY), store=tmp_path / "store", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=1, extra_delay=seeded_delay(seed, 0.02, 0.45))
    resume_and_check(cmd, tmp_path, reference, killed, NUMPY_ITERATION_LINES)


@pytest.mark.parametrize("k", [4, 10])
def test_numpy_killed_while_commit_is_written(tmp_path, reference_outputs, k):
    """The flusher sleeps between writing a commit's objects and its record
    (DART_TEST_FLUSH_DELAY); the kill lands in that window."""
    reference = reference_outputs(NUMPY)
    store = tmp_path / "store"
    cmd = dart_cmd(script(NUMPY), store=store, every="0")
    killed = run_and_kill(
        cmd, tmp_path, env=child_env(DART_TEST_FLUSH_DELAY="0.3"), after_lines=k, extra_delay=0.15
    )
    assert orphan_objects(store), "the kill did not land while a commit was being written"
    before = dart_log(store, tmp_path)
    resumed = resume_and_check(cmd, tmp_path, reference, killed, NUMPY_ITERATION_LINES)
    # It resumed from the newest durable commit.
    assert before[0]["id"][:12] in resumed.stderr, resumed.describe()


def test_numpy_time_interval(tmp_path, reference_outputs):
    """--every 0.2: commits only every 0.2 s; a kill repeats at most ~0.2 s of work."""
    reference = reference_outputs(NUMPY)
    store = tmp_path / "store"
    cmd = dart_cmd(script(NUMPY), store=store, every="0.2")
    killed = run_and_kill(cmd, tmp_path, after_lines=16)
    commits = dart_log(store, tmp_path)
    assert 1 <= len(commits) <= 8, [c["position"] for c in commits]
    # 0.2 s is at most 8 batches of 25 ms (+ epoch lines), plus the iteration in flight.
    resume_and_check(cmd, tmp_path, reference, killed, max_repeated=12)
    full = dart_log(store, tmp_path)
    # A whole run at --every 0 commits at ~30 safe points; at 0.2 s far fewer.
    assert len(full) < 20, [c["position"] for c in full]


def test_while_loop_with_manual_counter(tmp_path):
    reference = run(plain_cmd(script("counter_while.py")), cwd=tmp_path).lines
    cmd = dart_cmd(script("counter_while.py"), store=tmp_path / "store", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=12)
    resume_and_check(cmd, tmp_path, reference, killed, max_repeated=1)


def test_killed_twice(tmp_path, reference_outputs):
    """Kill, resume, kill the resumed run, resume again."""
    reference = reference_outputs(NUMPY)
    cmd = dart_cmd(script(NUMPY), store=tmp_path / "store", every="0")
    first = run_and_kill(cmd, tmp_path, after_lines=5)
    second = run_and_kill(cmd, tmp_path, after_lines=8)
    assert "dart: resuming run" in second.stderr, second.describe()
    m = check_prefix_overlap(reference, first.lines, second.lines)
    combined = first.lines[:m] + second.lines
    third = run(cmd, cwd=tmp_path)

    class Joined:  # the two killed runs, as one killed run
        lines = combined
        def describe(self):
            return "\n".join(combined)

    check_resumed(reference, Joined(), third, NUMPY_ITERATION_LINES)
    assert len(first.lines) - m <= NUMPY_ITERATION_LINES, (
        f"{len(first.lines) - m} lines were printed again after the first resume "
        f"(at most {NUMPY_ITERATION_LINES} allowed)\nfirst: {first.lines}\nsecond: {second.lines}"
    )


def check_prefix_overlap(reference, first, second) -> int:
    for m in range(len(first), -1, -1):
        joined = first[:m] + second
        if joined == reference[: len(joined)]:
            return m
    pytest.fail(f"second killed run does not continue the first\nfirst: {first}\nsecond: {second}")


# ---------------------------------------------------------------------------- NumPy, dart.enable()


@pytest.mark.parametrize("k", [3, 13])
def test_numpy_enable_killed_after_k_lines(tmp_path, reference_outputs, k):
    reference = reference_outputs(NUMPY)
    enabled = enable_variant(script(NUMPY), tmp_path / "code")
    env = child_env(DART_STORE=str(tmp_path / "store"), DART_EVERY="0")
    cmd = [PYTHON, str(enabled)]
    killed = run_and_kill(cmd, tmp_path, env=env, after_lines=k)
    resume_and_check(cmd, tmp_path, reference, killed, NUMPY_ITERATION_LINES, env=env)


def test_numpy_enable_killed_at_random_time(tmp_path, reference_outputs):
    reference = reference_outputs(NUMPY)
    enabled = enable_variant(script(NUMPY), tmp_path / "code")
    env = child_env(DART_STORE=str(tmp_path / "store"), DART_EVERY="0")
    cmd = [PYTHON, str(enabled)]
    killed = run_and_kill(cmd, tmp_path, env=env, after_lines=1, extra_delay=seeded_delay(7, 0.02, 0.45))
    resume_and_check(cmd, tmp_path, reference, killed, NUMPY_ITERATION_LINES, env=env)


def test_numpy_enable_killed_while_commit_is_written(tmp_path, reference_outputs):
    reference = reference_outputs(NUMPY)
    enabled = enable_variant(script(NUMPY), tmp_path / "code")
    store = tmp_path / "store"
    env = child_env(DART_STORE=str(store), DART_EVERY="0")
    cmd = [PYTHON, str(enabled)]
    killed = run_and_kill(
        cmd, tmp_path, env=dict(env, DART_TEST_FLUSH_DELAY="0.3"), after_lines=7, extra_delay=0.15
    )
    assert orphan_objects(store), "the kill did not land while a commit was being written"
    resume_and_check(cmd, tmp_path, reference, killed, NUMPY_ITERATION_LINES, env=env)


def test_numpy_enable_finished_output_is_plain(tmp_path, reference_outputs):
    enabled = enable_variant(script(NUMPY), tmp_path / "code")
    env = child_env(DART_STORE=str(tmp_path / "store"), DART_EVERY="0")
    res = run([PYTHON, str(enabled)], cwd=tmp_path, env=env)
    assert res.returncode == 0, res.describe()
    assert res.lines == reference_outputs(NUMPY)


# ---------------------------------------------------------------------------- torch (few runs: import is slow)


def test_torch_killed_after_k_lines(tmp_path, reference_outputs):
    reference = reference_outputs(TORCH)
    cmd = dart_cmd(script(TORCH), store=tmp_path / "store", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=4)
    resume_and_check(cmd, tmp_path, reference, killed, TORCH_ITERATION_LINES)


def test_torch_killed_at_random_time(tmp_path, reference_outputs):
    reference = reference_outputs(TORCH)
    cmd = dart_cmd(script(TORCH), store=tmp_path / "store", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=1, extra_delay=seeded_delay(3, 0.02, 0.25))
    resume_and_check(cmd, tmp_path, reference, killed, TORCH_ITERATION_LINES)


def test_torch_killed_while_commit_is_written(tmp_path, reference_outputs):
    reference = reference_outputs(TORCH)
    store = tmp_path / "store"
    cmd = dart_cmd(script(TORCH), store=store, every="0")
    killed = run_and_kill(
        cmd, tmp_path, env=child_env(DART_TEST_FLUSH_DELAY="0.3"), after_lines=5, extra_delay=0.15
    )
    assert orphan_objects(store), "the kill did not land while a commit was being written"
    resume_and_check(cmd, tmp_path, reference, killed, TORCH_ITERATION_LINES)


def test_torch_enable_killed_after_k_lines(tmp_path, reference_outputs):
    reference = reference_outputs(TORCH)
    enabled = enable_variant(script(TORCH), tmp_path / "code")
    env = child_env(DART_STORE=str(tmp_path / "store"), DART_EVERY="0")
    cmd = [PYTHON, str(enabled)]
    killed = run_and_kill(cmd, tmp_path, env=env, after_lines=6)
    resume_and_check(cmd, tmp_path, reference, killed, TORCH_ITERATION_LINES, env=env)
