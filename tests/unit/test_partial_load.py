"""Loading one variable reads only its bytes: an array among many in one pack is
read with a range read (not the whole pack), and no other pod is loaded with it
because they share a dtype or dart's own rebuild functions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dart.capture import SavedVariables
from dart.store.layout import CommitState

from test_commit_state import Run


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io to count bytes read")
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_loading_one_array_reads_about_its_bytes(tmp_path, kind):
    run = Run(tmp_path / ".dart", staging=256 << 20)
    rng = np.random.default_rng(0)
    arrays = {f"a{i}": rng.random(1 << 18) for i in range(12)}  # 12 x 2 MiB, one pack
    if kind == "torch":
        torch = pytest.importorskip("torch")
        arrays = {k: torch.from_numpy(v) for k, v in arrays.items()}
    record = run.commit(arrays)
    run.close()
    state = CommitState(run.store, record)
    assert len({row[1] for row in state.index["buffers"][0][1]}) == 1
    assert state.pods["g:a7"][4] == []  # depends on no other pod
    before = _bytes_read()
    got = SavedVariables(run.store, record)["a7"]
    read = _bytes_read() - before
    want = np.asarray(arrays["a7"])
    assert np.array_equal(np.asarray(got), want)
    assert read <= want.nbytes + (64 << 10), (read, want.nbytes)
