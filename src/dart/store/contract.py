"""The store contract: behaviour every store backend must have.

A backend's tests subclass :class:`StoreContract`, implement ``make_store`` (and
``child_open_code`` if another process can open the same store) and inherit
every test::

    from dart.store.contract import StoreContract

    class TestMyBackend(StoreContract):
        def make_store(self, tmp_path):
            return Store(MyBackend(...))

Needs pytest (the test extra); nothing in dart imports this module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from dart.errors import CorruptObjectError, StoreError
from dart.store import CommitRecord, commit_id, object_id

MB = 1024 * 1024


def _record(**fields) -> CommitRecord:
    return CommitRecord(**dict({"time": time.time(), "message": "m", "parent": None, "run": "r"}, **fields))


class StoreContract:
    """Behaviour every store backend must have."""

    #: whether another process can open the same store (child_open_code)
    shared_between_processes = True

    def make_store(self, tmp_path):
        raise NotImplementedError

    def child_open_code(self, store) -> str:
        """Python source that binds `store` to the same store in a child process."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path):
        return self.make_store(tmp_path)

    # ----------------------------------------------------------- objects

    @pytest.mark.parametrize(
        "data",
        [b"", b"x", b"hello world" * 3, bytes(range(256)) * 40],
        ids=["empty", "one-byte", "small", "10k-pattern"],
    )
    def test_object_round_trip(self, store, data):
        oid, written = store.put_object(data)
        assert oid == object_id(data)
        assert written > 0
        assert store.has_object(oid)
        assert store.get_object(oid) == data

    def test_random_data_stored_raw(self, store):
        data = os.urandom(5 * MB)
        oid, written = store.put_object(data)
        assert written >= len(data)  # raw: header + payload
        assert store.get_object(oid) == data

    def test_zeros_stored_compressed(self, store):
        data = bytes(5 * MB)
        oid, written = store.put_object(data)
        assert 0 < written < len(data) // 100
        assert store.get_object(oid) == data

    def test_memoryview_and_bytearray(self, store):
        data = bytearray(os.urandom(10000))
        oid1, _ = store.put_object(memoryview(data))
        oid2, written = store.put_object(data)
        assert oid1 == oid2 and written == 0
        assert store.get_object(oid1) == bytes(data)

    def test_non_byte_memoryview(self, store):
        import array

        values = array.array("d", [1.5, 2.5, 3.5])
        oid, _ = store.put_object(memoryview(values))
        assert store.get_object(oid) == values.tobytes()

    def test_dedup_writes_nothing(self, store):
        data = os.urandom(100000)
        oid, first = store.put_object(data)
        again, second = store.put_object(data)
        assert again == oid and first > 0 and second == 0

    def test_has_object_false_for_unknown(self, store):
        assert not store.has_object(object_id(b"never stored"))

    def test_missing_object_raises(self, store):
        with pytest.raises(StoreError, match="missing"):
            store.get_object(object_id(b"never stored"))

    # ----------------------------------------------------------- commits

    def test_commit_id_deterministic(self, store):
        record = _record(time=1.0, state={"pickle": "ab", "buffers": []})
        cid = store.put_commit(record)
        assert cid == commit_id(record) and len(cid) == 16
        assert store.put_commit(record.replace()) == cid  # idempotent
        assert store.put_commit(record.replace(id="whatever")) == cid  # "id" is not hashed
        assert store.put_commit(record.replace(message="other")) != cid
        got = store.get_commit(cid)
        assert got == record.replace(id=cid)

    def test_commit_prefix_resolution(self, store):
        cid = store.put_commit(_record(time=1.0))
        assert store.get_commit(cid[:4]).id == cid
        assert store.get_commit(cid[:10]).id == cid

    def test_commit_prefix_too_short(self, store):
        cid = store.put_commit(_record(time=1.0))
        with pytest.raises(StoreError, match="no commit"):
            store.get_commit(cid[:3])

    def test_commit_prefix_ambiguous(self, store):
        # Two records whose ids share 4 hex chars: a birthday search takes a few hundred tries.
        first_with_prefix: dict[str, int] = {}
        i = 0
        while (prefix := commit_id(_record(time=float(i)))[:4]) not in first_with_prefix:
            first_with_prefix[prefix] = i
            i += 1
        a = store.put_commit(_record(time=float(first_with_prefix[prefix])))
        b = store.put_commit(_record(time=float(i)))
        with pytest.raises(StoreError, match="ambiguous") as info:
            store.get_commit(prefix)
        assert a in str(info.value) and b in str(info.value)
        assert store.get_commit(a).id == a

    def test_missing_commit(self, store):
        with pytest.raises(StoreError, match=r"no commit deadbeef .*dart log"):
            store.get_commit("deadbeef")
        with pytest.raises(StoreError, match="no commit"):
            store.get_commit("no-such-run")

    def test_run_id_resolves_to_head(self, store):
        run = store.create_run({"key": "k"})
        c1 = store.put_commit(_record(time=1.0, run=run))
        store.write_ref(f"runs/{run}", c1)
        assert store.get_commit(run).id == c1
        assert store.head(run).id == c1

    # ----------------------------------------------------------- refs

    def test_refs_compare_and_swap(self, store):
        assert store.read_ref("runs/r1") is None
        store.write_ref("runs/r1", "aaaaaaaaaaaaaaaa")
        assert store.read_ref("runs/r1") == "aaaaaaaaaaaaaaaa"
        with pytest.raises(StoreError, match="moved"):
            store.write_ref("runs/r1", "bbbbbbbbbbbbbbbb")  # expected None, but it exists
        with pytest.raises(StoreError, match="moved"):
            store.write_ref("runs/r1", "bbbbbbbbbbbbbbbb", expected="cccccccccccccccc")
        store.write_ref("runs/r1", "bbbbbbbbbbbbbbbb", expected="aaaaaaaaaaaaaaaa")
        assert store.read_ref("runs/r1") == "bbbbbbbbbbbbbbbb"

    def test_lease_holder_is_told_without_taking_the_lease(self, store):
        assert store.backend.lease_holder("r-probe") is None
        lease = store.lock_run("r-probe")
        try:
            assert str(os.getpid()) in store.backend.lease_holder("r-probe")
        finally:
            lease.release()
        assert store.backend.lease_holder("r-probe") is None

    def test_delete_ref_compare_and_swap(self, store):
        store.write_ref("tags/t1", "aaaaaaaaaaaaaaaa")
        with pytest.raises(StoreError):
            store.delete_ref("tags/t1", "bbbbbbbbbbbbbbbb")  # it holds another commit
        assert store.read_ref("tags/t1") == "aaaaaaaaaaaaaaaa"
        assert "tags/t1" in store.list_refs("tags/")
        store.delete_ref("tags/t1", "aaaaaaaaaaaaaaaa")
        assert store.read_ref("tags/t1") is None and "tags/t1" not in store.list_refs("tags/")
        store.write_ref("tags/t1", "cccccccccccccccc")  # and it can be made again
        assert store.read_ref("tags/t1") == "cccccccccccccccc"

    def test_bad_ref_names(self, store):
        for name in ["", "../x", "runs/../../x", "/abs"]:
            with pytest.raises(StoreError):
                store.write_ref(name, "aaaaaaaaaaaaaaaa")

    def test_a_ref_holding_no_commit_id_is_damage(self, store):
        for garbage in ["not-a-commit", "a" * 15 + "\x00", "../../x"]:
            store.backend.cas_ref("runs/r9", store.backend.read_ref("runs/r9"), garbage)
            with pytest.raises(CorruptObjectError, match="not a commit id"):
                store.read_ref("runs/r9")
        store.repair_ref("runs/r9", "d" * 16)
        assert store.read_ref("runs/r9") == "d" * 16

    def test_head_of_run_without_commits(self, store):
        run = store.create_run({})
        assert store.head(run) is None

    # ----------------------------------------------------------- runs

    def test_runs_create_update_find(self, store):
        a = store.create_run({"key": "train.py", "argv": ["x"]})
        time.sleep(0.01)
        b = store.create_run({"key": "other.py"})
        time.sleep(0.01)
        c = store.create_run({"key": "train.py"})
        run = store.get_run(a)
        assert run["id"] == a and run["status"] == "running" and run["argv"] == ["x"]
        assert isinstance(run["created"], float)
        store.update_run(a, status="finished", exit_code=0)
        run = store.get_run(a)
        assert run["status"] == "finished" and run["exit_code"] == 0 and run["key"] == "train.py"
        assert [r["id"] for r in store.list_runs()] == [a, b, c]
        assert [r["id"] for r in store.find_runs("train.py")] == [a, c]
        assert store.find_runs("nothing") == []

    def test_run_ids_are_time_sortable(self, store):
        ids = []
        for _ in range(3):
            ids.append(store.create_run({}))
            time.sleep(1.01)  # the id has one-second resolution
        assert ids == sorted(ids)
        assert len(ids[0]) == len("20240101-120000-abcdef")

    def test_missing_run(self, store):
        with pytest.raises(StoreError, match="no run"):
            store.get_run("20000101-000000-000000")
        with pytest.raises(StoreError, match="no run"):
            store.update_run("20000101-000000-000000", status="x")

    # ----------------------------------------------------------- log

    def _chain(self, store, run, n, parent=None, t0=0.0):
        ids = []
        head = store.read_ref(f"runs/{run}")
        for i in range(n):
            cid = store.put_commit(_record(time=t0 + i, run=run, parent=parent, message=f"{run}:{i}"))
            store.write_ref(f"runs/{run}", cid, expected=head)
            head = parent = cid
            ids.append(cid)
        return ids

    def test_log_newest_first(self, store):
        run = store.create_run({})
        ids = self._chain(store, run, 5, t0=100.0)
        log = store.log()
        assert [r.id for r in log] == ids[::-1]
        assert all(store.get_commit(r.id) == r for r in log)  # every listed commit is stored
        assert store.log(run) == log

    def test_log_equal_times_keep_chain_order(self, store):
        run = store.create_run({})
        ids = []
        parent = None
        for i in range(4):
            cid = store.put_commit(_record(time=5.0, run=run, parent=parent, message=str(i)))
            store.write_ref(f"runs/{run}", cid, expected=parent)
            parent = cid
            ids.append(cid)
        assert [r.id for r in store.log()] == ids[::-1]

    def test_log_skips_unreachable(self, store):
        run = store.create_run({})
        ids = self._chain(store, run, 2)
        orphan = store.put_commit(_record(time=99.0, run=run, parent=ids[-1], message="orphan"))
        assert orphan not in [r.id for r in store.log()]
        assert store.get_commit(orphan).message == "orphan"  # still addressable directly

    def test_log_several_runs_and_branches(self, store):
        a = store.create_run({})
        b = store.create_run({})
        a_ids = self._chain(store, a, 3, t0=0.0)
        # b branches from a's second commit
        b_ids = self._chain(store, b, 2, parent=a_ids[1], t0=10.0)
        everything = [r.id for r in store.log()]
        assert everything == b_ids[::-1] + a_ids[::-1]
        assert [r.id for r in store.log(a)] == a_ids[::-1]
        assert [r.id for r in store.log(b)] == b_ids[::-1]

    def test_log_empty(self, store):
        assert store.log() == []
        assert store.log("no-such-run") == []

    # ----------------------------------------------------------- locks

    def test_lock_run_in_process(self, store):
        run = store.create_run({})
        lock = store.lock_run(run)
        with pytest.raises(StoreError, match=f"run {run} is already running in process {os.getpid()}"):
            store.lock_run(run)
        lock.release()
        lock.release()  # idempotent
        with store.lock_run(run):
            pass
        store.lock_run(run).release()

    def test_lock_run_held_by_other_process(self, store):
        if not self.shared_between_processes:
            pytest.skip("this backend's stores live in one process")
        run = store.create_run({})
        code = self.child_open_code(store) + textwrap.dedent(
            f"""
            import sys
            lock = store.lock_run({run!r})
            print("locked", flush=True)
            sys.stdin.read()
            """
        )
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout.readline().strip() == "locked"
            with pytest.raises(StoreError) as info:
                store.lock_run(run)
            message = str(info.value)
            assert f"run {run} is already running in process {child.pid}" in message
            assert "kill it" in message
        finally:
            child.kill()
            child.wait(10)
        store.lock_run(run).release()  # the lock died with its holder
