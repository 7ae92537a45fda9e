"""DirtyTracker.restore_written / save_written, the native copies under a transaction's
rollback and commit: bit-identical results over random page sets, buffers that do not
start on a page or end on one, what the kernel reports afterwards, writes by another
thread during a restore, and the errors a caller sees."""

from __future__ import annotations

import mmap
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dart.delta import DeltaError, DirtyTracker, available
from dart.errors import BufferMovedError

P = mmap.PAGESIZE
DIRTY = available()
pytestmark = pytest.mark.skipif(not DIRTY, reason=f"dirty-page tracking unavailable: {DIRTY.reason}")
PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _region(lead: int, nbytes: int):
    """A buffer of nbytes starting lead bytes into a fresh page-aligned mapping, with a
    page of other bytes after it: (mapping, the whole mapping as an array, the buffer)."""
    m = mmap.mmap(-1, lead + nbytes + P)
    whole = np.frombuffer(m, np.uint8)
    whole[:] = np.random.default_rng(nbytes).integers(0, 256, whole.size, dtype=np.uint8)
    return m, whole, whole[lead : lead + nbytes]


def _pages(spans, lead):
    """Indexes (in the mapping) of the pages holding the bytes of (offset, length) spans
    (the spans a block wrote, or the ranges a tracker reported)."""
    return {p for off, n in spans for p in range((lead + off) // P, (lead + off + n - 1) // P + 1)}


@st.composite
def layouts(draw):
    """A buffer placement (lead, nbytes: page aligned or not, whole pages or not) and the
    spans a block writes into it."""
    lead = draw(st.sampled_from([0, 16, 1, P - 8]) | st.integers(0, P - 1))
    nbytes = draw(st.sampled_from([P, 3 * P, 40 * P]) | st.integers(1, 40 * P))
    span = st.tuples(st.integers(0, nbytes - 1), st.integers(1, 3 * P))
    spans = [(off, min(n, nbytes - off)) for off, n in draw(st.lists(span, max_size=12))]
    outside = draw(st.booleans())  # also write the bytes around the buffer, on its pages
    return lead, nbytes, spans, outside


def _write(a, spans, rng):
    for off, n in spans:
        a[off : off + n] ^= rng.integers(1, 256, n, dtype=np.uint8)  # every byte changes


@PROPS
@given(layout=layouts(), seed=st.integers(0, 2**32 - 1), compare=st.booleans())
def test_restore_written_puts_back_exactly_the_shadow(layout, seed, compare):
    lead, nbytes, spans, outside = layout
    rng = np.random.default_rng(seed)
    m, whole, a = _region(lead, nbytes)
    with DirtyTracker(a, P) as t:
        t.changed()  # primed: everything protected
        shadow = a.copy()
        _write(a, spans, rng)
        if outside:
            whole[:lead] = 0xAB
            whole[lead + nbytes :] = 0xCD
        around = (whole[:lead].copy(), whole[lead + nbytes :].copy())

        copied = t.restore_written(a, shadow, compare=compare)

        assert a.tobytes() == shadow.tobytes()
        # bytes sharing the buffer's first and last pages are not the buffer's: untouched
        assert whole[:lead].tobytes() == around[0].tobytes()
        assert whole[lead + nbytes :].tobytes() == around[1].tobytes()
        ranges = t.written_ranges()
        assert copied == sum(n for _, n in ranges)
        assert all(0 <= off and off + n <= nbytes for off, n in ranges)
        written = _pages(spans, lead)
        if outside:  # the buffer's first and last pages, where it shares them
            written |= ({0} if lead else set()) | ({(lead + nbytes - 1) // P} if (lead + nbytes) % P else set())
        # the kernel reports exactly the pages written (no other writer here)
        assert _pages(ranges, lead) == written
        # protected again after the copy: nothing is reported, and new writes are
        assert t.changed() == []
        x, y = (int(v) for v in rng.integers(0, nbytes, 2))
        a[x] ^= 1
        assert t.restore_written(a, shadow, compare=compare) > 0  # the next restore puts it back
        assert a.tobytes() == shadow.tobytes()
        assert _pages(t.written_ranges(), lead) == {(lead + x) // P}
        a[y] ^= 1
        t.changed()
        assert _pages(t.written_ranges(), lead) == {(lead + y) // P}
    del a, whole
    m.close()


@PROPS
@given(layout=layouts(), seed=st.integers(0, 2**32 - 1))
def test_save_written_copies_exactly_the_written_pages(layout, seed):
    lead, nbytes, spans, _ = layout
    rng = np.random.default_rng(seed)
    m, whole, a = _region(lead, nbytes)
    with DirtyTracker(a, P) as t:
        t.changed()
        shadow = rng.integers(0, 256, nbytes, dtype=np.uint8)  # unlike the buffer
        before = shadow.copy()
        _write(a, spans, rng)

        copied = t.save_written(shadow)

        ranges = t.written_ranges()
        assert copied == sum(n for _, n in ranges)
        saved = np.zeros(nbytes, bool)
        for off, n in ranges:
            saved[off : off + n] = True
        for off, n in spans:
            assert saved[off : off + n].all()
        assert shadow[saved].tobytes() == a[saved].tobytes()
        assert shadow[~saved].tobytes() == before[~saved].tobytes()  # other bytes untouched
        assert t.changed() == []  # protected again before the copy
        a[nbytes - 1] ^= 1
        assert t.save_written(shadow) > 0 and shadow[nbytes - 1] == a[nbytes - 1]
    del a, whole
    m.close()


def test_nothing_written_copies_nothing():
    m, whole, a = _region(16, 5 * P + 7)
    with DirtyTracker(a, P) as t:
        t.changed()
        shadow = np.zeros_like(a)  # differs everywhere: any copy would show
        assert t.restore_written(a, shadow) == 0
        assert t.save_written(shadow) == 0
        assert not shadow.any() and a.any()
    del a, whole
    m.close()


def test_errors_name_what_is_wrong():
    m, whole, a = _region(0, 8 * P)
    with DirtyTracker(a, P) as t:
        with pytest.raises(DeltaError, match="exactly the buffer's size"):
            t.restore_written(a, np.zeros(8 * P - 1, np.uint8))
        with pytest.raises(DeltaError, match="exactly the buffer's size"):
            t.save_written(np.zeros(8 * P + 1, np.uint8))
        with pytest.raises(BufferMovedError, match="re-allocated"):
            t.restore_written(np.zeros(8 * P, np.uint8), np.zeros(8 * P, np.uint8))
        frozen = a.view()
        frozen.flags.writeable = False
        with pytest.raises(DeltaError, match="read-only"):
            t.restore_written(frozen, np.zeros(8 * P, np.uint8))
        with pytest.raises(DeltaError, match="read-only"):
            t.save_written(_readonly(8 * P))
    with pytest.raises(DeltaError, match="closed"):
        t.restore_written(a, np.zeros(8 * P, np.uint8))
    with DirtyTracker(a, P, verify=True) as v:
        with pytest.raises(DeltaError, match="verify=True"):
            v.save_written(np.zeros(8 * P, np.uint8))
    del a, whole, frozen
    m.close()


def _readonly(n):
    r = np.zeros(n, np.uint8)
    r.flags.writeable = False
    return r


def test_a_page_another_thread_writes_during_a_restore_is_reported_next():
    # A writer thread writes each page of the upper part once, while the main thread
    # writes the lower part and restores it (GIL released) over and over. Whenever a
    # write lands, before the listing (restored), between the listing and the re-protect
    # walk (unprotected again), or after (faults): afterwards every page that differs
    # from the shadow must be reported by the next scan, or a later rollback would miss it.
    nbytes = 64 << 20
    m, whole, a = _region(0, nbytes)
    lower = 16 << 20
    with DirtyTracker(a, P) as t:
        t.changed()
        shadow = a.copy()
        stop = threading.Event()

        def write_once_each():
            for page in range(lower // P, nbytes // P):
                if stop.is_set():
                    return
                a[page * P + 1] ^= 0xFF

        writer = threading.Thread(target=write_once_each)
        writer.start()
        try:
            for round_ in range(40):
                a[: lower : P] ^= 0x0F  # every lower page
                t.restore_written(a, shadow)
                assert a[:lower].tobytes() == shadow[:lower].tobytes(), round_
        finally:
            stop.set()
            writer.join()
        differs = {int(p) for p in np.flatnonzero((a != shadow).reshape(-1, P).any(axis=1))}
        t.changed()
        reported = _pages(t.written_ranges(), 0)
        assert differs <= reported, sorted(differs - reported)[:10]
    del a, whole
    m.close()


def test_a_restored_page_another_thread_writes_again_is_reported_next():
    # The writer hammers the very pages being restored. A write that lands after its
    # page's copy and before the re-protect walk looks like the restore's own write to
    # the kernel; the restore compares what it copied with the shadow afterwards, so such
    # a page is reported by the next scan instead of being taken for equal to the shadow.
    nbytes = 16 << 20
    m, whole, a = _region(0, nbytes)
    with DirtyTracker(a, P) as t:
        t.changed()
        shadow = a.copy()
        stop = threading.Event()
        running = threading.Lock()  # held by the writer while it writes; main takes it to look

        def hammer():
            rng = np.random.default_rng(7)
            while not stop.is_set():
                with running:
                    for page in rng.integers(0, nbytes // P, 64).tolist():
                        a[page * P + 3] ^= 0x55

        running.acquire()
        writer = threading.Thread(target=hammer)
        writer.start()
        try:
            for round_ in range(30):
                a[::P] ^= 0x0F  # every page: the restore copies all of them
                running.release()  # the writer runs while the restore has the GIL released
                t.restore_written(a, shadow)
                running.acquire()
                differs = {int(p) for p in np.flatnonzero((a != shadow).reshape(-1, P).any(axis=1))}
                t.changed()
                reported = _pages(t.written_ranges(), 0)
                assert differs <= reported, (round_, sorted(differs - reported)[:10])
        finally:
            stop.set()
            if running.locked():
                running.release()
            writer.join()
    del a, whole
    m.close()
