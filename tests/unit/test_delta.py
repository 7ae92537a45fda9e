"""The delta engine: native routines against their pure-Python references
(dart.delta.reference), trackers against ReferenceTracker, and the errors a caller sees."""

from __future__ import annotations

import mmap
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dart import _delta
from dart.delta import (
    AdaptiveTracker,
    ChunkTracker,
    DeltaError,
    DirtyTracker,
    available,
    changed_chunks,
)
from dart.delta import reference as ref

STRATEGIES = ["hash", "compare"]
DTYPES = ["u1", "i2", ">i4", "<f4", "f8", "c16", "?", "M8[s]", "u8", ">f2"]
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIRTY = available()
needs_dirty = pytest.mark.skipif(not DIRTY, reason=f"dirty-page tracking unavailable: {DIRTY.reason}")


raw = ref.as_bytes


# ---- native routines vs reference ----------------------------------------------------


@PROPS
@given(st.binary(max_size=3000))
def test_chunk_hash_matches_reference(data):
    assert _delta.chunk_hash(data) == ref.chunk_hash(data)


@PROPS
@given(st.binary(min_size=1, max_size=4000), st.integers(1, 1500), st.integers(1, 3))
def test_hash_chunks_matches_reference(data, chunk_size, threads):
    assert _delta.hash_chunks(data, chunk_size, threads) == ref.hash_chunks(data, chunk_size)


def test_chunk_hash_sees_single_bit_flips():
    # the AVX2 path covers full 1 KiB blocks; every bit of every word must matter
    base = bytearray(os.urandom(2048 + 37))
    h0 = _delta.chunk_hash(base)
    for pos in range(0, len(base), 7):
        base[pos] ^= 1 << (pos % 8)
        assert _delta.chunk_hash(base) != h0, pos
        base[pos] ^= 1 << (pos % 8)
    assert _delta.chunk_hash(bytes(10)) != _delta.chunk_hash(bytes(11))  # length counts


@PROPS
@given(
    st.integers(0, 5000),
    st.integers(1, 700),
    st.lists(st.tuples(st.integers(-100, 5100), st.integers(0, 800)), max_size=8),
)
def test_mark_chunks_matches_reference(nbytes, chunk_size, spans):
    ranges = sorted((s, s + n) for s, n in spans)
    ranges = [(max(s, -(1 << 20)), e) for s, e in ranges]
    assert _delta.mark_chunks(ranges, nbytes, chunk_size) == ref.mark_chunks(ranges, nbytes, chunk_size)


# ---- trackers vs ReferenceTracker ------------------------------------------------------


@st.composite
def arrays_and_changes(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=24))
    order = draw(st.sampled_from("CF"))
    a = np.asarray(draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype, allow_nan=False))), order=order)
    nbytes = a.nbytes
    chunk_size = draw(st.one_of(st.integers(1, 64), st.integers(1, max(nbytes, 1) + 50), st.just(1 << 20)))
    steps = draw(st.lists(st.sampled_from(["none", "boundary", "rows", "all", "byte"]), min_size=1, max_size=5))
    seed = draw(st.integers(0, 2**32 - 1))
    return a, chunk_size, steps, seed


