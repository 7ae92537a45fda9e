"""Ctrl-C while dart is committing ends the program as Ctrl-C without dart does:
exit code 130 and a KeyboardInterrupt traceback of the user's code only."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time

import pytest

from conftest import DEADLINE, ENABLE_LINES, child_env, dart_cmd, plain_cmd

SCRIPT = textwrap.dedent(
    """
    import time

    def train():
        for step in range(1000):
            print("step", step, flush=True)
            time.sleep(0.01)

    train()
    """
)


#: seconds a program may take to end after Ctrl-C (it drains one commit)
AFTER_INTERRUPT = 30


def _interrupt(cmd, cwd, env):
    """Start ``cmd``, wait for its third line, then send SIGINT (as Ctrl-C does).
    If it does not end, dump its threads (faulthandler, SIGABRT) into the failure."""
    env = dict(env, PYTHONFAULTHANDLER="1")
    # A test run started in the background by a shell inherits SIGINT ignored, and a
    # Python that starts with SIGINT ignored keeps ignoring it: give the child Ctrl-C back.
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for _ in range(3):
            proc.stdout.readline()
        time.sleep(0.3)  # with a 1 s flush delay, the program is waiting for a commit now
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=AFTER_INTERRUPT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=DEADLINE)
            pytest.fail(f"the program did not end within {AFTER_INTERRUPT} s of Ctrl-C; its threads:\n{err[-6000:]}")
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("how", ["run", "enable"])
def test_ctrl_c_during_a_commit(tmp_path, how):
    path = tmp_path / "loop.py"
    path.write_text((ENABLE_LINES if how == "enable" else "") + SCRIPT)
    # Every safe point commits and waits until the commit is durable; the
    # flusher takes a second per commit, so the interrupt lands in dart's wait.
    env = child_env(DART_TEST_FLUSH_DELAY="1.0", DART_EVERY="0", DART_STORE=str(tmp_path / ".dart"))
    cmd = dart_cmd(path, every=None) if how == "run" else plain_cmd(path)
    code, err = _interrupt([str(c) for c in cmd], tmp_path, env)
    assert code in (130, -signal.SIGINT), err
    assert "KeyboardInterrupt" in err and "Traceback" in err, err
    assert f'File "{path}"' in err and "in train" in err, err
    frames = [line for line in err.splitlines() if line.strip().startswith("File ")]
    assert frames and all("dart" + "/" not in line.replace(str(tmp_path), "") for line in frames), err
    assert "threading.py" not in err, err
