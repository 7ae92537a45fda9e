"""Helpers for the integration tests: run scripts plainly and under dart as real
processes, kill them with SIGKILL at chosen points, re-run them and compare.

Every child has a deadline: a hung child fails the test instead of hanging CI.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from dart.store.layout import object_names
from dart.store.record import decode_record

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
PYTHON = sys.executable
#: Seconds any single child may take before the test fails.
DEADLINE = 90.0

ENABLE_LINES = "import dart; dart.enable()\n"


def script(name: str) -> Path:
    path = SCRIPTS / name
    assert path.is_file(), path
    return path


def child_env(**extra: str) -> dict:
    """The environment of a child: no DART_* settings of our own, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DART_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def dart_cmd(script_path, *args, store=None, every="0", fresh=False) -> list[str]:
    cmd = [PYTHON, "-m", "dart", "run"]
    if store is not None:
        cmd += ["--store", str(store)]
    if every is not None:
        cmd += ["--every", str(every)]
    if fresh:
        cmd.append("--fresh")
    return cmd + [str(script_path), *map(str, args)]


def plain_cmd(script_path, *args) -> list[str]:
    return [PYTHON, str(script_path), *map(str, args)]


def enable_variant(src: Path, folder: Path) -> Path:
    """A copy of ``src`` in ``folder`` with ``import dart; dart.enable()`` as its first line."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name.replace(".py", "_enabled.py")
    dest.write_text(ENABLE_LINES + src.read_text())
    return dest


@dataclass
class Result:
    cmd: list
    returncode: int
    stdout: str
    stderr: str
    killed: bool = False
    elapsed: float = 0.0

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def describe(self) -> str:
        return (
            f"command: {' '.join(map(str, self.cmd))}\nexit: {self.returncode} killed: {self.killed}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def run(cmd, cwd, env=None, timeout: float = DEADLINE) -> Result:
    """Run to completion (fails the test if the child outlives ``timeout``)."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            cwd=cwd,
            env=child_env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child hung for more than {timeout} s: {cmd}\nstdout so far:\n{exc.stdout}\nstderr:\n{exc.stderr}")
    return Result(cmd, proc.returncode, proc.stdout, proc.stderr, elapsed=time.monotonic() - started)


def run_and_kill(
    cmd,
    cwd,
    env=None,
    *,
    after_lines: int | None = None,
    extra_delay: float = 0.0,
    predicate=None,
    timeout: float = DEADLINE,
) -> Result:
    """Start ``cmd``, read its stdout line by line and SIGKILL it once ``after_lines``
    lines were read (or ``predicate(lines)`` is true), ``extra_delay`` seconds later.

    Lines the child wrote before it died are still read from the pipe. Fails the
    test if the child ends on its own before the kill point or hangs.
    """
    assert (after_lines is None) != (predicate is None)
    if predicate is None:
        predicate = lambda lines: len(lines) >= after_lines  # noqa: E731
    stderr_path = Path(cwd) / f".stderr.{os.getpid()}.{time.monotonic_ns()}"
    started = time.monotonic()
    with open(stderr_path, "w+") as err:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env=child_env() if env is None else env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
        )
        lines_q: queue.Queue = queue.Queue()

        def reader():
            for line in proc.stdout:
                lines_q.put(line)
            lines_q.put(None)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        lines: list[str] = []
        killed = False
        eof = False
        try:
            while not eof:
                remaining = started + timeout - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                try:
                    item = lines_q.get(timeout=remaining)
                except queue.Empty:
                    raise TimeoutError from None
                if item is None:
                    eof = True
                    break
                lines.append(item)
                if predicate(lines):
                    if extra_delay:
                        time.sleep(extra_delay)
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
            # Whatever the child wrote before it died is still in the pipe.
            while not eof:
                remaining = started + timeout - time.monotonic()
                item = lines_q.get(timeout=max(remaining, 0.1))
                if item is None:
                    eof = True
                else:
                    lines.append(item)
            proc.wait(timeout=max(started + timeout - time.monotonic(), 5))
        except (TimeoutError, queue.Empty, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            err.seek(0)
            pytest.fail(f"child hung for more than {timeout} s: {cmd}\nstdout so far:\n{''.join(lines)}\nstderr:\n{err.read()}")
        err.seek(0)
        stderr = err.read()
    stderr_path.unlink()
    result = Result(cmd, proc.returncode, "".join(lines), stderr, killed=killed, elapsed=time.monotonic() - started)
    if not killed:
        pytest.fail(f"the child ended before the kill point\n{result.describe()}")
    assert proc.returncode == -signal.SIGKILL, result.describe()
    return result


def seeded_delay(seed: int, low: float, high: float) -> float:
    return random.Random(seed).uniform(low, high)


def check_resumed(reference: list[str], killed: Result, resumed: Result, max_repeated: int) -> int:
    """killed[:m] + resumed == reference for some m with len(killed) - m <= max_repeated.

    Returns the number of repeated lines. The final sha256 line must match too.
    """
    context = (
        f"\n=== killed run ===\n{killed.describe()}\n=== resumed run ===\n{resumed.describe()}"
        f"\n=== reference ===\n" + "\n".join(reference)
    )
    assert resumed.returncode == 0, context
    assert resumed.lines and resumed.lines[-1] == reference[-1], "final state differs" + context
    assert resumed.lines[-1].startswith("sha256 ")
    k = killed.lines
    r = resumed.lines
    # The killed run's output must be a prefix of the reference.
    assert k == reference[: len(k)], "the killed run printed something else than the reference" + context
    for m in range(len(k), -1, -1):
        if k[:m] + r == reference:
            repeated = len(k) - m
            assert repeated <= max_repeated, (
                f"{repeated} lines were printed again after the resume (at most {max_repeated} allowed)" + context
            )
            return repeated
    pytest.fail("killed + resumed output is not the uninterrupted output" + context)


def dart_log(store, cwd, *extra) -> list[dict]:
    res = run([PYTHON, "-m", "dart", "log", "--store", str(store), "--json", *extra], cwd=cwd)
    assert res.returncode == 0, res.describe()
    return json.loads(res.stdout)


def assert_no_internal_traceback(stderr: str) -> None:
    """No traceback from dart's own code (a user-level 'dart: error:' line is fine)."""
    assert "Traceback (most recent call last)" not in stderr, stderr
    for marker in ("site-packages/dart/", "src/dart/", "dart/runner.py", "dart/session.py"):
        assert marker not in stderr, stderr


@pytest.fixture(scope="session")
def reference_outputs(tmp_path_factory):
    """Plain-python output of a script, computed once per session and argument list."""
    cache: dict = {}
    folder = tmp_path_factory.mktemp("reference")

    def get(name: str, *args) -> list[str]:
        key = (name, args)
        if key not in cache:
            res = run(plain_cmd(script(name), *args), cwd=folder)
            assert res.returncode == 0, res.describe()
            assert res.lines[-1].startswith("sha256 "), res.describe()
            cache[key] = res.lines
        return cache[key]

    return get


def orphan_objects(store: Path) -> set[str]:
    """Objects no commit record names: what a commit killed mid-write leaves."""
    named = set()
    for record_path in (store / "commits").glob("*.json"):
        named.update(object_names(decode_record(record_path.read_bytes(), str(record_path))))
    present = {p.parent.name + p.name for p in (store / "objects").glob("*/*") if p.is_file()}
    return present - named