def mutate(a: np.ndarray, kind: str, chunk_size: int, rng: np.random.Generator) -> None:
    """Change a's bytes in place (through a byte view, so every dtype is handled)."""
    b = a.reshape(-1, order="A").view("u1") if a.size else np.empty(0, "u1")
    if b.size == 0 or kind == "none":
        return
    if kind == "all":
        b ^= 0xFF
    elif kind == "byte":
        b[rng.integers(b.size)] ^= 0x5A
    elif kind == "boundary":  # last byte of one chunk and first byte of the next
        k = int(rng.integers(0, b.size // chunk_size + 1)) * chunk_size
        for pos in (k - 1, k):
            if 0 <= pos < b.size:
                b[pos] ^= 0x01
    elif kind == "rows":
        rows = a.reshape(a.shape[0] if a.ndim else 1, -1) if a.flags.c_contiguous else b.reshape(1, -1)
        pick = rng.random(rows.shape[0]) < 0.3
        rows.view("u1")[pick] ^= 0x80


@pytest.mark.parametrize("strategy", STRATEGIES)
@PROPS
@given(case=arrays_and_changes())
def test_tracker_matches_reference(strategy, case):
    a, chunk_size, steps, seed = case
    rng = np.random.default_rng(seed)
    tracker = ChunkTracker(a.nbytes, chunk_size, strategy=strategy)
    oracle = ref.ReferenceTracker(a.nbytes, chunk_size)
    out = bytearray(a.nbytes)
    for i, kind in enumerate(["first", *steps]):
        if kind != "first":
            mutate(a, kind, chunk_size, rng)
        if i % 2:
            assert tracker.changed(a) == oracle.changed(a)
        else:
            spans, packed = oracle.copy_changed(a)
            assert tracker.copy_changed(a, out) == spans
            assert bytes(out[: len(packed)]) == packed


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_edge_sizes(strategy):
    empty = ChunkTracker(0, 4, strategy=strategy)
    assert empty.changed(b"") == [] and empty.changed(bytearray()) == []
    one = ChunkTracker(1, 1 << 20, strategy=strategy)
    buf = bytearray(b"x")
    assert one.changed(buf) == [0]
    assert one.changed(buf) == []
    buf[0] = 0
    out = bytearray(1)
    assert one.copy_changed(buf, out) == [(0, 0, 1)] and out == b"\0"
    t = ChunkTracker(10, 3, strategy=strategy)  # 3 does not divide 10: last chunk 1 byte
    data = bytearray(range(10))
    t.changed(data)
    data[9] = 99
    assert t.copy_changed(data, bytearray(10)) == [(3, 9, 1)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_big_buffer_releases_gil_and_finds_changes(strategy):
    a = np.zeros(3 << 20, np.uint8)  # above the GIL threshold, several chunks
    t = ChunkTracker(a.nbytes, 1 << 20, strategy=strategy, threads=2)
    assert t.changed(a) == [0, 1, 2]
    a[(2 << 20) - 1] = 1
    a[(2 << 20)] = 1
    out = np.empty_like(a)
    assert t.copy_changed(a, out) == [(1, 1 << 20, 1 << 20), (2, 2 << 20, 1 << 20)]
    assert (out[: 2 << 20] == a[1 << 20 :]).all()


def test_changed_chunks_helper():
    assert changed_chunks(b"abcdef", b"abcxef", 2) == [1]
    assert changed_chunks(b"abcde", b"abcdf", 2) == [2]


# ---- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_contiguous_raises_clearly(strategy):
    a = np.arange(100, dtype="f8").reshape(10, 10)
    t = ChunkTracker(a[:, ::2].nbytes, 64, strategy=strategy)
    with pytest.raises(DeltaError, match="not one contiguous.*ascontiguousarray"):
        t.changed(a[:, ::2])
    # Fortran order is contiguous memory: accepted
    f = np.asfortranarray(a)
    assert ChunkTracker(f.nbytes, 64, strategy=strategy).changed(f) == list(range(13))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resized_buffer_names_sizes(strategy):
    t = ChunkTracker(16, 4, strategy=strategy)
    t.changed(bytearray(16))
    with pytest.raises(DeltaError, match="now has 24 bytes but was tracked with 16"):
        t.changed(bytearray(24))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_small_out_changes_nothing(strategy):
    t = ChunkTracker(16, 4, strategy=strategy)
    data = bytearray(16)
    with pytest.raises(DeltaError, match="out has 8 bytes.*need 16"):
        t.copy_changed(data, bytearray(8))
    assert t.changed(data) == [0, 1, 2, 3]  # still the first call
    with pytest.raises(DeltaError, match="read-only"):
        t.copy_changed(data, _readonly(16))


def _readonly(n):
    a = np.zeros(n, "u1")
    a.flags.writeable = False
    return a


def test_bad_arguments():
    with pytest.raises(DeltaError, match="chunk_size"):
        ChunkTracker(10, 0)
    with pytest.raises(DeltaError, match="strategy"):
        ChunkTracker(10, 4, strategy="magic")
    assert issubclass(DeltaError, ValueError)


def test_torch_tensor():
    torch = pytest.importorskip("torch")
    x = torch.zeros(1000, dtype=torch.float32)
    t = ChunkTracker(x.numel() * 4, 1024)
    assert t.changed(x) == [0, 1, 2, 3]
    x[600] = 1.0  # byte 2400: chunk 2
    assert t.changed(x) == [2]
    assert t.changed(x.numpy()) == []


# ---- kernel dirty-page tracking ----------------------------------------------------------


def test_available_says_why():
    a = available()
    assert isinstance(a.reason, str) and a.reason
    assert bool(a) == a.ok


def _mapped(nbytes):
    m = mmap.mmap(-1, nbytes)
    return m, np.frombuffer(m, np.uint8)


@needs_dirty
def test_dirty_tracker_reports_written_pages():
    m, a = _mapped(64 << 12)
    with DirtyTracker(a, 4 << 12) as t:  # 16 chunks of 4 pages
        assert t.changed() == list(range(16))
        assert t.changed() == []
        a[5 << 12] = 1
        a[(12 << 12) - 1] = 1
        assert t.changed(a) == [1, 2]
        assert t.written_ranges() == [(5 << 12, 4096), (11 << 12, 4096)]
        assert t.changed() == []
        a[:] = 7  # everything, through numpy
        out = bytearray(a.nbytes)
        assert [c for c, _, _ in t.copy_changed(None, out)] == list(range(16))
        assert out == raw(a)
    a[0] = 3  # writes still work after close
    del a
    m.close()


@needs_dirty
@pytest.mark.parametrize("verify", [False, True])
@PROPS
@given(case=arrays_and_changes())
def test_dirty_tracker_reports_a_superset(verify, case):
    a, chunk_size, steps, seed = case
    if a.nbytes == 0:
        return
    rng = np.random.default_rng(seed)
    a = a.copy(order="A")  # its own memory, which may share pages with other objects
    oracle = ref.ReferenceTracker(a.nbytes, chunk_size)
    try:
        t = DirtyTracker(a, chunk_size, verify)
    except DeltaError as exc:  # pages already held by a tracker nobody closed yet
        assert "EBUSY" in str(exc)
        return
    with t:
        out = bytearray(a.nbytes)
        for kind in ["first", *steps]:
            if kind != "first":
                mutate(a, kind, chunk_size, rng)
            truth = oracle.changed(a)
            spans = t.copy_changed(a, out)
            if verify:  # exact: dirty pages narrowed down by fingerprints
                assert truth == [c for c, _, _ in spans]
            assert set(truth) <= {c for c, _, _ in spans}
            packed = b"".join(raw(a)[off : off + n] for _, off, n in spans)
            assert bytes(out[: len(packed)]) == packed


@needs_dirty
def test_dirty_tracker_errors():
    m, a = _mapped(8 << 12)
    with DirtyTracker(a, 4096) as t:
        with pytest.raises(DeltaError, match="re-allocated"):
            t.changed(np.zeros(8 << 12, np.uint8))
        with pytest.raises(DeltaError, match="EBUSY"):
            DirtyTracker(a[4096:], 4096)
    with pytest.raises(DeltaError, match="closed"):
        t.changed()
    del a
    m.close()


@needs_dirty
@pytest.mark.parametrize("where", ["tmp", "work"])
def test_dirty_tracker_file_mapping_tracks_or_refuses(tmp_path, where):
    # shmem (tmpfs) mappings can be write-protected; regular files cannot (EINVAL)
    base = tmp_path if where == "tmp" else pathlib.Path(__file__).parent
    path = base / f"dart-delta-{os.getpid()}.bin"
    path.write_bytes(bytes(1 << 16))
    try:
        with open(path, "r+b") as f:
            m = mmap.mmap(f.fileno(), 0)
            a = np.frombuffer(m, np.uint8)
            try:
                t = DirtyTracker(a, 4096)
            except DeltaError as exc:
                assert "UFFDIO_REGISTER" in str(exc) and "ChunkTracker" in str(exc)
            else:
                with t:
                    t.changed()
                    a[3 * 4096 + 5] = 1
                    assert t.changed() == [3]
            del a
            m.close()
    finally:
        path.unlink()


@needs_dirty
def test_dirty_tracker_no_deadlock_under_concurrent_writes():
    # writer threads hammer the buffer while the main thread scans and copies: with
    # WP_ASYNC nothing may block; a hang is reported as a possible deadlock
    code = textwrap.dedent(
        """
        import threading, numpy as np
        from dart.delta import DirtyTracker
        a = np.zeros(32 << 20, np.uint8)
        stop = False
        def write(k):
            i = 0
            while not stop:
                a[(i * 4099 + k) % a.size] += 1
                i += 1
        ths = [threading.Thread(target=write, args=(k,)) for k in range(2)]
        for th in ths: th.start()
        out = np.empty_like(a)
        with DirtyTracker(a) as t:
            for _ in range(200):
                t.copy_changed(a, out)
        stop = True
        for th in ths: th.join()
        print("ok")
        """
    )
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("possible deadlock: writers and DirtyTracker did not finish in 120 s")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ---- the adaptive policy ---------------------------------------------------------------


@pytest.mark.parametrize("dirty", [False, pytest.param(True, marks=needs_dirty)])
def test_adaptive_switches_to_copy_and_back(dirty):
    a = np.zeros(8 << 20, np.uint8)
    out = np.empty_like(a)
    t = AdaptiveTracker(a.nbytes, 1 << 20, dirty=dirty, dense_streak=2, reprobe=3)
    assert t.mode == ("dirty" if dirty else "hash")
    oracle = ref.ReferenceTracker(a.nbytes, 1 << 20)
    modes = []
    for step in range(20):
        if step < 8:
            a += 1  # dense phase: every chunk changes
        elif step % 5 == 0:
            a[step] += 1  # sparse phase
        truth = oracle.changed(a)
        spans = t.copy_changed(a, out)
        assert set(truth) <= {c for c, _, _ in spans}
        for k, (_, off, n) in enumerate(spans):
            assert (out[k << 20 : (k << 20) + n] == a[off : off + n]).all()
        modes.append(t.mode)
    assert "copy" in modes[:8]
    assert modes[-1] == ("dirty" if dirty else "hash")
    t.close()
