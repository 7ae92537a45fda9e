"""Large objects: written in pieces by writer threads (direct I/O where memory and
file offsets are block-aligned, the page cache elsewhere) while their id is
hashed (store/local.py begin_put, Store.put_object). Every byte must land where
the one-write path puts it."""

from __future__ import annotations

import errno
import fcntl
import gc
import mmap
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dart.flush import CommitWriter
from dart.flush.staging import PACK_SHIFT, PAGE
from dart.store import Store, codec
from dart.store import local
from dart.store.layout import FRESH_MIN
from dart.store.local import DIRECT_ALIGN, DIRECT_PIECE, PIECE, plan_pieces


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 * PIECE), min_size=1, max_size=4),
       shifts=st.lists(st.integers(0, 2 * DIRECT_ALIGN), min_size=4, max_size=4))
def test_pieces_cover_the_file_exactly_and_direct_ones_are_aligned(sizes, shifts):
    # chunks: views at odd places of one anonymous mapping (untouched pages cost nothing)
    area = mmap.mmap(-1, sum(sizes) + sum(shifts) + 1, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = memoryview(area)
    base = local._address(whole)
    chunks, expected, at, file_at = [], [], 0, 0  # expected: (file offset, memory offset, size)
    for size, shift in zip(sizes, shifts):
        chunks.append(whole[at + shift : at + shift + size])
        expected.append((file_at, at + shift, size))
        at, file_at = at + shift + size, file_at + size
    pieces = plan_pieces(chunks)
    covered, view = 0, None
    for file_offset, view, direct in pieces:
        assert file_offset == covered and 0 < len(view) <= (DIRECT_PIECE if direct else PIECE)  # in order
        o, start, n = next(e for e in expected if e[0] <= file_offset < e[0] + e[2])
        assert file_offset + len(view) <= o + n  # within one chunk
        assert local._address(view) - base == start + file_offset - o  # the chunk's own bytes
        if direct:
            assert local._address(view) % DIRECT_ALIGN == 0
            assert file_offset % DIRECT_ALIGN == 0 and len(view) % DIRECT_ALIGN == 0
        covered += len(view)
    assert covered == sum(sizes)
    # a chunk whose address is congruent to its file offset has all but its ends direct
    for o, start, n in expected:
        direct_bytes = sum(len(v) for f, v, d in pieces if d and o <= f < o + n)
        if (base + start - o) % DIRECT_ALIGN or n < 2 * DIRECT_ALIGN:
            assert direct_bytes == 0
        else:
            assert direct_bytes > n - 2 * DIRECT_ALIGN
    del chunks, pieces, whole, view
    area.close()


def _staged_like(nbytes: int, shift: int, seed: int) -> tuple[mmap.mmap, memoryview]:
    """Random bytes in an anonymous mapping, starting ``shift`` bytes past a page."""
    area = mmap.mmap(-1, nbytes + PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = memoryview(area)[shift : shift + nbytes]
    view[:] = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    return area, view


@pytest.mark.parametrize("shift", [PACK_SHIFT, 0, 1000])  # direct, then page cache only
@pytest.mark.parametrize("nbytes", [local.PARALLEL_MIN, local.PARALLEL_MIN + 3 * PIECE + 4095])
def test_large_object_reads_back_exactly(tmp_path, shift, nbytes):
    store = Store(tmp_path / "s")
    area, view = _staged_like(nbytes, shift, seed=nbytes + shift)
    hashed = []
    oid, written = store.put_object(view, while_writing=lambda: hashed.append(1))
    assert hashed == [1]
    assert oid == codec.object_id(view) and written == codec.HEADER_SIZE + nbytes
    assert bytes(store.read_object(oid)) == bytes(view)
    assert os.path.getsize(store.object_path(oid)) == codec.HEADER_SIZE + nbytes
    # same bytes again: nothing new, the temporary file removed
    assert store.put_object(view) == (oid, 0)
    assert list((tmp_path / "s" / "tmp").iterdir()) == []
    del view
    area.close()


def test_large_object_on_a_filesystem_without_direct_io():
    """/dev/shm (tmpfs) refuses O_DIRECT: everything goes through the page cache."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm here")
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        store = Store(os.path.join(folder, "s"))
        area, view = _staged_like(local.PARALLEL_MIN + 12345, PACK_SHIFT, seed=3)
        oid, _ = store.put_object(view)
        assert bytes(store.read_object(oid)) == bytes(view)
        del view
        area.close()


def test_compressible_large_object_is_compressed_and_exact(tmp_path):
    store = Store(tmp_path / "s")
    data = bytearray(b"dart " * (local.PARALLEL_MIN // 5 + 1))
    oid, written = store.put_object(data)
    assert written < len(data) // 10  # zstd: the sample said it pays
    assert store.read_object(oid) == data


def test_write_error_of_a_piece_is_a_store_error_and_leaves_nothing(tmp_path, monkeypatch):
    store = Store(tmp_path / "s")
    area, view = _staged_like(local.PARALLEL_MIN, PACK_SHIFT, seed=5)
    real = os.pwrite
    calls = []

    def full(fd, data, offset):
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    from dart.errors import StoreError

    with pytest.raises(StoreError, match="No space left on device; free some disk space") as info:
        store.put_object(view)
    monkeypatch.setattr(os, "pwrite", real)
    assert store.object_ids() == [] and list((tmp_path / "s" / "tmp").iterdir()) == []
    del view, info  # the error's frames hold views of the buffer (in cycles)
    gc.collect()
    area.close()


def test_commit_of_large_buffers_round_trips_through_staging(tmp_path):
    """The whole path: staging packs (shifted) -> direct writes -> read back."""
    from dart.capture.pods import Pod
    from dart.store.layout import CommitState

    store = Store(tmp_path / "s")
    run = store.create_run({"key": "large"})
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(n).astype(np.float32) for n in (5_000_001, 3_000_000, 17)]
    with CommitWriter(store, run, None, staging=64 << 20) as writer:
        for step in range(3):
            for a in arrays:
                a += 1.0
            cid = writer.commit([Pod("g:a", b"stream", [bytearray(a.tobytes()) for a in arrays])],
                                {"message": str(step)}).wait(60)
            [(_, stream, buffers)] = CommitState(store, store.get_commit(cid)).read()
            assert [bytes(b) for b in buffers] == [a.tobytes() for a in arrays]


@settings(max_examples=12, deadline=None)
@given(sizes=st.lists(st.sampled_from([1, 4095, FRESH_MIN - 1, FRESH_MIN, FRESH_MIN + 4097, 3 * FRESH_MIN + 5]),
                      min_size=1, max_size=3),
       changed=st.lists(st.integers(0, 1 << 30), max_size=6), seed=st.integers(0, 2**32 - 1))
def test_restored_buffers_are_exact_whatever_their_size_and_extents(tmp_path_factory, sizes, changed, seed):
    """Restore reads big buffers into fresh anonymous memory (layout.fresh_buffer),
    small ones into bytearrays, whole-extent buffers as slices of their pack and
    multi-extent ones piece by piece: every byte as committed, and writable."""
    from dart.capture.pods import Pod
    from dart.store.layout import CommitState

    store = Store(tmp_path_factory.mktemp("s"))
    run = store.create_run({"key": "fresh"})
    rng = np.random.default_rng(seed)
    arrays = [bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes()) for n in sizes]
    with CommitWriter(store, run, None, staging=32 << 20, dirty=False) as writer:
        writer.commit([Pod("g:a", b"s", arrays)], {"message": "1"}).wait(60)
        for at in changed:  # a few 4 KiB chunks changed: the next commit has several extents
            a = arrays[at % len(arrays)]
            a[at % len(a)] ^= 0xFF
        cid = writer.commit([Pod("g:a", b"s", arrays)], {"message": "2"}).wait(60)
    [(_, _, buffers)] = CommitState(store, store.get_commit(cid)).read()
    assert [bytes(b) for b in buffers] == [bytes(a) for a in arrays]
    for b in buffers:
        view = memoryview(b)
        assert not view.readonly


def test_no_room_for_the_temporary_file_is_a_store_error(tmp_path, monkeypatch):
    store = Store(tmp_path / "s")
    area, view = _staged_like(local.PARALLEL_MIN, PACK_SHIFT, seed=9)

    def full(fd, size):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "ftruncate", full)
    from dart.errors import StoreError

    with pytest.raises(StoreError, match=r"tmp/put\..*No space left on device; free some disk space"):
        store.put_object(view)
    assert list((tmp_path / "s" / "tmp").iterdir()) == []


def test_direct_write_refused_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    """A disk whose direct I/O wants another alignment answers EINVAL: the piece
    is written through the page cache instead, and the object is whole."""
    store = Store(tmp_path / "s")
    area, view = _staged_like(local.PARALLEL_MIN + 3 * PIECE, PACK_SHIFT, seed=11)
    real, refused = os.pwrite, []

    def picky(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", picky)
    oid, _ = store.put_object(view)
    monkeypatch.setattr(os, "pwrite", real)
    assert refused  # the direct path was tried
    assert bytes(store.read_object(oid)) == bytes(view)
    del view
    area.close()
