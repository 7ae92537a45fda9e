"""The resume-anywhere corpus: realistic training scripts in different styles
(tests/scripts/corpus), each SIGKILLed at several seeded points under dart and
run again with the same command.

Per script, a chain of kills under ``--every 0`` (5 kills, one of them while a
commit is being written) and one under ``--every 0.3`` (2 kills): each run after
a kill resumes from the newest durable commit and is itself killed later on,
until the last run finishes. The outputs of all runs join into the
uninterrupted (plain python) stdout, with at most the lines of the iteration in
flight printed again after each kill under ``--every 0`` (for a time interval,
whatever was done since the last durable commit may run again); the files the
script writes end byte-identical; the final ``sha256`` line (model, optimizer,
array and random state) is the same.

Also: resuming after the script folder and the store were copied elsewhere,
and a script that dies from an exception, is fixed, and is run again.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dart.store import open_store

from conftest import (
    DEADLINE,
    SCRIPTS,
    Result,
    check_resumed,
    child_env,
    dart_cmd,
    dart_log,
    orphan_objects,
    plain_cmd,
    run,
    run_and_kill,
)

pytestmark = pytest.mark.slow

CORPUS = SCRIPTS / "corpus"

#: Kills per script under --every 0 (one of them lands while a commit is written).
#: The kills form a chain (kill, resume and kill that run later on, ...) so that
#: torch's import time is paid once per kill point, not twice.
EVERY_0_KILLS = 5
#: Index (in that chain) of the kill that lands mid-commit.
MID_COMMIT_KILL = 3
#: Seconds the flusher sleeps between a commit's objects and its record for that kill.
FLUSH_DELAY = "0.2"
#: The time interval of the second chain of kills.
INTERVAL = "0.3"


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    args: tuple = ()
    #: Lines one stretch between two safe points can print: what a kill under
    #: --every 0 may print again (the iteration in flight).
    repeat: int = 1
    #: A loop over an iterator that cannot be saved (DataLoader, generator) gets
    #: no commits inside during its first run: a kill before the reference line
    #: starting with this text may repeat everything printed since the start.
    first_pass_until: str | None = None
    #: Kill points under --every INTERVAL.
    interval_kills: int = 2
    uses_torch: bool = False

    def path(self) -> Path:
        path = CORPUS / self.script
        assert path.is_file(), path
        return path

    def max_repeat(self, reference: list[str], killed_lines: int) -> int:
        if self.first_pass_until is not None:
            end = next(i for i, line in enumerate(reference) if line.startswith(self.first_pass_until))
            if killed_lines <= end + 1:
                return max(self.repeat, killed_lines)
        return self.repeat


CASES = [
    Case("trainer_dataloader_w0", "trainer_dataloader.py", ("0",), uses_torch=True),
    Case("trainer_dataloader_w2", "trainer_dataloader.py", ("2",), uses_torch=True),
    Case("early_stopping", "early_stopping.py", repeat=2),
    Case("while_anneal", "while_anneal.py"),
    Case("sgd_partial_fit", "sgd_partial_fit.py"),
    Case("generator_batches", "generator_batches.py", repeat=2),
    Case("decorated_steps", "decorated_steps.py", uses_torch=True),
    Case("closures", "closures.py"),
    Case("closure_locals", "closure_locals.py"),
    Case("log_append", "log_append.py"),
    Case("metrics_csv", "metrics_csv.py"),
    Case("try_except", "try_except.py", repeat=3),
    Case("stateful_helpers", "stateful_helpers.py"),
    Case("fix_and_resume", "fix_and_resume.py", repeat=2),
    # Issue 9: commits in the first pass of a DataLoader, iterators held in objects
    # and variables, functions and classes defined in loops and in main(), and
    # calls nested in calls on the path.
    Case("one_epoch_w0", "one_epoch_loader.py", ("0", "shuffle"), interval_kills=5, uses_torch=True),
    Case("one_epoch_w2", "one_epoch_loader.py", ("2", "shuffle"), interval_kills=5, uses_torch=True),
    Case("one_epoch_stream", "one_epoch_loader.py", ("0", "stream"), uses_torch=True),
    Case("infinite_loader", "infinite_loader.py", interval_kills=5, uses_torch=True),
    Case("iter_next_loader", "iter_next_loader.py", interval_kills=5, uses_torch=True),
    Case("lbfgs_closure", "lbfgs_closure.py", interval_kills=5, uses_torch=True),
    Case("local_class", "local_class.py", interval_kills=5),
    Case("nested_calls", "nested_calls.py", interval_kills=5),
    # Learning-rate schedulers: each wraps optimizer.step in a function holding a
    # weak reference to the optimizer.
    *(Case(f"lr_{kind}", "lr_schedulers.py", (kind,), uses_torch=True)
      for kind in ("warmup_cosine", "onecycle", "lambda", "plateau")),
    Case("csv_logger", "csv_logger.py"),
    Case("tqdm_loop", "tqdm_loop.py", uses_torch=True),  # tqdm iterates with a generator
    Case("gan_folds", "gan_folds.py", uses_torch=True),  # a shut-down Pool left in main()'s locals
    Case("logging_handlers", "logging_handlers.py"),  # handlers in locals, attached to loggers
    Case("grid_search_joblib", "grid_search_joblib.py"),  # a joblib.Parallel in a local: rebuilt
    # Generator objects in variables and attributes, pulled with next(): saved as their frames.
    Case("generator_streams", "generator_streams.py", interval_kills=3, uses_torch=True),
    # super().fit(), a module-level namedtuple, `global`, os.chdir / atexit / signal
    # before the loop, a loss summed before backward() (no commit with its graph alive).
    Case("trainer_inheritance", "trainer_inheritance.py", uses_torch=True),
    Case("while_readline", "while_readline.py", repeat=2),  # while tests that take the next item
    Case("pandas_rows", "pandas_rows.py", repeat=2),  # library generators (iterrows, date_range) saved as frames
    Case("text_lines", "text_lines.py"),  # `for line in f` over text files: commits in the first pass
    Case("checkpoint_rotation", "checkpoint_rotation.py"),  # files removed and made after a commit: undone on resume
    Case("class_config", "class_config.py"),  # attributes of a config class, a function, a settings module
]
BY_ID = {case.id: case for case in CASES}

STORE = "store"


# ---------------------------------------------------------------------------- helpers


def snapshot(folder: Path, skip=(STORE,)) -> dict[str, bytes]:
    """The files a script wrote under ``folder`` (recursively), by relative path."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or path.name.startswith((".stderr.", ".stdout.")) or not path.is_file():
            continue
        files[str(rel)] = path.read_bytes()
    return files


