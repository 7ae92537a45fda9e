"""Commits through the whole pipeline in real runs: sparse buffers written as the
chunks that changed, a staging area smaller than a commit, kills, resume, and
dart.load from another process."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import PYTHON, check_resumed, child_env, dart_cmd, dart_log, plain_cmd, run, run_and_kill, script

pytestmark = pytest.mark.slow

SPARSE = "sparse_table.py"
TABLE_BYTES = 24 << 20


def test_sparse_buffer_commits_write_only_changed_rows_and_resume(tmp_path):
    reference = run(plain_cmd(script(SPARSE)), tmp_path)
    assert reference.returncode == 0, reference.describe()
    store = tmp_path / ".dart"
    cmd = dart_cmd(script(SPARSE), store=store, every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=25, extra_delay=0.01)
    commits = dart_log(store, tmp_path)
    assert len(commits) >= 10
    written = [c["bytes_written"] for c in reversed(commits)]  # oldest first
    whole = [i for i, n in enumerate(written) if n > 0.8 * TABLE_BYTES]  # zstd takes a little off
    assert len(whole) == 1, written  # the whole table once, at the first commit inside main()
    # Later commits: 8 rows of the table (32 KiB), the model and small pods; never the table again.
    assert len(written) - whole[0] > 5 and all(n < 2 << 20 for n in written[whole[0] + 1 :]), written
    resumed = run(cmd, tmp_path)
    assert "dart: resuming run" in resumed.stderr, resumed.describe()
    check_resumed(reference.lines, killed, resumed, max_repeated=1)
    assert resumed.lines[-1] == reference.lines[-1]
    # The resumed run starts from the loaded commit's extents: it never writes the table whole.
    newer = dart_log(store, tmp_path)[: -len(commits)]
    assert newer and all(c["bytes_written"] < 2 << 20 for c in newer), [c["bytes_written"] for c in newer]


def test_staging_smaller_than_a_commit_waits_says_so_and_loses_nothing(tmp_path):
    reference = run(plain_cmd(script(SPARSE), "6"), tmp_path)
    store = tmp_path / ".dart"
    cmd = [PYTHON, "-m", "dart", "run", "--store", store, "--every", "0", "--staging", "8M", script(SPARSE), "6"]
    done = run(cmd, tmp_path)
    assert done.returncode == 0, done.describe()
    assert done.lines == reference.lines
    assert done.stderr.count("staging area") == 1, done.stderr  # said once
    assert "DART_STAGING" in done.stderr


def test_bad_staging_size_is_refused(tmp_path):
    cmd = [PYTHON, "-m", "dart", "run", "--store", tmp_path / ".dart", "--staging", "lots", script(SPARSE)]
    res = run(cmd, tmp_path)
    assert res.returncode == 2 and "--staging" in res.stderr and "512M" in res.stderr, res.describe()


def test_load_from_another_process_is_lazy(tmp_path):
    store = tmp_path / ".dart"
    (tmp_path / "keep.py").write_text(textwrap.dedent(
        """
        import numpy as np
        small = {"lr": 0.1}
        big = np.arange(1 << 20, dtype=np.float64)
        alias = big
        print("done")
        """
    ))
    res = run(dart_cmd(tmp_path / "keep.py", store=store, every="0"), tmp_path)
    assert res.returncode == 0, res.describe()
    probe = textwrap.dedent(
        f"""
        import json, dart
        v = dart.load(store={str(store)!r})
        before = v.loaded()
        small = v["small"]
        after_small = v.loaded()
        same = v["alias"] is v["big"]
        only = dart.load(store={str(store)!r}, names="small")
        print(json.dumps([sorted(v), before, small, after_small, same, only, float(v["big"][-1])]))
        """
    )
    out = run([PYTHON, "-c", probe], tmp_path, env=child_env())
    assert out.returncode == 0, out.describe()
    names, before, small, after_small, same, only, last = json.loads(out.lines[-1])
    assert names == ["alias", "big", "np", "small"] and before == [] and small == {"lr": 0.1}
    assert after_small == ["small"] and same is True and only == {"small": {"lr": 0.1}}
    assert last == float((1 << 20) - 1)
