"""SIGKILL a torch training script whose tensors are committed as XOR delta chains
(format 4, flush/xordelta.py), run the same command again: the resumed output is the
uninterrupted output and the final state is bit-identical, with kills past the chain
limit (the buffer was written whole again) and while a delta commit is written;
fsck finds the store clean."""

from __future__ import annotations

import pytest

from conftest import (
    PYTHON,
    check_resumed,
    child_env,
    dart_cmd,
    dart_log,
    orphan_objects,
    run,
    run_and_kill,
    script,
)

pytestmark = pytest.mark.slow

WIDE = "train_torch_wide.py"
#: Every commit here is a candidate for a delta: no share-of-time budget (at
#: --every 0 the default 5 % would write most of them raw).
NO_BUDGET = {"DART_XOR_BUDGET": "1"}


def formats(store) -> list[int]:
    from dart.store import Store

    s = Store(store)
    return [s.get_commit(c["id"]).state.get("format") for c in dart_log(store, store.parent)]


def resume(cmd, cwd, reference, killed):
    store = cmd[cmd.index("--store") + 1]
    newest = dart_log(store, cwd)[0]
    resumed = run(cmd, cwd=cwd, env=child_env(**NO_BUDGET))
    assert f"from commit {newest['id'][:12]}" in resumed.stderr, resumed.describe()
    check_resumed(reference, killed, resumed, 1)
    fsck = run([PYTHON, "-m", "dart", "fsck", "--store", str(store)], cwd=cwd)
    assert fsck.returncode == 0, fsck.describe()
    return resumed


@pytest.mark.parametrize("k", [5, 14])  # inside the first chain, and past its limit of 8
def test_wide_torch_killed_after_k_lines_resumes_bit_identical(tmp_path, reference_outputs, k):
    reference = reference_outputs(WIDE)
    store = tmp_path / "store"
    cmd = dart_cmd(script(WIDE), store=store, every="0")
    killed = run_and_kill(cmd, tmp_path, env=child_env(**NO_BUDGET), after_lines=k)
    seen = formats(store)
    assert 4 in seen, f"no commit was written with XOR deltas: formats {seen}"
    if k > 10:
        assert seen.count(4) >= 8 and 2 in seen[:-2], seen  # a chain ended: written whole again
    resume(cmd, tmp_path, reference, killed)


def test_wide_torch_killed_while_a_delta_commit_is_written(tmp_path, reference_outputs):
    reference = reference_outputs(WIDE)
    store = tmp_path / "store"
    cmd = dart_cmd(script(WIDE), store=store, every="0")
    killed = run_and_kill(cmd, tmp_path, env=child_env(DART_TEST_FLUSH_DELAY="0.3", **NO_BUDGET), after_lines=6,
                          extra_delay=0.15)
    assert orphan_objects(store), "the kill did not land while a commit was being written"
    assert 4 in formats(store)
    resume(cmd, tmp_path, reference, killed)