def assert_same_files(expected: dict[str, bytes], folder: Path, skip=(STORE,)) -> None:
    got = snapshot(folder, skip)
    assert sorted(got) == sorted(expected), f"written files differ: {sorted(got)} != {sorted(expected)}"
    for name, data in expected.items():
        assert got[name] == data, (
            f"{name} differs from the uninterrupted run's ({len(got[name])} vs {len(data)} bytes)\n"
            f"--- resumed ---\n{got[name][-600:]!r}\n--- reference ---\n{data[-600:]!r}"
        )




def kill_when(cmd, cwd: Path, condition, env=None, timeout: float = DEADLINE) -> Result:
    """Run ``cmd`` and SIGKILL it as soon as ``condition()`` (polled every 5 ms) is true."""
    out_path = cwd / f".stdout.{time.monotonic_ns()}"
    err_path = cwd / f".stderr.{time.monotonic_ns()}"
    started = time.monotonic()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env or child_env(), stdout=out, stderr=err)
        landed = False
        while proc.poll() is None and time.monotonic() - started < timeout:
            if condition():
                landed = True
                break
            time.sleep(0.005)
        proc.kill()
        proc.wait()
    result = Result(cmd, proc.returncode, out_path.read_text(), err_path.read_text(), killed=landed)
    out_path.unlink()
    err_path.unlink()
    assert landed, "the kill point never came\n" + result.describe()
    return result


