"""The resume-anywhere corpus: realistic training scripts in different styles
(tests/scripts/corpus), each SIGKILLed at several seeded points under dart and
run again with the same command.

For every kill point: the killed and the resumed stdout concatenate to the
uninterrupted (plain python) stdout, with at most the lines of the iteration
in flight printed again under ``--every 0`` (for a time interval, whatever was
done since the last durable commit may run again); the files the script writes
end byte-identical; the final ``sha256`` line (model, optimizer, array and
random state) is the same.

Also: resuming after the script folder and the store were copied elsewhere,
and a script that dies from an exception, is fixed, and is run again.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    SCRIPTS,
    check_resumed,
    child_env,
    dart_cmd,
    dart_log,
    plain_cmd,
    run,
    run_and_kill,
)

pytestmark = pytest.mark.slow

CORPUS = SCRIPTS / "corpus"

#: Kill points per script under --every 0 (one of them lands while a commit is written).
EVERY_0_KILLS = 5
#: Index (among the --every 0 kill points) of the kill that lands mid-commit.
MID_COMMIT_KILL = 3
#: The time interval of the second series of kills.
INTERVAL = "0.3"
#: Seconds the flusher sleeps between a commit's objects and its record for the mid-commit kill.
FLUSH_DELAY = "0.3"


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
    Case("trainer_dataloader_w0", "trainer_dataloader.py", ("0",), first_pass_until="epoch 0 train", uses_torch=True),
    Case("trainer_dataloader_w2", "trainer_dataloader.py", ("2",), first_pass_until="epoch 0 train", uses_torch=True),
    Case("early_stopping", "early_stopping.py", repeat=2),
    Case("while_anneal", "while_anneal.py"),
    Case("sgd_partial_fit", "sgd_partial_fit.py"),
    Case("generator_batches", "generator_batches.py", first_pass_until="epoch 0 samples"),
    Case("decorated_steps", "decorated_steps.py", uses_torch=True),
    Case("closures", "closures.py"),
    Case("closure_locals", "closure_locals.py"),
    Case("log_append", "log_append.py"),
    Case("metrics_csv", "metrics_csv.py"),
    Case("try_except", "try_except.py", repeat=3),
    Case("stateful_helpers", "stateful_helpers.py", repeat=2),
    Case("fix_and_resume", "fix_and_resume.py", repeat=2),
]
BY_ID = {case.id: case for case in CASES}

STORE = "store"


# ---------------------------------------------------------------------------- helpers


def snapshot(folder: Path, skip=(STORE,)) -> dict[str, bytes]:
    """The files a script wrote under ``folder`` (recursively), by relative path."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or path.name.startswith(".stderr.") or not path.is_file():
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


def orphan_objects(store: Path) -> set[str]:
    """Objects no commit record names: what a commit killed mid-write leaves."""
    named = set()
    for record_path in (store / "commits").glob("*.json"):
        state = json.loads(record_path.read_text())["state"]
        named.add(state["pickle"])
        named.update(state["buffers"])
    present = {p.parent.name + p.name for p in (store / "objects").glob("*/*") if p.is_file()}
    return present - named


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


def kill_points(case: Case, reference: list[str], fractions) -> list[tuple[int, float]]:
    """(after_lines, extra_delay) pairs, seeded by the case: spread over the run."""
    rnd = random.Random(f"{case.id}:{fractions}")
    last = len(reference) - 2  # the kill must land before the final lines
    points = []
    for fraction in fractions:
        jittered = min(max(fraction + rnd.uniform(-0.06, 0.06), 0.0), 1.0)
        k = min(max(1, round(jittered * last)), last)
        points.append((k, rnd.uniform(0.0, 0.03)))
    return points


