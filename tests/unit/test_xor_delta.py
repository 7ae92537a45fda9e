"""Dense numeric buffers are written as XOR deltas on their previous version
(codec.xor_delta, flush/xordelta.py, commit format 4): the delta rebuilds the new
bytes exactly for any bit patterns, every commit of a chain (and after the chain
limit, after a switch to sparse changes, across packs) loads back bit-identical
through the real store, an older reader refuses the format, and damage is reported."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dart.errors import CorruptObjectError, StoreError
from dart.flush.xordelta import CHAIN
from dart.store import layout
from dart.store.check import check
from dart.store.codec import apply_xor_delta, xor_delta

from test_commit_state import Run

DTYPES = ["float16", "float32", "float64", "bfloat16"]
SPECIAL = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 5e-324, 1e-45, 6e-8, -1e-310, 65504.0, 1.0]


def _float_bytes(dtype: str, values: list[float]) -> bytes:
    if dtype == "bfloat16":  # the high half of float32 (numpy has no bfloat16)
        with np.errstate(over="ignore", invalid="ignore"):
            return (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(dtype).tobytes()


floats = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
                            st.sampled_from(SPECIAL)), max_size=300)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(DTYPES), floats, floats, st.integers(0, 7), st.sampled_from([1, 2, 4, 8]))
def test_an_xor_delta_rebuilds_any_float_bits_exactly(dtype, new_values, old_values, tail, itemsize):
    new = _float_bytes(dtype, new_values) + bytes(range(tail))  # lengths not a multiple of the item size
    old = (_float_bytes(dtype, old_values) + bytes(len(new)))[: len(new)]
    delta = xor_delta(new, old, itemsize)
    target = bytearray(old)
    apply_xor_delta(target, delta, "test")
    assert bytes(target) == new


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=4000), st.binary(max_size=4000), st.sampled_from([1, 2, 4, 8, 3, 255]))
def test_an_xor_delta_rebuilds_any_bytes_exactly(new, old, itemsize):
    old = (old + bytes(len(new)))[: len(new)]
    target = bytearray(old)
    apply_xor_delta(target, xor_delta(new, old, itemsize), "test")
    assert bytes(target) == new


def test_a_large_delta_compressed_with_threads_rebuilds_exactly():
    rng = np.random.default_rng(0)
    old = rng.standard_normal(3_000_001).astype(np.float32)  # 12 MB: two zstd threads
    new = old - np.float32(1e-3) * rng.standard_normal(old.size).astype(np.float32)
    delta = xor_delta(new, old, 4)
    assert len(delta) < 0.7 * new.nbytes  # an SGD-like step: the high bytes compress
    target = bytearray(old.tobytes())
    apply_xor_delta(target, delta, "test")
    assert bytes(target) == new.tobytes()


def test_a_delta_for_other_lengths_or_damaged_is_refused():
    old, new = bytes(1000), bytes(range(200)) * 5
    delta = xor_delta(new, old, 4)
    with pytest.raises(CorruptObjectError):
        apply_xor_delta(bytearray(999), delta, "test")
    with pytest.raises(CorruptObjectError):
        apply_xor_delta(bytearray(1000), b"DXOR2" + delta[5:], "test")
    with pytest.raises(CorruptObjectError):
        apply_xor_delta(bytearray(1000), delta[:-4], "test")


@pytest.fixture(autouse=True)
def no_time_budget(monkeypatch):
    """Commits here come back to back: without this, the share-of-time budget
    (flush/xordelta.py BUDGET) would write most of them raw."""
    monkeypatch.setenv("DART_XOR_BUDGET", "1")


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path / ".dart", staging=64 << 20)
    yield r
    r.close()


def _sgd(rng, arrays, scale=1e-3):
    for a in arrays:
        a -= (scale * rng.standard_normal(a.size)).astype(a.dtype).reshape(a.shape)


def test_every_commit_of_a_chain_and_after_its_limit_loads_bit_identical(run):
    rng = np.random.default_rng(1)
    # sizes not a multiple of the chunk (4 KiB) nor, for the bytes, of the item size
    w = rng.standard_normal(250_003).astype(np.float32)
    h = rng.standard_normal(99_999).astype(np.float16)
    d = rng.standard_normal(70_001).astype(np.float64)
    w[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3e-40, -1e-39]  # denormals, NaN, infinities
    records, want = [], []
    for step in range(CHAIN + 4):  # commit 1 and 2 raw (the buffer is new, then seen for the first time again)
        if step:
            _sgd(rng, [w, h, d])
        record = run.commit({"w": w, "h": h, "d": d, "step": step})
        records.append(record)
        want.append({"w": w.tobytes(), "h": h.tobytes(), "d": d.tobytes()})
    formats = [r.state["format"] for r in records]
    # 1st: a new buffer; 2nd: its version is kept from now on; then CHAIN deltas; then
    # whole again; then deltas again
    assert formats == [2, 2] + [4] * CHAIN + [2] + [4], formats
    changed = w.nbytes + h.nbytes + d.nbytes
    for r in records[2 : CHAIN + 2]:
        assert r.bytes_written < 0.8 * changed, (r.bytes_written, changed)
    for record, expected in zip(records, want):
        got = run.load(record)
        assert {k: got[k].tobytes() for k in expected} == expected
        assert got["w"].dtype == np.float32 and got["h"].dtype == np.float16
    state = layout.CommitState(run.store, records[CHAIN + 1])
    numbers = [n for n in range(len(state.index["buffers"])) if state.layered(n)]
    assert numbers and max(len(state.index["buffers"][n][2]) for n in numbers) == CHAIN


def test_torch_tensors_and_a_buffer_spanning_packs_load_bit_identical(tmp_path):
    torch = pytest.importorskip("torch")
    run = Run(tmp_path / ".dart", staging=6 << 20)  # packs of at most a few MiB: the weight spans two
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(1024, 1000)  # 4 MB of weights
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        bf = torch.randn(300_000).to(torch.bfloat16)
        records, want = [], []
        for step in range(5):
            model(torch.randn(4, 1024)).square().mean().backward()
            opt.step()
            opt.zero_grad()
            bf.mul_(0.999)
            record = run.commit({"model": model, "bf": bf})
            records.append(record)
            want.append((model.weight.detach().clone(), bf.clone()))
        assert [r.state["format"] for r in records] == [2, 2, 4, 4, 4]
        for record, (weight, b) in zip(records, want):
            got = run.load(record)
            assert torch.equal(got["model"].weight.view(torch.int32), weight.view(torch.int32))
            assert torch.equal(got["bf"].view(torch.int16), b.view(torch.int16))
    finally:
        run.close()


def test_a_buffer_that_turns_sparse_goes_back_to_chunks_and_loads_bit_identical(run):
    rng = np.random.default_rng(2)
    w = rng.standard_normal(500_000).astype(np.float32)
    records, want = [], []
    for step in range(14):
        if step < 3:
            _sgd(rng, [w])
        else:
            w[step * 1000] += 1.0  # one chunk changes
        records.append(run.commit({"w": w}))
        want.append(w.tobytes())
    formats = [r.state["format"] for r in records]
    # still copied whole (the tracker learns again only at its next probe): the delta
    # of one changed chunk is tiny
    assert formats[3] == 4 and records[3].bytes_written < 8192, (formats, records[3].bytes_written)
    # once the tracker sees chunks again: whole once (no base to lay chunks over), then by chunks
    assert formats[-2:] == [2, 2] and all(r.bytes_written < 64 << 10 for r in records[-2:])
    for record, expected in zip(records, want):
        assert run.load(record)["w"].tobytes() == expected


def test_no_deltas_without_memory_for_the_previous_version(tmp_path, monkeypatch):
    monkeypatch.setenv("DART_XOR_MEMORY", "0")
    run = Run(tmp_path / ".dart")
    try:
        w = np.ones(300_000, dtype=np.float32)
        for _ in range(3):
            w *= np.float32(1.0001)
            record = run.commit({"w": w})
            assert record.state["format"] == 2
        assert run.load(record)["w"].tobytes() == w.tobytes()
    finally:
        run.close()


def _delta_commit(run):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(400_000).astype(np.float32)
    run.commit({"w": w})
    _sgd(rng, [w])
    run.commit({"w": w})
    _sgd(rng, [w])
    record = run.commit({"w": w})
    assert record.state["format"] == layout.FORMAT_XOR
    return record


def test_an_older_reader_refuses_the_format(run, monkeypatch):
    record = _delta_commit(run)
    monkeypatch.setattr(layout, "FORMATS", (layout.FORMAT, layout.FORMAT_PATCHED))  # a dart of format 3
    with pytest.raises(StoreError, match="state format 4, which this dart cannot read"):
        run.load(record)


def test_a_damaged_delta_is_reported_by_load_and_fsck(run):
    record = _delta_commit(run)
    assert check(run.store).clean
    state = layout.CommitState(run.store, record)
    (number,) = [n for n in range(len(state.index["buffers"])) if state.layered(n)]
    start, length, obj, offset, dlen, digest = state.index["buffers"][number][2][-1][0]
    # the last byte of the newest delta: its object's checksum fails (fsck reads every object)
    from dart.store.codec import CODEC_RAW, HEADER_SIZE

    oid = state.objects[obj]
    path = run.store.root / "objects" / oid[:2] / oid[2:]
    codec, _ = run.store.object_header(oid)
    raw = bytearray(path.read_bytes())
    assert codec == CODEC_RAW
    raw[HEADER_SIZE + offset + dlen - 1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptObjectError):
        run.load(record)
    report = check(run.store)
    assert not report.clean and any(record.id in p.name or oid in p.name for p in report.problems)


def test_fsck_rebuilds_delta_buffers_and_reports_a_delta_that_does_not_rebuild(run):
    import dataclasses
    import json

    record = _delta_commit(run)
    assert check(run.store).clean
    # a commit whose every object is intact but whose delta does not give the bytes
    # its index says (as a writer bug would leave): only rebuilding the chain tells
    index = json.loads(run.store.get_object(record.state["index"]))
    (row,) = [r for r in index["buffers"] if len(r) > 2]
    row[2][-1][0][5] ^= 1  # the hash the delta's result must have
    oid, _ = run.store.put_object(json.dumps(index).encode())
    forged = dataclasses.replace(record, id="", time=record.time + 1,
                                 state=dict(record.state, index=oid, objects=[*record.state["objects"], oid]))
    cid = run.store.put_commit(forged)
    report = check(run.store)
    assert [p.name for p in report.problems] == [cid], report.problems
    assert "XOR-delta buffers cannot be rebuilt" in report.problems[0].what
    assert "does not match its hash" in report.problems[0].what
    with pytest.raises(CorruptObjectError):
        run.load(run.store.get_commit(cid))


def test_loading_one_delta_array_reads_its_base_and_deltas_not_the_whole_packs(tmp_path):
    import os

    from dart.capture import SavedVariables

    if not os.path.exists("/proc/self/io"):
        pytest.skip("needs /proc/self/io to count bytes read")

    def bytes_read() -> int:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar"))

    run = Run(tmp_path / ".dart", staging=256 << 20)
    rng = np.random.default_rng(4)
    arrays = {f"a{i}": rng.standard_normal(1 << 19).astype(np.float32) for i in range(8)}  # 8 x 2 MiB, one pack
    records = []
    for _ in range(5):
        _sgd(rng, list(arrays.values()))
        records.append(run.commit(arrays))
    run.close()
    record = records[-1]
    assert record.state["format"] == layout.FORMAT_XOR
    state = layout.CommitState(run.store, record)
    (number,) = state.pods["g:a5"][5]
    nbytes, base, chain = state.index["buffers"][number]
    stored = sum(e[1] for e in base) + sum(seg[4] for layer in chain for seg in layer)
    before = bytes_read()
    got = SavedVariables(run.store, record)["a5"]
    read = bytes_read() - before
    assert got.tobytes() == arrays["a5"].tobytes()
    assert len(chain) == 3 and read <= stored + (64 << 10), (read, stored)


def test_a_buffer_left_out_of_a_commit_then_back_loads_bit_identical(run):
    rng = np.random.default_rng(5)
    w = rng.standard_normal(300_000).astype(np.float32)
    records, want = [], []
    for step in range(8):
        _sgd(rng, [w])
        if step == 3:
            w[::1000] = 0.0  # sparse then dense again, with the buffer absent at one commit
        ns = {"w": w, "step": step} if step != 4 else {"step": step}
        records.append(run.commit(ns))
        want.append(w.tobytes() if step != 4 else None)
    for record, expected in zip(records, want):
        if expected is not None:
            assert run.load(record)["w"].tobytes() == expected
    # back after its absence: a new buffer again (raw twice), then deltas
    assert [r.state["format"] for r in records] == [2, 2, 4, 4, 2, 2, 2, 4]


def test_past_its_share_of_time_a_commit_is_written_raw_and_deltas_come_back(run, monkeypatch):
    """Deltas cost CPU: once they took more than DART_XOR_BUDGET of the run's wall
    time, buffers are written raw (and still load exactly); under it, deltas again."""
    from dart.flush import xordelta

    rng = np.random.default_rng(3)
    weights = rng.standard_normal(1 << 18).astype(np.float32)
    formats = []
    for step in range(6):
        if step == 3:  # as if deltas had taken all the time so far
            run.writer.flusher.xor.stats["seconds"] += 1e6
        if step == 5:
            run.writer.flusher.xor.stats["seconds"] = 0.0
        _sgd(rng, [weights])
        record = run.commit({"w": weights})
        formats.append(record.state.get("format"))
        assert np.array_equal(run.load(record)["w"], weights)
    assert formats[2] == 4 and formats[3] != 4 and formats[4] != 4 and formats[5] == 4, formats
    assert xordelta.time_budget() == 1.0
