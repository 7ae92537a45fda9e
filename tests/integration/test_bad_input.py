"""Bad input: a clear `dart: error:` message, a non-zero exit, no traceback from
dart's internals and nothing half-written."""

from __future__ import annotations

import json
import os

import pytest

from conftest import (
    PYTHON,
    assert_no_internal_traceback,
    dart_cmd,
    plain_cmd,
    run,
    run_and_kill,
    script,
    child_env,
)


def assert_dart_error(res, *mentions: str) -> None:
    assert res.returncode != 0, res.describe()
    assert res.returncode == 2, res.describe()
    assert "dart: error:" in res.stderr, res.describe()
    for text in mentions:
        assert text in res.stderr, f"{text!r} not named in the message\n{res.describe()}"
    assert_no_internal_traceback(res.stderr)


def test_script_not_found(tmp_path):
    store = tmp_path / "store"
    res = run(dart_cmd("no_such_script.py", store=store), tmp_path)
    assert_dart_error(res, "no_such_script.py")
    assert res.stdout == ""
    assert not store.exists()


def test_syntax_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("x = 1\nprint('ran')\nfor i in range(3)\n    print(i)\n")
    store = tmp_path / "store"
    res = run(dart_cmd(bad, store=store), tmp_path)
    assert_dart_error(res, "broken.py", "line 3")
    assert res.stdout == ""
    assert not store.exists()


def test_syntax_error_with_enable(tmp_path):
    """With dart.enable() python itself reports the error, as it always does."""
    bad = tmp_path / "broken_enabled.py"
    bad.write_text("import dart; dart.enable()\nfor i in range(3)\n    print(i)\n")
    res = run([PYTHON, str(bad)], tmp_path, env=child_env(DART_STORE=str(tmp_path / "store")))
    assert res.returncode != 0
    assert "broken_enabled.py" in res.stderr and "line 2" in res.stderr
    assert not (tmp_path / "store").exists()


def test_store_path_is_a_file(tmp_path):
    store = tmp_path / "store"
    store.write_text("not a store\n")
    res = run(dart_cmd(script("counter_while.py"), store=store), tmp_path)
    assert_dart_error(res, str(store))
    assert res.stdout == "", "the script must not run without a store"
    assert store.read_text() == "not a store\n"


