"""dart.transaction under `dart run`: a loop of transactions killed with SIGKILL at
random points resumes faithfully; no commit holds the inside of an open transaction;
dart.commit() inside one is refused; commit=True commits once it completes."""

from __future__ import annotations

import textwrap

import pytest

from conftest import (
    check_resumed,
    child_env,
    dart_cmd,
    dart_log,
    enable_variant,
    plain_cmd,
    run,
    run_and_kill,
    script,
    seeded_delay,
)

LOOP = "transaction_loop.py"


@pytest.fixture(scope="module")
def loop_reference(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("reference")
    result = run(plain_cmd(script(LOOP)), cwd=cwd)
    assert result.returncode == 0, result.describe()
    return result.lines


def test_no_commit_inside_a_transaction(tmp_path, loop_reference):
    store = tmp_path / "store"
    result = run(dart_cmd(script(LOOP), store=store), cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert result.lines == loop_reference  # rolled-back steps behave as without dart
    commits = dart_log(store, tmp_path)
    assert len(commits) > 40  # every safe point outside the transactions committed
    # update() has safe points (its loop) but runs only inside a transaction
    inside = [c["position"] for c in commits if "update()" in c["position"]]
    assert not inside, f"{len(inside)} commits taken inside an open transaction, e.g. {inside[:3]}"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_loop_of_transactions_killed_at_random_points_resumes_faithfully(tmp_path, loop_reference, seed):
    store = tmp_path / "store"
    cmd = dart_cmd(script(LOOP), store=store)
    kill_after = 3 + int(seeded_delay(seed, 0, 34))
    killed = run_and_kill(cmd, cwd=tmp_path, after_lines=kill_after, extra_delay=seeded_delay(seed, 0, 0.03))
    resumed = run(cmd, cwd=tmp_path)
    assert "dart: resuming run" in resumed.stderr, resumed.describe()
    check_resumed(loop_reference, killed, resumed, max_repeated=1)


def test_dart_commit_inside_a_transaction_is_refused_and_commit_true_commits(tmp_path):
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent("""\
        import dart

        table = {"rows": 0}
        try:
            with dart.transaction():
                table["rows"] += 1
                dart.commit("inside")
        except dart.TransactionError as exc:
            print("refused:", exc)
        print("rows", table["rows"])
        with dart.transaction(commit=True):
            table["rows"] = 5
        print("after", table["rows"])
        x = 1
    """))
    store = tmp_path / "store"
    result = run(dart_cmd(program, store=store, every="never"), cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert result.lines[0].startswith("refused: dart.commit() at ") and "dart.transaction(commit=True)" in result.lines[0]
    assert result.lines[1:] == ["rows 0", "after 5"]  # the failed transaction rolled back
    commits = dart_log(store, tmp_path)
    assert [c["message"] for c in commits] == [None], commits  # only the commit=True one (every=never)
    assert commits[0]["location"]["line"] == 13 and commits[0]["resumable"]  # right after the with block


STEPS = "atomic_steps.py"


def atomic_cmd(store):
    base = dart_cmd(script(STEPS), store=store)  # [python, -m, dart, run, ...]
    return [*base[:4], "--atomic-steps", *base[4:]]


def test_atomic_steps_roll_back_a_failing_iteration_before_the_handler(tmp_path):
    plain = run(dart_cmd(script(STEPS), store=tmp_path / "plain"), cwd=tmp_path)
    atomic = run(atomic_cmd(tmp_path / "atomic"), cwd=tmp_path)
    assert plain.returncode == 0 and atomic.returncode == 0, plain.describe() + atomic.describe()
    # without: the failed iterations' partial changes stay
    assert "step 1 log 3 sum 2014.0" in plain.lines and "after loop failure [('outer', 0), ('outer', 1)]" in plain.lines
    # with: a failed iteration leaves nothing, and the handler already sees the clean state
    assert "step 1 log 1 sum 1007.0" in atomic.lines, atomic.describe()
    assert "caught [(1, 1, 1007.0), (4, 3, 3021.0), (7, 5, 5035.0)]" in atomic.lines
    assert "after loop failure [29, ('outer', 0)]" in atomic.lines
    assert len(dart_log(tmp_path / "atomic", tmp_path)) > 30  # steps do not hold commits back


@pytest.mark.parametrize("seed", [5, 6])
def test_atomic_steps_killed_and_resumed_are_faithful(tmp_path, seed):
    reference = run(atomic_cmd(tmp_path / "reference"), cwd=tmp_path)
    assert reference.returncode == 0, reference.describe()
    killed = run_and_kill(atomic_cmd(tmp_path / "store"), cwd=tmp_path, after_lines=2 + int(seeded_delay(seed, 0, 26)),
                          extra_delay=seeded_delay(seed, 0, 0.02))
    resumed = run(atomic_cmd(tmp_path / "store"), cwd=tmp_path)
    assert "dart: resuming run" in resumed.stderr, resumed.describe()
    check_resumed(reference.lines, killed, resumed, max_repeated=1)


def test_loop_of_transactions_under_dart_enable(tmp_path, loop_reference):
    enabled = enable_variant(script(LOOP), tmp_path / "scripts")
    env = child_env(DART_STORE=str(tmp_path / "store"), DART_EVERY="0")
    result = run(plain_cmd(enabled), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.describe()
    assert result.lines == loop_reference
    commits = dart_log(tmp_path / "store", tmp_path)
    assert commits and not [c for c in commits if "update()" in c["position"]]
