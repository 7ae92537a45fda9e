"""Commits written as pods + chunk deltas and read back: identity across pods, exact
bytes, buffers that change, move or grow, lazy loading, bytes written."""

from __future__ import annotations

import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dart.capture import Capturer, SavedVariables, load_roots
from dart.flush import CommitWriter
from dart.store import Store


class Run:
    """Commits a namespace as a session does (capture -> stage -> flush) and reads
    commits back."""

    def __init__(self, root, staging=64 << 20, dirty=False):
        self.store = Store(root)
        run_id = self.store.create_run({"key": "t"})
        self.main = types.ModuleType("__main__")
        self.capturer = Capturer(self.main)
        self.writer = CommitWriter(self.store, run_id, None, staging=staging, dirty=dirty)

    def commit(self, namespace: dict, frames=()) -> dict:
        pods, keep, _ = self.capturer.capture(namespace, {}, list(frames))
        handle = self.writer.commit(pods, {"message": None})
        del keep
        cid = handle.wait(30)
        return self.store.get_commit(cid)

    def load(self, record) -> dict:
        return load_roots(self.store, record)["globals"]

    def close(self):
        self.writer.close()


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path / ".dart")
    yield r
    r.close()


def test_aliasing_across_pods(run):
    shared = {"w": np.arange(100_000.0)}
    ns = {"a": shared, "b": shared, "view": shared["w"][10:20], "c": [shared, shared["w"]]}
    got = run.load(run.commit(ns))
    assert got["a"] is got["b"] is got["c"][0]
    assert got["c"][1] is got["a"]["w"]
    got["a"]["w"][10] = -1.0
    assert got["view"][0] == -1.0  # the view still looks at the same memory