def kill_after_a_commit(cmd, cwd: Path, store: Path, wait: float, timeout: float = DEADLINE) -> Result:
    """Run ``cmd`` and SIGKILL it ``wait`` seconds after it made its first
    commit; if it finishes first, return that (``killed`` is False)."""
    before = commit_count(store)
    out_path = cwd / f".stdout.{time.monotonic_ns()}"
    err_path = cwd / f".stderr.{time.monotonic_ns()}"
    started, seen, killed = time.monotonic(), None, False
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=child_env(), stdout=out, stderr=err)
        while proc.poll() is None and time.monotonic() - started < timeout:
            if seen is None and commit_count(store) > before:
                seen = time.monotonic()
            if seen is not None and time.monotonic() - seen >= wait:
                proc.kill()
                killed = True
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    result = Result(cmd, proc.returncode, out_path.read_text(), err_path.read_text(), killed=killed)
    out_path.unlink()
    err_path.unlink()
    assert killed or proc.returncode == 0, "the run neither finished nor was killed\n" + result.describe()
    return result


def kill_mid_commit(cmd, cwd: Path, store: Path) -> Result:
    """Run ``cmd`` with a slowed-down flusher and SIGKILL it as soon as a commit's
    objects are in the store but its record is not (a commit being written)."""
    before = orphan_objects(store) if (store / "commits").is_dir() else set()
    env = child_env(DART_TEST_FLUSH_DELAY=FLUSH_DELAY)
    result = kill_when(cmd, cwd, lambda: (store / "objects").is_dir() and bool(orphan_objects(store) - before), env)
    assert orphan_objects(store) - before, "the kill did not land while a commit was being written"
    return result


def newest_run_finished(store: Path) -> bool:
    """The newest run is marked finished, or made its end-of-program commit (a kill
    while the interpreter exited: the next run counts it as finished)."""
    if not (store / "store.json").exists():
        return False
    opened = open_store(store, create=False)
    runs = opened.list_runs()
    if not runs:
        return False
    if runs[-1].get("status") == "finished":
        return True
    commits = opened.log(run=runs[-1]["id"])
    return bool(commits) and commits[0].position.get("kind") == "end"


def commit_count(store: Path) -> int:
    return len(list((store / "commits").glob("*.json")))


@dataclass
class Reference:
    lines: list[str]
    files: dict[str, bytes]


@pytest.fixture(scope="session")
def corpus_reference(tmp_path_factory):
    """Plain-python run of a case, in a folder of its own: stdout lines and files."""
    cache: dict[str, Reference] = {}

    def get(case: Case) -> Reference:
        if case.id not in cache:
            folder = tmp_path_factory.mktemp(f"ref-{case.id}")
            res = run(plain_cmd(case.path(), *case.args), cwd=folder)
            assert res.returncode == 0, res.describe()
            assert res.lines[-1].startswith("sha256 "), res.describe()
            assert len(res.lines) >= 8, res.describe()
            cache[case.id] = Reference(res.lines, snapshot(folder))
        return cache[case.id]

    return get


def resume(cmd, cwd, store: Path, env=None):
    """Run ``cmd`` again: it must say it resumes from the newest durable commit."""
    commits = dart_log(store, cwd)
    resumed = run(cmd, cwd=cwd, env=env)
    assert_resumed_from_newest(commits, resumed)
    return resumed


def assert_resumed_from_newest(commits, result) -> None:
    if commits:
        assert "dart: resuming run" in result.stderr, result.describe()
        assert f"from commit {commits[0]['id'][:12]}" in result.stderr, (
            f"did not resume from the newest durable commit {commits[0]['id'][:12]} "
            f"({commits[0]['position']})\n" + result.describe()
        )


