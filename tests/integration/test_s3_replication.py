"""Runs that move between machines through an S3 store (a real moto server
process): machine A (a directory of its own) runs with ``--store s3://...`` and is
SIGKILLed; machine B (another directory, a copy of the script, no local store,
only the URL) runs the same command and continues bit-identically. Two machines
racing on one run; the network to the server cut and restored during a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import PYTHON, check_resumed, child_env, dart_cmd, dart_log, run, run_and_kill, script, seeded_delay
from s3server import Relay, s3_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

NUMPY = "train_numpy.py"
NUMPY_ITERATION_LINES = 2


def machine(tmp_path, name: str) -> tuple:
    """A working directory of its own holding a copy of the training script."""
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(script(NUMPY), folder / NUMPY)
    return folder, folder / NUMPY


def s3_log(url, cwd, endpoint) -> list[dict]:
    """`dart log --json` of an S3 store, told the endpoint by --s3-endpoint."""
    return dart_log(url, cwd, "--s3-endpoint", endpoint)


def env_for(server, endpoint=None, **extra) -> dict:
    return child_env(**server.env(endpoint), **extra)


@pytest.mark.parametrize("how", ["after-6-lines", "random-0", "mid-upload", "before-ref"])
def test_killed_on_machine_a_resumed_on_machine_b(tmp_path, s3_server, reference_outputs, how):
    reference = reference_outputs(NUMPY)
    url = f"s3://{s3_server.new_bucket()}/team/runs"
    dir_a, script_a = machine(tmp_path, "machine-a")
    dir_b, _ = machine(tmp_path, "machine-b")
    env = env_for(s3_server)
    # The same command line on both machines: the script by its relative name.
    cmd = dart_cmd(NUMPY, store=url, every="0")
    if how in ("mid-upload", "before-ref"):
        # dies as the 6th object upload starts (nothing of it visible), or with the
        # 4th commit's record uploaded and its ref not moved yet
        env_a = dict(env, DART_TEST_CRASH_AT="object-tmp:6" if how == "mid-upload" else "ref-tmp:4")
        killed = subprocess.run(cmd, cwd=dir_a, env=env_a, capture_output=True, text=True, timeout=90)
        assert killed.returncode == 70, killed.stderr
        from conftest import Result

        killed = Result(cmd, killed.returncode, killed.stdout, killed.stderr, killed=True)
    elif how.startswith("random"):
        seed = int(how[-1])
        killed = run_and_kill(cmd, dir_a, env, after_lines=1, extra_delay=seeded_delay(seed, 0.05, 0.5))
    else:
        killed = run_and_kill(cmd, dir_a, env, after_lines=6)
    assert not (dir_a / ".dart").exists() and not (dir_b / ".dart").exists()
    # the kill left the remote store consistent: nothing damaged, at most garbage
    fsck = run([PYTHON, "-m", "dart", "fsck", "--store", url, "--json"], cwd=dir_b, env=env)
    assert fsck.returncode == 0 and json.loads(fsck.stdout)["clean"], fsck.describe()
    log_before = s3_log(url, dir_b, s3_server.endpoint)
    resumed = run(cmd, cwd=dir_b, env=env)
    if log_before:
        assert "dart: resuming run" in resumed.stderr, resumed.describe()
        assert f"from commit {log_before[0]['id'][:12]}" in resumed.stderr, resumed.describe()
    check_resumed(reference, killed, resumed, NUMPY_ITERATION_LINES)
    log = s3_log(url, dir_b, s3_server.endpoint)
    # one run: B continued A's; the history is one chain, newest first
    assert len({c["run"] for c in log}) == 1
    for newer, older in zip(log, log[1:]):
        assert newer["parent"] == older["id"]
    assert not (dir_a / ".dart").exists() and not (dir_b / ".dart").exists()
    assert script_a.exists()


def test_two_machines_racing_on_one_run(tmp_path, s3_server, reference_outputs):
    """B starts the command while A runs it: B is refused, naming A's process and
    host; after A is killed, B resumes (the lease of a dead process is taken over)."""
    reference = reference_outputs(NUMPY)
    url = f"s3://{s3_server.new_bucket()}/race"
    dir_a, _ = machine(tmp_path, "machine-a")
    dir_b, _ = machine(tmp_path, "machine-b")
    env = env_for(s3_server)
    cmd = dart_cmd(NUMPY, store=url, every="0")
    proc = subprocess.Popen(cmd, cwd=dir_a, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        busy = run(cmd, cwd=dir_b, env=env)
        assert busy.returncode == 2, busy.describe()
        assert f"is already running in process {proc.pid} on host {os.uname().nodename}" in busy.stderr, busy.describe()
        assert "Traceback" not in busy.stderr
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    from conftest import Result

    killed = Result(cmd, -9, "".join(lines) + rest, "", killed=True)
    resumed = run(cmd, cwd=dir_b, env=env)
    check_resumed(reference, killed, resumed, NUMPY_ITERATION_LINES)


def test_network_cut_and_restored_during_a_run(tmp_path, s3_server, reference_outputs):
    """The server becomes unreachable mid-run: the program goes on, dart warns once,
    and commits again once the server is back; the run ends with its right state
    and a later resume from the store is consistent."""
    reference = reference_outputs(NUMPY, 8)
    relay = Relay(s3_server.port)
    try:
        url = f"s3://{s3_server.new_bucket()}/outage"
        folder, _ = machine(tmp_path, "machine-a")
        env = env_for(s3_server, relay.endpoint)
        cmd = dart_cmd(NUMPY, 8, store=url, every="0")
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        try:
            while len(lines) < 5:
                lines.append(proc.stdout.readline())
            relay.stop()  # the network is gone
            while len(lines) < 25:
                lines.append(proc.stdout.readline())
            relay.start()  # and back
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "".join(lines).splitlines() + out.splitlines() == reference
        assert err.count("could not be written to store") == 1, err  # warned once
        assert "durable again" in err, err
        log = s3_log(url, folder, relay.endpoint)
        assert log and log[0]["message"] == "finished"
        assert len(log) < len(reference)  # the commits of the outage were not made
    finally:
        relay.stop()


def test_network_cut_with_on_store_error_stop(tmp_path, s3_server, reference_outputs):
    relay = Relay(s3_server.port)
    try:
        url = f"s3://{s3_server.new_bucket()}/stop"
        folder, _ = machine(tmp_path, "machine-a")
        env = env_for(s3_server, relay.endpoint, DART_ON_STORE_ERROR="stop")
        cmd = dart_cmd(NUMPY, 8, store=url, every="0")
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(4):
                proc.stdout.readline()
            relay.stop()
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode != 0
        assert "stopping the program (on_store_error=stop)" in err, err
        assert "Traceback" not in err
        relay.start()
        # resumed later, elsewhere, when the server is back: the right final state
        other, _ = machine(tmp_path, "machine-b")
        resumed = run(cmd, cwd=other, env=env_for(s3_server, relay.endpoint))
        assert resumed.returncode == 0, resumed.describe()
        assert resumed.lines[-1] == reference_outputs(NUMPY, 8)[-1]
    finally:
        relay.stop()


TABLE_SCRIPT = """\
import hashlib, sys, time
import numpy as np
rng = np.random.default_rng(0)
table = rng.random((6144, 1024), dtype=np.float32)  # 24 MiB, 4 KiB rows, barely compressible
for step in range(int(sys.argv[1])):
    rows = rng.choice(len(table), 8, replace=False)
    table[rows] += step
    print(f"step {step} rows {int(rows.sum())}", flush=True)
    time.sleep(0.02)