def test_torch_shared_storage_and_optimizer_across_pods(run):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(300, 200)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 300)).sum().backward()
    opt.step()
    base = torch.arange(50_000.0)
    ns = {"model": model, "opt": opt, "base": base, "half": base[:25_000], "weight": model.weight}
    got = run.load(run.commit(ns))
    assert got["weight"] is got["model"].weight
    assert got["opt"].param_groups[0]["params"][0] is got["model"].weight
    assert got["half"].untyped_storage().data_ptr() == got["base"].untyped_storage().data_ptr()
    assert torch.equal(got["opt"].state[got["model"].weight]["exp_avg"], opt.state[model.weight]["exp_avg"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dtype=st.sampled_from(["<f4", ">f8", "<i2", ">u4", "u1", "<c16", "?", "<M8[s]"]),
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    order=st.sampled_from("CF"),
    step=st.sampled_from([1, 2, -1]),
    seed=st.integers(0, 2**16),
)
def test_dtypes_endianness_strides_round_trip_exactly(run, dtype, shape, order, step, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize * 200, dtype=np.uint8)
    big = np.frombuffer(raw.tobytes(), dtype=dtype)[: int(np.prod(shape)) * 200].copy()
    arr = np.asarray(big[: int(np.prod(shape))].reshape(shape), order=order)
    ns = {"big": big, "arr": arr, "strided": big[::step]}
    got = run.load(run.commit(ns))
    for name, value in ns.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape
        assert got[name].tobytes() == value.tobytes()
        assert got[name].flags.c_contiguous == value.flags.c_contiguous


def test_buffers_changed_moved_resized_between_commits(run):
    rng = np.random.default_rng(1)
    ns = {"a": rng.random(1 << 18), "b": rng.random(1 << 17)}
    first = run.commit(ns)
    ns["a"][5] = 7.0  # changed in place
    ns["b"] = np.concatenate([ns["b"], rng.random(1000)])  # re-allocated, resized
    ns["c"] = ns["a"].copy()  # new, equal bytes elsewhere
    second = run.commit(ns)
    ns["a"] = ns["a"][: 1 << 17].copy()  # shrunk
    third = run.commit(ns)
    got1, got2, got3 = run.load(first), run.load(second), run.load(third)
    assert got1["a"][5] != 7.0 and got2["a"][5] == 7.0
    assert np.array_equal(got2["b"], ns["b"]) and np.array_equal(got2["c"], got2["a"])
    assert np.array_equal(got3["a"], ns["a"]) and got3["a"].shape == (1 << 17,)
    # staged: one 4 KiB chunk of a; b (new address and size) and c (new) whole
    assert second.staged_bytes == 4096 + ns["b"].nbytes + got2["c"].nbytes


def test_sparse_change_writes_about_the_changed_rows(run):
    rng = np.random.default_rng(2)
    table = rng.random((4096, 1024), dtype=np.float32)  # 16 MiB, 4 KiB rows
    ns = {"table": table}
    run.commit(ns)
    rows = rng.choice(4096, 41, replace=False)  # 1 %
    table[rows] += 1
    record = run.commit(ns)
    changed = len(rows) * 4096
    assert record.bytes_written <= 2 * changed + 64 * 1024
    assert np.array_equal(run.load(record)["table"], table)
    unchanged = run.commit(ns)
    assert unchanged.bytes_written < 16 * 1024  # index and the commit's small pods only


def test_frame_locals_and_pods_without_changes_are_reused(run):
    ns = {"x": list(range(1000)), "y": "same"}
    first = run.commit(ns, frames=[("main", {"i": 3, "data": ns["x"]})])
    roots = load_roots(run.store, first)
    assert roots["frames"][0]["data"] is roots["globals"]["x"] and roots["frames"][0]["i"] == 3
    second = run.commit(ns, frames=[("main", {"i": 4, "data": ns["x"]})])
    assert second.bytes_written < first.bytes_written


def test_lazy_load_reads_only_what_is_asked(run, monkeypatch):
    ns = {"small": {"k": 1}, "big": np.ones(1 << 20), "other": np.zeros(1 << 20)}
    record = run.commit(ns)
    reads = []
    for method in ("read_object", "read_object_range"):
        real = getattr(run.store, method)
        monkeypatch.setattr(run.store, method, lambda oid, *a, real=real: reads.append(oid) or real(oid, *a))
    variables = SavedVariables(run.store, record)
    packs = {e[2] for _, extents in variables._state.index["buffers"] for e in extents}
    packs = {variables._state.objects[n] for n in packs}
    assert sorted(variables) == ["big", "other", "small"] and variables.loaded() == []
    assert variables["small"] == {"k": 1}
    assert not packs & set(reads)  # no buffer was needed yet
    assert float(variables["big"].sum()) == 1 << 20
    assert packs & set(reads)
    assert variables.loaded() == ["small", "big"]
    with pytest.raises(KeyError):
        variables["missing"]


def test_pandas_and_sklearn_data_go_out_of_band(run):
    pd = pytest.importorskip("pandas")
    linear = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.random(100_000), "b": rng.integers(0, 9, 100_000)})
    model = linear.SGDRegressor(random_state=0).fit(rng.random((2000, 40)), rng.random(2000))
    model.coef_ = rng.random(20_000)  # big enough to leave the stream
    record = run.commit({"frame": frame, "model": model})
    got = run.load(record)
    pd.testing.assert_frame_equal(got["frame"], frame)
    assert np.array_equal(got["model"].coef_, model.coef_)
    # Their big arrays were staged as buffers, so an unchanged frame costs nothing next time.
    frame.loc[5, "a"] = -1.0
    again = run.commit({"frame": frame, "model": model})
    assert again.bytes_written < 64 * 1024
    assert run.load(again)["frame"].loc[5, "a"] == -1.0


def test_a_run_started_from_a_loaded_commit_writes_only_what_changed_since(tmp_path):
    from dart.store.layout import CommitState

    rng = np.random.default_rng(4)
    first = Run(tmp_path / ".dart")
    record = first.commit({"table": rng.random((2048, 1024), dtype=np.float32), "meta": {"epoch": 3}})
    first.close()
    resumed = Run(tmp_path / ".dart")  # a new run, as after a kill
    state = CommitState(resumed.store, record)
    loaded = load_roots(resumed.store, record, state=state)["globals"]
    resumed.writer.seed(state)
    loaded["table"][7] += 1.0
    again = resumed.commit(loaded)
    # one row of the table; small pods (a loaded array pickles as a view of its flat
    # base, and this process's random state moved), never the table again
    assert again.staged_bytes == 4096 and again.bytes_written < 32 * 1024
    got = resumed.load(again)
    assert np.array_equal(got["table"], loaded["table"]) and got["meta"] == {"epoch": 3}
    resumed.close()