def describe_chain(reference, runs) -> str:
    text = ""
    for i, res in enumerate(runs):
        text += f"\n=== run {i} ===\n{res.describe()}"
    return text + "\n=== reference ===\n" + "\n".join(reference)


def continue_output(case, reference, so_far, lines, max_repeat: bool, runs) -> list[str]:
    """``so_far[:m] + lines`` for the largest m that keeps it a prefix of the
    reference; under --every 0 at most the iteration in flight may repeat."""
    for m in range(len(so_far), -1, -1):
        joined = so_far[:m] + lines
        if joined == reference[: len(joined)]:
            repeated = len(so_far) - m
            allowed = case.max_repeat(reference, len(so_far))
            if max_repeat:
                assert repeated <= allowed, (
                    f"{repeated} lines were printed again after resuming (at most {allowed} allowed)"
                    + describe_chain(reference, runs)
                )
            return joined
    pytest.fail("the runs' outputs do not concatenate to the uninterrupted output" + describe_chain(reference, runs))


def kill_chain(case: Case, ref: Reference, tmp_path: Path, every: str, kills: int, mid_commit: int | None):
    """Run the case under dart, SIGKILL it after a seeded number of lines, run the
    same command again (it resumes), kill that one later on, and so on ``kills``
    times; then let the last run finish. Every run after the first must resume
    from the newest durable commit, and the outputs must join into the reference."""
    store = tmp_path / STORE
    cmd = dart_cmd(case.path(), *case.args, store=store, every=every)
    rnd = random.Random(f"{case.id}:{every}:{kills}")
    last = len(ref.lines) - 3  # every kill lands before the final lines
    so_far: list[str] = []
    runs = []
    for i in range(kills):
        target = round(last * (i + 0.5 + rnd.uniform(-0.3, 0.3)) / kills)
        commits = dart_log(store, tmp_path) if i else []
        if i == mid_commit:
            # The flusher sleeps between a commit's objects and its record; the
            # kill lands in that window.
            killed = kill_mid_commit(cmd, tmp_path, store)
        elif every == "0":
            after = max(1, target - len(so_far))
            killed = run_and_kill(cmd, tmp_path, after_lines=after, extra_delay=rnd.uniform(0.0, 0.03))
        else:
            # With an interval, a kill before the run's first commit starts it
            # over (a file it appends to then holds that partial output twice,
            # as with plain python): kill once the run has committed.
            killed = kill_after_a_commit(cmd, tmp_path, store, wait=rnd.uniform(0.0, 0.4))
        if not killed.killed or newest_run_finished(store):
            # It finished first (little work was left), or the kill landed after its
            # last commit, while the interpreter exited: that is the last run.
            assert_resumed_from_newest(commits, killed)
            runs.append(killed)
            final = killed
            break
        runs.append(killed)
        assert_resumed_from_newest(commits, killed)
        so_far = continue_output(case, ref.lines, so_far, killed.lines, every == "0", runs)
    else:
        final = resume(cmd, tmp_path, store)
        runs.append(final)
    # (a kill that landed after the run finished leaves -9 with the run complete)
    assert final.returncode == 0 or (final.killed and newest_run_finished(store)), describe_chain(ref.lines, runs)
    assert final.lines and final.lines[-1] == ref.lines[-1], "final state differs" + describe_chain(ref.lines, runs)
    joined = continue_output(case, ref.lines, so_far, final.lines, every == "0", runs)
    assert joined == ref.lines, "the output stops short of the uninterrupted output" + describe_chain(ref.lines, runs)
    assert_same_files(ref.files, tmp_path)


# ---------------------------------------------------------------------------- kill and resume


@pytest.mark.parametrize("case_id", [case.id for case in CASES])
def test_kill_and_resume_every_0(tmp_path, corpus_reference, case_id):
    """--every 0: each commit is durable before the program goes on, so each of the
    kills repeats at most the iteration in flight; one kill lands mid-commit."""
    case = BY_ID[case_id]
    kill_chain(case, corpus_reference(case), tmp_path, "0", EVERY_0_KILLS, MID_COMMIT_KILL)