def test_store_path_not_empty_foreign_directory(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "my-data.txt").write_text("keep me\n")
    res = run(dart_cmd(script("counter_while.py"), store=store), tmp_path)
    assert_dart_error(res, str(store))
    assert res.stdout == ""
    assert sorted(p.name for p in store.iterdir()) == ["my-data.txt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_store_not_writable(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        res = run(dart_cmd(script("counter_while.py"), store=parent / "store"), tmp_path)
        assert_dart_error(res, str(parent / "store"))
        assert res.stdout == ""
    finally:
        parent.chmod(0o755)


def test_store_under_a_regular_file(tmp_path):
    """A store path whose parent is a file cannot be created (works as root too)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    res = run(dart_cmd(script("counter_while.py"), store=blocker / "store"), tmp_path)
    assert_dart_error(res, str(blocker / "store"))
    assert res.stdout == ""


def test_log_without_store(tmp_path):
    res = run([PYTHON, "-m", "dart", "log", "--store", str(tmp_path / "nothing")], tmp_path)
    assert_dart_error(res, str(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()


def test_log_of_an_unsupported_store_url(tmp_path):
    res = run([PYTHON, "-m", "dart", "log", "--store", "ftp://host/runs"], tmp_path)
    assert_dart_error(res, "ftp://", "not supported", "s3://BUCKET")
    assert os.listdir(tmp_path) == []


def test_log_of_an_unreachable_s3_store(tmp_path):
    res = run([PYTHON, "-m", "dart", "log", "--store", "s3://bucket/runs", "--s3-endpoint", "http://127.0.0.1:9"],
              tmp_path, env=child_env(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-east-1"))
    assert_dart_error(res, "s3://bucket/runs", "http://127.0.0.1:9", "check the network")
    assert os.listdir(tmp_path) == []


def test_version_and_help_list_every_command(tmp_path):
    import dart

    res = run([PYTHON, "-m", "dart", "--version"], tmp_path)
    assert res.returncode == 0 and res.stdout.startswith(f"dart {dart.__version__} "), res.describe()
    res = run([PYTHON, "-m", "dart", "--help"], tmp_path)
    from dart.cli import COMMANDS

    assert res.returncode == 0 and all(f"    {name} " in res.stdout for name in COMMANDS), res.describe()


def test_bad_every(tmp_path):
    res = run(dart_cmd(script("counter_while.py"), store=tmp_path / "store", every="soon"), tmp_path)
    assert_dart_error(res, "soon")
    assert res.stdout == ""


# ---------------------------------------------------------------------------- corrupted store


def killed_run(tmp_path):
    """A store with an unfinished run of counter_while.py; returns (cmd, store, newest record path)."""
    store = tmp_path / "store"
    cmd = dart_cmd(script("counter_while.py"), store=store, every="0")
    run_and_kill(cmd, tmp_path, after_lines=8)
    refs = list((store / "refs" / "runs").iterdir())
    assert len(refs) == 1
    head = refs[0].read_text().strip()
    record = store / "commits" / f"{head}.json"
    assert record.is_file(), sorted(p.name for p in (store / "commits").iterdir())
    return cmd, store, record


def killed_run_lines(tmp_path):
    """killed_run, with the lines the killed run printed and the reference output."""
    store = tmp_path / "store"
    cmd = dart_cmd(script("counter_while.py"), store=store, every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=8)
    head = next((store / "refs" / "runs").iterdir()).read_text().strip()
    reference = run(plain_cmd(script("counter_while.py")), tmp_path).lines
    return cmd, store, store / "commits" / f"{head}.json", killed.lines, reference


def assert_faithful(killed_lines, resumed, reference):
    assert resumed.returncode == 0, resumed.describe()
    assert any(killed_lines[:m] + resumed.lines == reference for m in range(len(killed_lines) + 1)), resumed.describe()
    assert_no_internal_traceback(resumed.stderr)


def test_garbage_in_commit_record(tmp_path):
    """The newest record is garbage: the run resumes from the newest intact
    commit before it and says so; log lists what is intact and names the damage."""
    cmd, store, record, killed, reference = killed_run_lines(tmp_path)
    record.write_bytes(b"\x00garbage{{{" + record.read_bytes()[:40])
    log = run([PYTHON, "-m", "dart", "log", "--store", str(store)], tmp_path)
    assert log.returncode == 0 and record.name in log.stderr and "damaged" in log.stderr, log.describe()
    assert record.stem[:12] not in log.stdout and len(log.lines) > 2
    log_json = run([PYTHON, "-m", "dart", "log", "--store", str(store), "--json"], tmp_path)
    assert log_json.returncode == 0 and record.stem not in log_json.stdout, log_json.describe()
    resumed = run(cmd, tmp_path)
    assert record.name in resumed.stderr and "resuming run" in resumed.stderr, resumed.describe()
    assert_faithful(killed, resumed, reference)


def test_flipped_byte_in_object(tmp_path):
    """The newest commit's index is damaged: resume falls back to the commit
    before it, naming the object; fsck finds the damage."""
    cmd, store, record, killed, reference = killed_run_lines(tmp_path)
    state = json.loads(record.read_text())["state"]
    oid = state["index"]
    path = store / "objects" / oid[:2] / oid[2:]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x41
    path.write_bytes(bytes(data))
    fsck = run([PYTHON, "-m", "dart", "fsck", "--store", str(store)], tmp_path)
    assert fsck.returncode == 1 and oid in fsck.stdout, fsck.describe()
    resumed = run(cmd, tmp_path)
    assert oid[2:] in resumed.stderr and "the newest that can be continued" in resumed.stderr, resumed.describe()
    assert_faithful(killed, resumed, reference)
    # --fresh still starts over.
    fresh = run(dart_cmd(script("counter_while.py"), store=store, every="0", fresh=True), tmp_path)
    assert fresh.returncode == 0, fresh.describe()
    assert fresh.lines == reference


def test_corrupted_store_json(tmp_path):
    cmd, store, _ = killed_run(tmp_path)
    (store / "store.json").write_text("{nope")
    res = run(cmd, tmp_path)
    assert_dart_error(res, "store.json")
    assert res.stdout == ""


# ---------------------------------------------------------------------------- globals that cannot be saved


def test_unpicklable_global_warns_once_and_run_goes_on(tmp_path):
    target = script("unpicklable_global.py")
    reference = run(plain_cmd(target), tmp_path)
    res = run(dart_cmd(target, store=tmp_path / "store", every="0"), tmp_path)
    assert res.returncode == 0, res.describe()
    assert res.stdout == reference.stdout
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, res.describe()
    assert "'handle'" in warnings[0] and "HASH" in warnings[0], res.describe()
    assert_no_internal_traceback(res.stderr)


@pytest.mark.slow
def test_unpicklable_global_not_needed_by_resume(tmp_path):
    target = script("unpicklable_global.py")
    reference = run(plain_cmd(target), tmp_path).lines
    cmd = dart_cmd(target, store=tmp_path / "store", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=8)
    resumed = run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.describe()
    assert "resuming" in resumed.stderr
    k = killed.lines
    assert any(k[:m] + resumed.lines == reference for m in range(len(k) + 1)), resumed.describe()


@pytest.mark.slow
def test_unpicklable_global_needed_by_resume(tmp_path):
    """The same script, but its last line uses the hash object after the loop: no
    commit after its creation can be continued, so the resume falls back to the
    newest one before it (and says why), which runs the rest faithfully."""
    target = tmp_path / "unpicklable_global_used.py"
    target.write_text(script("unpicklable_global.py").read_text() + 'print("next:", handle.hexdigest())\n')
    plain = run(plain_cmd(target), tmp_path)
    cmd = dart_cmd(target, store=tmp_path / "store", every="0")
    run_and_kill(cmd, tmp_path, after_lines=8)
    resumed = run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.describe()
    assert "'handle'" in resumed.stderr and "the newest that can be continued" in resumed.stderr, resumed.describe()
    assert resumed.stdout == plain.stdout  # nothing printed before the hash object was made
    assert_no_internal_traceback(resumed.stderr)


@pytest.mark.slow
def test_unpicklable_global_rebuilt_by_its_assignment(tmp_path):
    """A lock cannot be pickled, but `lock = threading.Lock()` can run again."""
    target = tmp_path / "lock_global.py"
    target.write_text(
        "import threading, time\n"
        "lock = threading.Lock()\n"
        "total = 0\n"
        "for i in range(20):\n"
        "    with lock:\n"
        "        total += i\n"
        "    print(f'i {i} total {total}')\n"
        "    time.sleep(0.025)\n"
        "print('unlocked at the end:', not lock.locked())\n"
    )
    reference = run(plain_cmd(target), tmp_path).lines
    cmd = dart_cmd(target, store=tmp_path / "store", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=8)
    resumed = run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.describe()
    assert "rebuilds it by running line 2" in resumed.stderr, resumed.describe()
    k = killed.lines
    assert any(k[:m] + resumed.lines == reference for m in range(len(k) - 1, len(k) + 1)), resumed.describe()
