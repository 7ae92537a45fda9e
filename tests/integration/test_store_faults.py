"""Faults of the store while the program runs (a full disk, a store deleted
under it, a read-only store): the program's own output and exit code are
unchanged, dart warns once per problem, and the store is never left damaged.
Real filesystems: a size-limited tmpfs, mounted by the test (root only)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import PYTHON, assert_no_internal_traceback, child_env, dart_cmd, plain_cmd, run, run_and_kill, script

GROWING = "growing_state.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs at tmp_path/fs (unmounted after the test)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fsck(store, cwd):
    res = run([PYTHON, "-m", "dart", "fsck", "--store", str(store), "--json"], cwd)
    assert res.returncode in (0, 1), res.describe()
    return json.loads(res.stdout)


@pytest.mark.parametrize("every", ["0", "0.05"])
def test_full_disk_keeps_the_program_running(tmp_path, small_fs, every):
    plain = run(plain_cmd(script(GROWING)), tmp_path)
    store = small_fs / "store"
    res = run(dart_cmd(script(GROWING), store=store, every=every), tmp_path)
    assert res.returncode == 0, res.describe()
    assert res.stdout == plain.stdout
    assert res.stderr.count("could not be written") == 1, res.describe()  # once per problem
    assert "No space left on device" in res.stderr
    assert_no_internal_traceback(res.stderr)
    report = _fsck(store, tmp_path)
    assert report["clean"], report  # what was written is intact; the rest is only garbage


def test_full_disk_with_stop_then_resume_after_freeing_space(tmp_path, small_fs):
    plain = run(plain_cmd(script(GROWING)), tmp_path)
    store = small_fs / "store"
    cmd = dart_cmd(script(GROWING), store=store, every="0")
    cmd[cmd.index("run") + 1 : cmd.index("run") + 1] = ["--on-store-error", "stop"]
    stopped = run(cmd, tmp_path)
    assert stopped.returncode == 2, stopped.describe()
    assert "dart: error: stopping the program (on_store_error=stop): commits cannot be written" in stopped.stderr
    assert_no_internal_traceback(stopped.stderr)
    assert _fsck(store, tmp_path)["clean"]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    resumed = run(cmd, tmp_path)
    assert resumed.returncode == 0 and "resuming run" in resumed.stderr, resumed.describe()
    lines = stopped.lines
    assert any(lines[:m] + resumed.lines == plain.lines for m in range(len(lines) + 1)), resumed.describe()


@pytest.fixture
def ext4_fs(tmp_path):
    """A 32 MiB ext4 filesystem on a loop device at tmp_path/ext4."""
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True) if made.returncode == 0 else made
    if mounted.returncode != 0:
        pytest.skip(f"cannot make and mount an ext4 loop device here: {mounted.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("every", ["0", "0.05"])
def test_io_errors_keep_the_program_running(tmp_path, ext4_fs, every):
    """The store's filesystem shuts down mid-run (EXT4_IOC_SHUTDOWN): every
    write fails with EIO from then on."""
    plain = run(plain_cmd(script(GROWING)), tmp_path)
    store = ext4_fs / "store"
    res = run(dart_cmd(script(GROWING), store=store, every=every), tmp_path, env=child_env(SHUT_DOWN_FS=str(ext4_fs)))
    assert res.returncode == 0, res.describe()
    assert res.stdout == plain.stdout
    assert "Input/output error" in res.stderr and res.stderr.count("could not be written") == 1, res.describe()
    assert_no_internal_traceback(res.stderr)


@pytest.mark.parametrize("every", ["0", "0.05"])
def test_store_deleted_while_running(tmp_path, every):
    plain = run(plain_cmd(script(GROWING)), tmp_path)
    store = tmp_path / "store"
    res = run(dart_cmd(script(GROWING), store=store, every=every), tmp_path, env=child_env(DELETE_STORE=str(store)))
    assert res.returncode == 0, res.describe()
    assert res.stdout == plain.stdout
    assert res.stderr.count("could not be written") == 1, res.describe()
    assert_no_internal_traceback(res.stderr)


def test_read_only_store_is_listed_loaded_and_resumed(tmp_path, small_fs):
    plain = run(plain_cmd(script("counter_while.py")), tmp_path)
    store = small_fs / "store"
    cmd = dart_cmd(script("counter_while.py"), store=store, every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=6)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    log = run([PYTHON, "-m", "dart", "log", "--store", str(store), "--json"], tmp_path)
    assert log.returncode == 0 and json.loads(log.stdout), log.describe()
    load = run([PYTHON, "-c", f"import dart; v = dart.load(store={str(store)!r}); print(sorted(v))"], tmp_path)
    assert load.returncode == 0 and "total" in load.stdout, load.describe()
    resumed = run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.describe()
    assert "read-only" in resumed.stderr and "resuming run" in resumed.stderr, resumed.describe()
    k = killed.lines
    assert any(k[:m] + resumed.lines == plain.lines for m in range(len(k) + 1)), resumed.describe()
    assert_no_internal_traceback(resumed.stderr)