def in_share(case: Case) -> bool:
    """CI runs the suite for each Python at the same time and shares the interval
    chains out between them: DART_TEST_SHARE="k/n" runs cases k, k+n, k+2n, ..."""
    share = os.environ.get("DART_TEST_SHARE")
    if not share:
        return True
    k, n = (int(part) for part in share.split("/"))
    return CASES.index(case) % n == k


@pytest.mark.parametrize("case_id", [case.id for case in CASES])
def test_kill_and_resume_time_interval(tmp_path, corpus_reference, case_id):
    """--every 0.3: a kill may repeat the work since the last durable commit; the
    outputs still join into the uninterrupted output, state bit-identical."""
    case = BY_ID[case_id]
    if not in_share(case):
        pytest.skip(f"runs in the other suite of this CI run (DART_TEST_SHARE={os.environ['DART_TEST_SHARE']})")
    kill_chain(case, corpus_reference(case), tmp_path, INTERVAL, case.interval_kills, None)


@pytest.mark.parametrize("case_id", ["early_stopping", "stateful_helpers"])
def test_killed_right_after_the_first_commit_of_a_resumed_run(tmp_path, corpus_reference, case_id):
    """Kill, resume, and kill the resumed run as soon as it has made its first
    durable commit: the next run still repeats at most the iteration in flight."""
    case = BY_ID[case_id]
    ref = corpus_reference(case)
    store = tmp_path / STORE
    cmd = dart_cmd(case.path(), *case.args, store=store, every="0")
    first = run_and_kill(cmd, tmp_path, after_lines=len(ref.lines) // 3, extra_delay=0.01)
    runs = [first]
    so_far = continue_output(case, ref.lines, [], first.lines, True, runs)
    count = commit_count(store)
    second = kill_when(cmd, tmp_path, lambda: commit_count(store) > count)
    runs.append(second)
    so_far = continue_output(case, ref.lines, so_far, second.lines, True, runs)
    final = resume(cmd, tmp_path, store)
    runs.append(final)
    assert final.returncode == 0, describe_chain(ref.lines, runs)
    assert continue_output(case, ref.lines, so_far, final.lines, True, runs) == ref.lines


# ---------------------------------------------------------------------------- copied elsewhere


@pytest.mark.parametrize("case_id", ["log_append", "metrics_csv", "trainer_dataloader_w0"])
def test_resume_after_copying_folder_and_store(tmp_path, corpus_reference, case_id):
    """Kill in project A (script, store and written files in one folder), copy the
    folder to B and run the command there: it resumes, writes B's files (not A's)
    and ends as the uninterrupted run."""
    case = BY_ID[case_id]
    ref = corpus_reference(case)
    first = tmp_path / "a" / "project"
    first.mkdir(parents=True)
    shutil.copy(case.path(), first / case.script)
    cmd_a = dart_cmd(first / case.script, *case.args, store=first / ".dart", every="0")
    after = len(ref.lines) // 2
    killed = run_and_kill(cmd_a, first, after_lines=after, extra_delay=0.01)
    assert dart_log(first / ".dart", first), "no commit before the kill"
    second = tmp_path / "b" / "elsewhere" / "project"
    shutil.copytree(first, second)
    before = snapshot(first, skip=(".dart",))
    cmd_b = dart_cmd(second / case.script, *case.args, store=second / ".dart", every="0")
    resumed = resume(cmd_b, second, second / ".dart")
    check_resumed(ref.lines, killed, resumed, case.max_repeat(ref.lines, len(killed.lines)))
    expected = dict(ref.files, **{case.script: case.path().read_bytes()})
    assert_same_files(expected, second, skip=(".dart",))
    assert snapshot(first, skip=(".dart",)) == before, "the copied run wrote into the original folder"


# ---------------------------------------------------------------------------- fail, fix, resume

FIX = BY_ID["fix_and_resume"]


def break_script(folder: Path, correct: str, broken: str) -> Path:
    """A copy of fix_and_resume.py in ``folder`` with ``correct`` replaced by ``broken``."""
    source = FIX.path().read_text()
    assert source.count(correct) == 1, correct
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FIX.script
    target.write_text(source.replace(correct, broken))
    return target


def fail_fix_resume(tmp_path, corpus_reference, correct, broken, error):
    ref = corpus_reference(FIX)
    work = tmp_path / "work"
    target = break_script(tmp_path / "code", correct, broken)
    store = tmp_path / STORE
    cmd = dart_cmd(target, store=store, every="0")
    work.mkdir()
    failed = run(cmd, cwd=work)
    assert failed.returncode == 1, failed.describe()
    assert error in failed.stderr, failed.describe()
    assert failed.lines == ref.lines[: len(failed.lines)], failed.describe()
    assert any(line.startswith("epoch 2 batch") for line in failed.lines), failed.describe()
    target.write_text(FIX.path().read_text())  # the fix
    resumed = resume(cmd, work, store)
    check_resumed(ref.lines, failed, resumed, FIX.repeat)
    assert_same_files(ref.files, work)
    return resumed


def test_fix_outside_the_saved_path_then_resume(tmp_path, corpus_reference):
    """save_checkpoint() (never on the path of a commit) has a bug that first runs at
    epoch 2; the fix also changes the line count, so every function below it moves."""
    fail_fix_resume(
        tmp_path,
        corpus_reference,
        "    np.savez(path, weights=weights, bias=bias, epoch=np.array(epoch))\n",
        "    arrays = dict(weights=weights, bias=biases)\n    np.savez(path, **arrays, epoch=np.array(epoch))\n",
        "NameError",
    )


def test_fix_after_the_saved_position_then_resume(tmp_path, corpus_reference):
    """The bug is in train() itself (on the saved path), after the batch loop where
    the last commit was taken: the resumed run uses the fixed line."""
    fail_fix_resume(tmp_path, corpus_reference, "lr = lr * 0.7", "lr = lr * decay", "NameError")


def test_flaky_failure_then_resume(tmp_path, corpus_reference):
    """FAIL_AT_EPOCH makes train() raise after epoch 3's batches; the re-run without it
    continues from the last commit before the failure."""
    ref = corpus_reference(FIX)
    store = tmp_path / STORE
    cmd = dart_cmd(FIX.path(), store=store, every="0")
    failed = run(cmd, cwd=tmp_path, env=child_env(FAIL_AT_EPOCH="3"))
    assert failed.returncode == 1 and "simulated failure at epoch 3" in failed.stderr, failed.describe()
    resumed = resume(cmd, tmp_path, store)
    check_resumed(ref.lines, failed, resumed, FIX.repeat)
    assert_same_files(ref.files, tmp_path)


def test_edit_on_the_saved_path_is_refused(tmp_path):
    """Renaming the function the saved path runs through: dart cannot identify the
    frame, says which one and suggests --fresh instead of continuing wrongly."""
    target = break_script(tmp_path / "code", "lr = lr * 0.7", "lr = lr * decay")
    store = tmp_path / STORE
    cmd = dart_cmd(target, store=store, every="0")
    failed = run(cmd, cwd=tmp_path)
    assert failed.returncode == 1, failed.describe()
    renamed = FIX.path().read_text().replace("def train(", "def fit_model(").replace("= train(", "= fit_model(")
    target.write_text(renamed)
    again = run(cmd, cwd=tmp_path)
    assert again.returncode != 0, again.describe()
    assert "--fresh" in again.stderr and "train" in again.stderr, again.describe()
    assert "Traceback (most recent call last)" not in again.stderr, again.describe()
    assert again.stdout == "", again.describe()