print("sha256", hashlib.sha256(table.tobytes()).hexdigest())
"""


def test_a_commit_after_a_resume_on_another_machine_writes_only_what_changed(tmp_path, s3_server):
    """A 24 MiB table changed a few rows a step: one commit uploads all of it (a
    multipart upload), and after the resume on machine B each commit uploads only
    the changed rows, not the table again."""
    name = "table.py"
    dirs = []
    for m in ("machine-a", "machine-b"):
        (tmp_path / m).mkdir()
        (tmp_path / m / name).write_text(TABLE_SCRIPT)
        dirs.append(tmp_path / m)
    reference = run([PYTHON, name, 14], cwd=dirs[0]).lines
    url = f"s3://{s3_server.new_bucket()}/table"
    env = env_for(s3_server)
    cmd = dart_cmd(name, 14, store=url, every="0")
    killed = run_and_kill(cmd, dirs[0], env, after_lines=6)
    before = {c["id"] for c in s3_log(url, dirs[1], s3_server.endpoint)}
    resumed = run(cmd, cwd=dirs[1], env=env)
    check_resumed(reference, killed, resumed, 1)
    log = s3_log(url, dirs[1], s3_server.endpoint)
    written = [c["bytes_written"] for c in log[::-1]]
    assert max(written) > 16 << 20, written  # the whole table (zstd takes a little off), once
    after_resume = [c for c in log if c["id"] not in before and c["message"] != "finished"]
    assert after_resume
    assert max(c["bytes_written"] for c in after_resume) < 1 << 20, written
