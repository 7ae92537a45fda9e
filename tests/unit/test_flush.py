"""The background flusher against a real local store."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import pytest

from dart.errors import StoreError
from dart.capture.pods import Pod
from dart.flush import CommitHandle, CommitWriter, Flusher, StagedCommit
from dart.store import Store
from dart.store.layout import CommitState


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / ".dart")


@pytest.fixture
def run_id(store):
    return store.create_run({"key": "test"})


def staged(i: int) -> StagedCommit:
    """A commit of one small pod and no buffers."""
    return StagedCommit(pods=[("g:x", b"pickle-%d" % i, [], [])], meta={"position": i, "message": f"c{i}"})


@pytest.fixture
def writer(store, run_id):
    """writer(i, *buffers) -> handle: one pod plus buffers, through a CommitWriter
    with a 4 MiB staging area (as a session writes)."""
    w = CommitWriter(store, run_id, parent=None, staging=4 << 20, dirty=False)

    def commit(i, *buffers):
        pod = Pod("g:x", b"pickle-%d" % i, [bytearray(b) if isinstance(b, bytes) else b for b in buffers])
        return w.commit([pod], {"position": i, "message": f"c{i}"})

    commit.flusher = w.flusher
    yield commit
    w.close()


def saved(store, cid) -> list:
    """(pod stream, [buffer bytes]) of a commit, read back."""
    [(name, stream, buffers)] = CommitState(store, store.get_commit(cid)).read()
    return bytes(stream), [bytes(b) for b in buffers]


def test_order_and_parent_chain(store, run_id, writer):
    blobs = [(os.urandom(100_000), bytearray(b"b%d" % i * 40_000)) for i in range(10)]
    handles = [writer(i, *blobs[i]) for i in range(10)]
    writer.flusher.close()
    ids = [h.wait(timeout=10) for h in handles]
    assert len(set(ids)) == 10
    assert writer.flusher.head == ids[-1] == store.read_ref(f"runs/{run_id}")
    parent = None
    for i, cid in enumerate(ids):
        record = store.get_commit(cid)
        assert record.parent == parent
        assert record.run == run_id
        assert record.position == i and record.message == f"c{i}"
        assert isinstance(record.time, float)
        assert saved(store, cid) == (b"pickle-%d" % i, [bytes(b) for b in blobs[i]])
        parent = cid
    assert [r.id for r in store.log(run_id)] == ids[::-1]
    assert writer.flusher.bytes_written == sum(store.get_commit(c).bytes_written for c in ids) > 10 * 100_000


def test_initial_parent_from_another_run(store, run_id):
    with Flusher(store, run_id, parent=None) as first:
        base = first.submit(staged(0)).wait(10)
    branch = store.create_run({"key": "test"})
    with Flusher(store, branch, parent=base) as second:
        assert second.head is None
        cid = second.submit(staged(1)).wait(10)
    assert store.get_commit(cid).parent == base
    assert store.read_ref(f"runs/{branch}") == cid
    assert store.read_ref(f"runs/{run_id}") == base


def test_continue_existing_run(store, run_id):
    with Flusher(store, run_id, parent=None) as first:
        c1 = first.submit(staged(1)).wait(10)
    with Flusher(store, run_id, parent=c1) as again:
        assert again.head == c1
        c2 = again.submit(staged(2)).wait(10)
    assert store.get_commit(c2).parent == c1
    assert store.read_ref(f"runs/{run_id}") == c2


def test_unchanged_buffer_and_pod_are_not_written_again(store, writer):
    big = bytearray(os.urandom(1 << 20))
    h1 = writer(1, big)
    h1.wait()
    h2 = writer(1, big)  # same pod bytes, same buffer
    big[5000:5010] = b"x" * 10  # one 4 KiB chunk changes
    h3 = writer(1, big)
    h1.wait(), h2.wait(), h3.wait()
    assert h1.bytes_written > 1 << 20
    assert h2.bytes_written < 1000  # only the new index
    assert 4096 <= h3.bytes_written < 4096 + 2000
    assert store.get_commit(h2.id).bytes_written == h2.bytes_written
    assert saved(store, h3.id)[1] == [bytes(big)]  # rebuilt from two commits' packs


def test_a_commit_larger_than_the_staging_area_waits_and_is_complete(store, writer, caplog):
    blobs = [os.urandom(3 << 20) for _ in range(3)]  # 9 MiB through a 4 MiB ring
    with caplog.at_level(logging.WARNING, logger="dart"):
        handle = writer(1, *blobs)
    assert saved(store, handle.wait(10))[1] == blobs
    assert any("staging area" in r.getMessage() for r in caplog.records)


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


def test_error_goes_to_handle_and_later_commits_proceed(store, run_id, writer, caplog, monkeypatch):
    good = writer(1).wait()
    real_put = store.put_object

    def disk_full(data, **options):  # only the pack of commit 2 (the one 200 kB object) fails
        if memoryview(data).nbytes == 200_000:
            raise StoreError("cannot write object: No space left on device; free some disk space")
        return real_put(data, **options)

    monkeypatch.setattr(store, "put_object", disk_full)
    buffer = bytearray(os.urandom(200_000))
    with caplog.at_level(logging.ERROR, logger="dart"):
        bad = writer(2, buffer)
        with pytest.raises(StoreError, match="needs bytes that could not be written") as info:
            bad.wait()
    assert bad.error is info.value and bad.id is None
    assert run_id in str(info.value) and "No space left" in str(info.value)
    assert any("was not saved" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(store, "put_object", real_put)
    # The failed commit is skipped: the next one writes the lost bytes again and
    # chains onto the last good head.
    cid = writer(3, buffer).wait()
    assert store.get_commit(cid).parent == good
    assert saved(store, cid)[1] == [bytes(buffer)]
    assert [r.id for r in store.log(run_id)] == [cid, good]
    assert writer.flusher.head == cid


def test_store_removed_under_flusher(store, run_id, tmp_path):
    flusher = Flusher(store, run_id, parent=None)
    first = flusher.submit(staged(1)).wait()
    shutil.rmtree(store.root)
    handle = flusher.submit(staged(2))
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