def resume(cmd, cwd, store: Path, env=None):
    """Run ``cmd`` again: it must say it resumes from the newest durable commit."""
    commits = dart_log(store, cwd)
    resumed = run(cmd, cwd=cwd, env=env)
    if commits:
        assert "dart: resuming run" in resumed.stderr, resumed.describe()
        assert f"from commit {commits[0]['id'][:12]}" in resumed.stderr, (
            f"did not resume from the newest durable commit {commits[0]['id'][:12]} "
            f"({commits[0]['position']})\n" + resumed.describe()
        )
    return resumed


def matching_prefix(reference: list[str], killed: list[str], resumed: list[str]) -> int:
    """Some m with killed[:m] + resumed == reference (the largest), or fail."""
    assert killed == reference[: len(killed)], "the killed run printed something else than the reference"
    for m in range(len(killed), -1, -1):
        if killed[:m] + resumed == reference:
            return m
    pytest.fail(
        "killed + resumed output is not the uninterrupted output\n=== killed ===\n"
        + "\n".join(killed)
        + "\n=== resumed ===\n"
        + "\n".join(resumed)
        + "\n=== reference ===\n"
        + "\n".join(reference)
    )


# ---------------------------------------------------------------------------- kill and resume


def every_0_params():
    for case in CASES:
        for point in range(EVERY_0_KILLS):
            yield pytest.param(case.id, point, id=f"{case.id}-k{point}")


@pytest.mark.parametrize("case_id, point", list(every_0_params()))
def test_kill_and_resume_every_0(tmp_path, corpus_reference, case_id, point):
    """--every 0: each commit is durable before the program goes on, so a kill
    repeats at most the iteration in flight."""
    case = BY_ID[case_id]
    ref = corpus_reference(case)
    fractions = tuple((i + 0.5) / EVERY_0_KILLS for i in range(EVERY_0_KILLS))
    after, delay = kill_points(case, ref.lines, fractions)[point]
    store = tmp_path / STORE
    cmd = dart_cmd(case.path(), *case.args, store=store, every="0")
    if point == MID_COMMIT_KILL:
        killed = run_and_kill(
            cmd, tmp_path, env=child_env(DART_TEST_FLUSH_DELAY=FLUSH_DELAY), after_lines=after, extra_delay=0.15
        )
        assert orphan_objects(store), "the kill did not land while a commit was being written"
    else:
        killed = run_and_kill(cmd, tmp_path, after_lines=after, extra_delay=delay)
    resumed = resume(cmd, tmp_path, store)
    check_resumed(ref.lines, killed, resumed, case.max_repeat(ref.lines, len(killed.lines)))
    assert_same_files(ref.files, tmp_path)


def interval_params():
    for case in CASES:
        for point in range(case.interval_kills):
            yield pytest.param(case.id, point, id=f"{case.id}-k{point}")


@pytest.mark.parametrize("case_id, point", list(interval_params()))
def test_kill_and_resume_time_interval(tmp_path, corpus_reference, case_id, point):
    """--every 0.3: a kill may repeat the work since the last durable commit;
    killed + resumed is still the uninterrupted output, state bit-identical."""
    case = BY_ID[case_id]
    ref = corpus_reference(case)
    fractions = tuple((i + 0.5) / case.interval_kills for i in range(case.interval_kills))
    after, delay = kill_points(case, ref.lines, fractions)[point]
    store = tmp_path / STORE
    cmd = dart_cmd(case.path(), *case.args, store=store, every=INTERVAL)
    killed = run_and_kill(cmd, tmp_path, after_lines=after, extra_delay=delay)
    resumed = resume(cmd, tmp_path, store)
    assert resumed.returncode == 0, resumed.describe()
    assert resumed.lines and resumed.lines[-1] == ref.lines[-1], "final state differs\n" + resumed.describe()
    matching_prefix(ref.lines, killed.lines, resumed.lines)
    assert_same_files(ref.files, tmp_path)


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


def test_edit_on_the_saved_path_is_refused(tmp_path, corpus_reference):
    """Renaming the function the saved path runs through: dart cannot identify the
    frame, says which one and suggests --fresh instead of continuing wrongly."""
    ref = corpus_reference(FIX)
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
