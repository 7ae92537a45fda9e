"""The staging ring and the buffer book's extent arithmetic."""

from __future__ import annotations

import threading
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dart.delta.book import BufferBook, _runs, buffer_key, overlay
from dart.flush.staging import ALIGN, MIN_PACK, PACK_SHIFT, PAGE, StagingArea


def test_packs_are_aligned_and_the_ring_starts_over_when_empty():
    # Packs start PACK_SHIFT (the object header's size) past a page boundary, so
    # that the store can write their payload with direct I/O (store/local.py).
    area = StagingArea(4 * MIN_PACK)
    pack = area.open_pack()
    assert pack.offset == PACK_SHIFT and pack.capacity == 4 * MIN_PACK - PACK_SHIFT
    assert pack.put(memoryview(b"x" * 10)) == 0
    assert pack.put(memoryview(b"y" * 10)) == ALIGN  # each run starts aligned (within the pack)
    area.seal(pack)
    assert pack.capacity == pack.size == 2 * ALIGN
    second = area.open_pack()
    assert second.offset == PAGE + PACK_SHIFT  # the next page boundary, shifted
    area.seal(second)
    pack.release()
    second.release()
    assert area.open_pack().offset == PACK_SHIFT  # nothing waiting: reuse the first pages
    area.close()


def test_ring_wraps_and_waits_for_room():
    area = StagingArea(3 * MIN_PACK + PAGE)
    packs = []
    for _ in range(3):
        p = area.open_pack()
        p.put(memoryview(bytes(MIN_PACK)))
        area.seal(p)
        packs.append(p)
    assert [p.offset for p in packs] == [PACK_SHIFT + k * MIN_PACK for k in range(3)]

    def release_first_later():
        time.sleep(0.3)
        packs[0].release()

    threading.Thread(target=release_first_later).start()
    started = time.perf_counter()
    wrapped = area.open_pack()  # full: waits for the flusher to free the oldest
    assert time.perf_counter() - started >= 0.25 and area.waited >= 0.25
    assert wrapped.offset == PACK_SHIFT and wrapped.capacity == MIN_PACK
    area.close()


def test_pack_payloads_lie_shifted_from_a_page_boundary():
    """Whatever the ring's state, each pack starts PACK_SHIFT past a page, and an
    empty ring smaller than a pack plus the shift still gives a pack (no wait)."""
    area = StagingArea(MIN_PACK)
    pack = area.open_pack()
    assert pack.offset == PACK_SHIFT and pack.capacity == MIN_PACK - PACK_SHIFT
    pack.release()
    area.close()
    rng = np.random.default_rng(1)
    area = StagingArea(6 * MIN_PACK)
    live = []
    for _ in range(60):
        if live and (len(live) > 3 or rng.random() < 0.4):
            live.pop(0).release()
            continue
        pack = area.open_pack()
        assert pack.offset % PAGE == PACK_SHIFT
        pack.put(memoryview(bytes(int(rng.integers(1, MIN_PACK)))))
        area.seal(pack)
        live.append(pack)
    area.close()


def _expand(extents, nbytes):
    """Byte -> (pack, byte in pack), as a reference for overlay."""
    where = [None] * nbytes
    for start, length, pack, offset, _ in extents:
        for k in range(length):
            where[start + k] = (pack, offset + k)
    return where


@settings(max_examples=200, deadline=None)
@given(nbytes=st.integers(1, 300), data=st.data())
def test_overlay_matches_byte_by_byte_reference(nbytes, data):
    extents = [[0, nbytes, "p0", 0, 1]]
    where = _expand(extents, nbytes)
    for generation in range(1, 4):
        cuts = sorted(set(data.draw(st.lists(st.integers(0, nbytes), max_size=8))))
        runs = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
        new, offset = [], 0
        for a, b in runs:
            new.append([a, b - a, f"p{generation}", offset, 1])
            offset += b - a
        extents = overlay(extents, new)
        for a, b in runs:
            for k in range(a, b):
                where[k] = (f"p{generation}", new[[r[0] for r in new].index(a)][3] + k - a)
        assert _expand(extents, nbytes) == where
        assert sum(e[1] for e in extents) == nbytes
        assert all(e[1] > 0 for e in extents)


def test_runs_of_chunks():
    assert _runs([0, 1, 2, 5, 7, 8], 10, 85) == [(0, 30), (50, 60), (70, 85)]
    assert _runs(None, 10, 25) == [(0, 25)]
    assert _runs([], 10, 25) == []


def test_book_forgets_buffers_not_seen_and_rewrites_them_whole():
    area = StagingArea(8 * MIN_PACK)
    book = BufferBook(dirty=False)
    a = np.zeros(1 << 16)
    b = np.ones(1 << 16)
    submitted = []

    def keyed(*arrays):
        return [(buffer_key(v), v) for v in (memoryview(x).cast("B") for x in arrays)]

    book.stage(keyed(a, b), area, submitted.append)
    assert len(book) == 2 and book.staged_bytes == a.nbytes + b.nbytes
    book.stage(keyed(a), area, submitted.append)
    assert len(book) == 1 and book.staged_bytes == 0  # a unchanged, b forgotten
    book.stage(keyed(a, b), area, submitted.append)
    assert book.staged_bytes == b.nbytes  # b is new again: written whole
    book.close()
    area.close()
