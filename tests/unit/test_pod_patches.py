"""Large pods that change a little are written as patches on their last version
(codec.make_patch): the patch rebuilds the new version exactly, a commit of a big
object graph with 1 % of it replaced writes about the changed part, every commit
of the chain loads back equal to what was committed, and a damaged patch is
reported as damage, not loaded."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dart.capture import SavedVariables, load_roots
from dart.errors import CorruptObjectError
from dart.flush.flusher import PATCH_CHAIN
from dart.store.codec import apply_patch, make_patch

from test_commit_state import Run


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 40), st.binary(max_size=40)),
                                          max_size=6))
def test_a_patch_rebuilds_the_new_version_exactly(old, edits):
    new = bytearray(old)
    for at, cut, insert in edits:
        at = min(at, len(new))
        new[at : at + cut] = insert
    patch = make_patch(old, bytes(new))
    assert apply_patch(old, patch, "test") == bytes(new)


def _graph(n, seed=0):
    rng = random.Random(seed)
    return {f"key{i}": [i, f"name-{i}", [float(i), rng.random()]] for i in range(n)}


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path / ".dart")
    yield r
    r.close()


def test_a_big_graph_with_one_percent_replaced_writes_about_the_changed_part(run):
    import pickle

    data = _graph(40_000)
    first = run.commit({"data": data, "step": 0})
    assert first.state["format"] == 2  # nothing to patch against yet
    rng = random.Random(1)
    records, expected = [], []
    for step in range(1, PATCH_CHAIN + 3):
        picked = rng.sample(sorted(data), len(data) // 100)
        for key in picked:
            data[key] = [step, f"new-{key}", [rng.random()]]
        changed = sum(len(pickle.dumps([k, data[k]], 5)) for k in picked)
        record = run.commit({"data": data, "step": step})
        records.append(record)
        expected.append(pickle.loads(pickle.dumps(data, 5)))
        if step <= PATCH_CHAIN:
            assert record.state["format"] == 3
            assert record.bytes_written <= 2 * changed + 8192, (step, record.bytes_written, changed)
    assert records[PATCH_CHAIN].state["format"] == 2  # the chain was full: written whole again
    for record, want in zip(records, expected):
        assert load_roots(run.store, record)["globals"]["data"] == want
        assert SavedVariables(run.store, record)["data"] == want


def test_a_damaged_patch_is_reported_not_loaded(run):
    data = _graph(30_000)
    run.commit({"data": data})
    data["key5"] = ["changed"]
    record = run.commit({"data": data})
    assert record.state["format"] == 3
    from dart.store.layout import CommitState

    state = CommitState(run.store, record)
    obj = state.objects[state.patches["g:data"][-1][0]]
    path = run.store.root / "objects" / obj[:2] / obj[2:]
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptObjectError):
        load_roots(run.store, record)
