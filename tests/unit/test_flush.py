"""The background flusher against a real local store."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import pytest

from dart.errors import StoreError
from dart.flush import CommitHandle, Flusher, StagedCommit
from dart.store import Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / ".dart")


@pytest.fixture
def run_id(store):
    return store.create_run({"key": "test"})


def staged(i: int, *buffers) -> StagedCommit:
    return StagedCommit(payload=b"pickle-%d" % i, buffers=list(buffers), meta={"position": i, "message": f"c{i}"})


class Unbufferable:
    """A 'buffer' that cannot be turned into bytes: its write fails on the flusher thread."""

    def __bytes__(self):
        raise RuntimeError("no bytes for you")


def test_order_and_parent_chain(store, run_id):
    flusher = Flusher(store, run_id, parent=None)
    handles = [flusher.submit(staged(i, os.urandom(1000), bytearray(b"b%d" % i))) for i in range(10)]
    flusher.close()
    ids = [h.wait(timeout=10) for h in handles]
    assert len(set(ids)) == 10
    assert flusher.head == ids[-1] == store.read_ref(f"runs/{run_id}")
    parent = None
    for i, cid in enumerate(ids):
        record = store.get_commit(cid)
        assert record["parent"] == parent
        assert record["run"] == run_id
        assert record["position"] == i and record["message"] == f"c{i}"
        assert isinstance(record["time"], float)
        assert store.get_object(record["state"]["pickle"]) == b"pickle-%d" % i
        assert [store.get_object(o) for o in record["state"]["buffers"]][1] == b"b%d" % i
        parent = cid
    assert [r["id"] for r in store.log(run_id)] == ids[::-1]
    assert flusher.bytes_written == sum(store.get_commit(c)["bytes_written"] for c in ids) > 10 * 1000


def test_initial_parent_from_another_run(store, run_id):
    with Flusher(store, run_id, parent=None) as first:
        base = first.submit(staged(0)).wait(10)
    branch = store.create_run({"key": "test"})
    with Flusher(store, branch, parent=base) as second:
        assert second.head is None
        cid = second.submit(staged(1)).wait(10)
    assert store.get_commit(cid)["parent"] == base
    assert store.read_ref(f"runs/{branch}") == cid
    assert store.read_ref(f"runs/{run_id}") == base


def test_continue_existing_run(store, run_id):
    with Flusher(store, run_id, parent=None) as first:
        c1 = first.submit(staged(1)).wait(10)
    with Flusher(store, run_id, parent=c1) as again:
        assert again.head == c1
        c2 = again.submit(staged(2)).wait(10)
    assert store.get_commit(c2)["parent"] == c1
    assert store.read_ref(f"runs/{run_id}") == c2


def test_dedup_counts_zero_bytes(store, run_id):
    big = os.urandom(100_000)
    with Flusher(store, run_id, parent=None) as flusher:
        h1 = flusher.submit(staged(1, big))
        h2 = flusher.submit(staged(2, big))
    h1.wait(), h2.wait()
    assert h1.bytes_written > 100_000
    assert h2.bytes_written < 1000  # only the new pickle object
    assert store.get_commit(h2.id)["bytes_written"] == h2.bytes_written


def test_back_pressure(store, run_id, monkeypatch):
    monkeypatch.setenv("DART_TEST_FLUSH_DELAY", "0.2")
    flusher = Flusher(store, run_id, parent=None, max_in_flight=1)
    start = time.monotonic()
    h1 = flusher.submit(staged(1))
    assert time.monotonic() - start < 0.1  # the first one does not wait
    assert not h1.done()
    h2 = flusher.submit(staged(2))  # blocks until h1 is durable
    assert h1.done() and h1.id is not None
    assert time.monotonic() - start >= 0.18
    assert not h2.done()
    flusher.close()
    assert h2.done()


def test_submit_returns_while_writing(store, run_id, monkeypatch):
    monkeypatch.setenv("DART_TEST_FLUSH_DELAY", "0.3")
    flusher = Flusher(store, run_id, parent=None, max_in_flight=2)
    start = time.monotonic()
    handle = flusher.submit(staged(1))
    assert time.monotonic() - start < 0.1
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.01)
    with pytest.raises(TimeoutError):
        flusher.drain(timeout=0.01)
    flusher.drain()
    assert handle.done() and flusher.in_flight == 0
    flusher.close()


def test_drain_waits_for_everything(store, run_id, monkeypatch):
    monkeypatch.setenv("DART_TEST_FLUSH_DELAY", "0.05")
    flusher = Flusher(store, run_id, parent=None, max_in_flight=4)
    handles = [flusher.submit(staged(i)) for i in range(4)]
    flusher.drain(timeout=10)
    assert all(h.done() and h.error is None for h in handles)
    assert flusher.head == handles[-1].id
    flusher.close()


def test_close_is_idempotent_and_rejects_submit(store, run_id):
    flusher = Flusher(store, run_id, parent=None)
    flusher.submit(staged(1))
    flusher.close()
    flusher.close()
    assert not flusher._thread.is_alive()
    with pytest.raises(StoreError, match="closed"):
        flusher.submit(staged(2))


def test_error_goes_to_handle_and_later_commits_proceed(store, run_id, caplog):
    flusher = Flusher(store, run_id, parent=None)
    good = flusher.submit(staged(1))
    with caplog.at_level(logging.ERROR, logger="dart"):
        bad = flusher.submit(staged(2, b"fine", Unbufferable()))
        later = flusher.submit(staged(3))
        flusher.close()
    g = good.wait()
    with pytest.raises(StoreError, match="Unbufferable|buffer") as info:
        bad.wait()
    assert bad.error is info.value and bad.id is None
    assert isinstance(info.value.__cause__, TypeError)
    assert run_id in str(info.value)
    assert any("was not saved" in r.getMessage() for r in caplog.records)
    # The failed commit is skipped: the next one chains onto the last good head.
    cid = later.wait()
    assert store.get_commit(cid)["parent"] == g
    assert [r["id"] for r in store.log(run_id)] == [cid, g]
    assert flusher.head == cid


def test_store_removed_under_flusher(store, run_id, tmp_path):
    flusher = Flusher(store, run_id, parent=None)
    first = flusher.submit(staged(1)).wait()
    shutil.rmtree(store.root)
    handle = flusher.submit(staged(2, os.urandom(10)))
    flusher.close()
    with pytest.raises(StoreError, match="cannot"):
        handle.wait()
    assert flusher.head == first


def test_ref_moved_by_someone_else(store, run_id):
    flusher = Flusher(store, run_id, parent=None)
    flusher.submit(staged(1)).wait()
    store.write_ref(f"runs/{run_id}", "0" * 16, expected=flusher.head)  # an intruder
    handle = flusher.submit(staged(2))
    flusher.close()
    with pytest.raises(StoreError, match="moved"):
        handle.wait()


def test_handle_wait_from_many_threads(store, run_id, monkeypatch):
    monkeypatch.setenv("DART_TEST_FLUSH_DELAY", "0.1")
    flusher = Flusher(store, run_id, parent=None)
    handle = flusher.submit(staged(1))
    results = []
    threads = [threading.Thread(target=lambda: results.append(handle.wait(10))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [handle.id] * 4
    flusher.close()


def test_handle_repr_and_bad_max_in_flight(store, run_id):
    assert "pending" in repr(CommitHandle(1))
    with pytest.raises(ValueError):
        Flusher(store, run_id, parent=None, max_in_flight=0)
