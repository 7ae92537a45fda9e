"""The store contract (dart.store.contract) on the S3 backend against a real
moto server process, and what is particular to object storage: conditional
writes for refs, leases with a named holder that expire, multipart uploads, a
kill mid-upload, the listing cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from dart.errors import StoreError
from dart.store import LeaseHeld, open_store
from dart.store.contract import StoreContract, _record

from s3server import s3_server  # noqa: F401 - the fixture

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install s3fs): dart cannot open s3:// stores")

from dart.store import s3 as s3_module  # noqa: E402
from dart.store.s3 import S3Backend  # noqa: E402


@pytest.fixture
def bucket(s3_server):
    return s3_server.new_bucket()


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_server, bucket):
        self.server = s3_server
        return open_store(f"s3://{bucket}/stores/contract", s3_endpoint=s3_server.endpoint)

    def child_open_code(self, store) -> str:
        return (
            "import os\n"
            f"os.environ.update({self.server.env()!r})\n"
            "from dart.store import open_store\n"
            f"store = open_store({store.location!r})\n"
        )

    # ----------------------------------------------------------- particular to S3

    def test_layout_is_the_local_one_under_the_prefix(self, store, bucket):
        oid, _ = store.put_object(b"abc")
        run = store.create_run({})
        cid = store.put_commit(_record(run=run))
        store.write_ref(f"runs/{run}", cid)
        keys = {o["Key"] for o in self.server.client.list_objects_v2(Bucket=bucket)["Contents"]}
        p = "stores/contract/"
        assert {p + "store.json", f"{p}objects/{oid[:2]}/{oid[2:]}", f"{p}commits/{cid}.json",
                f"{p}runs/{run}.json", f"{p}refs/runs/{run}"} <= keys
        got = self.server.client.get_object(Bucket=bucket, Key=f"{p}refs/runs/{run}")["Body"].read()
        assert got.strip().decode() == cid

    def test_big_object_goes_up_in_parallel_parts(self, store, monkeypatch):
        monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 6 << 20)
        monkeypatch.setattr(s3_module, "PART_SIZE", 5 << 20)
        calls = []
        real = store.backend.fs._call_s3

        async def counting(method, *a, **kw):
            calls.append(method)
            return await real(method, *a, **kw)

        monkeypatch.setattr(store.backend.fs, "_call_s3", counting)
        data = os.urandom(17 << 20)
        oid, written = store.put_object(data)
        assert calls.count("upload_part") == 4 and "complete_multipart_upload" in calls
        assert "put_object" not in calls
        assert store.get_object(oid) == data

    def test_kill_mid_multipart_upload_leaves_no_object(self, store, s3_server):
        """A process SIGKILLed... here: exits at once after the first part, as a kill would."""
        code = self.child_open_code(store) + textwrap.dedent(
            """
            import os
            from dart.store import s3
            s3.MULTIPART_THRESHOLD, s3.PART_SIZE = 6 << 20, 5 << 20
            data = os.urandom(12 << 20)
            from dart.store.codec import object_id
            print(object_id(data), flush=True)
            store.put_object(data)
            """
        )
        env = dict(os.environ, DART_TEST_CRASH_AT="object-part:1")
        child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert child.returncode == 70, child.stderr
        oid = child.stdout.strip()
        assert len(oid) == 32
        again = open_store(store.location, s3_endpoint=s3_server.endpoint)
        assert not again.has_object(oid)
        assert again.object_ids() == []

    def test_ref_compare_and_swap_race_has_one_winner(self, store, s3_server):
        """Eight writers (each its own backend, as on eight machines) move one ref from
        the same value at once: the server's conditional write lets exactly one win."""
        store.write_ref("runs/race", "0" * 16)
        stores = [open_store(store.location, s3_endpoint=s3_server.endpoint) for _ in range(8)]
        results = [None] * 8
        barrier = threading.Barrier(8)

        def write(i):
            barrier.wait()
            try:
                # i + 1: writer 0 writing "0..0" again would leave the object's ETag (an MD5
                # of its bytes) as it was, so a second writer's If-Match rightly won too
                stores[i].write_ref("runs/race", f"{i + 1:016x}", expected="0" * 16)
                results[i] = "won"
            except StoreError as exc:
                results[i] = str(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [i for i, r in enumerate(results) if r == "won"]
        assert len(winners) == 1, results
        assert store.read_ref("runs/race") == f"{winners[0] + 1:016x}"
        for r in results:
            assert r == "won" or "moved" in r

    def test_lease_names_its_holder_and_expires(self, store, bucket, monkeypatch):
        run = store.create_run({})
        key = f"stores/contract/leases/{run}.json"
        # a holder on another machine that renewed its lease a moment ago
        body = {"host": "machine-a.example", "pid": 4242, "token": "t", "expires": time.time() + 30}
        self.server.client.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())
        with pytest.raises(StoreError) as info:
            store.lock_run(run)
        message = str(info.value)
        assert f"run {run} is already running in process 4242 on host machine-a.example" in message
        assert "expires in" in message
        # ...that stopped renewing it (its machine died): the lease is taken over
        body["expires"] = time.time() - 1
        self.server.client.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())
        lease = store.lock_run(run)
        held = json.loads(self.server.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert held["pid"] == os.getpid()
        lease.release()
        with pytest.raises(Exception):
            self.server.client.head_object(Bucket=bucket, Key=key)  # released: gone

    def test_lease_is_renewed_while_held(self, s3_server, bucket, monkeypatch):
        monkeypatch.setenv("DART_S3_LEASE_TTL", "0.6")
        store = open_store(f"s3://{bucket}/renew", s3_endpoint=s3_server.endpoint)
        run = store.create_run({})
        lease = store.lock_run(run)
        first = json.loads(store.backend.get(f"leases/{run}.json"))["expires"]
        time.sleep(1.5)  # more than two ttl: expired unless renewed
        other = open_store(store.location, s3_endpoint=s3_server.endpoint)
        other.backend._holder = lambda: {"host": "elsewhere", "pid": 1, "token": "x"}
        with pytest.raises(StoreError, match="already running in process"):
            other.lock_run(run)
        assert json.loads(store.backend.get(f"leases/{run}.json"))["expires"] > first
        lease.release()
        other.lock_run(run).release()

    def test_two_takers_of_an_expired_lease_one_wins(self, s3_server, bucket):
        """Of two machines that find a lease expired, only one takes it (If-Match)."""
        location = f"s3://{bucket}/takers"
        store = open_store(location, s3_endpoint=s3_server.endpoint)
        run = store.create_run({})
        dead = {"host": "gone.example", "pid": 1, "token": "t", "expires": time.time() - 5}
        store.backend.put(f"leases/{run}.json", [json.dumps(dead).encode()])
        backends = []
        for i in range(6):
            b = open_store(location, s3_endpoint=s3_server.endpoint).backend
            b._holder = (lambda i=i: {"host": f"taker-{i}", "pid": 100 + i, "token": str(i)})
            backends.append(b)
        outcome = [None] * 6
        barrier = threading.Barrier(6)

        def take(i):
            barrier.wait()
            try:
                backends[i].lease(run)
                outcome[i] = "won"
            except LeaseHeld as exc:
                outcome[i] = exc.holder

        threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert outcome.count("won") == 1, outcome
        winner = outcome.index("won")
        assert all(o == "won" or f"process {100 + winner} on host taker-{winner}" in o for o in outcome), outcome

    def test_existence_checks_are_answered_from_a_listing(self, store, monkeypatch):
        oids = [store.put_object(os.urandom(100))[0] for _ in range(20)]
        fresh = open_store(store.location, s3_endpoint=self.server.endpoint)
        calls = []
        real = fresh.backend.fs._call_s3

        async def counting(method, *a, **kw):
            calls.append(method)
            return await real(method, *a, **kw)

        monkeypatch.setattr(fresh.backend.fs, "_call_s3", counting)
        for oid in oids * 3:
            assert fresh.has_object(oid)
        shards = {oid[:2] for oid in oids}
        assert calls.count("list_objects_v2") == len(shards) and "head_object" not in calls
        # this process's own writes and deletes keep it true
        new, _ = fresh.put_object(b"written here")
        assert fresh.has_object(new)
        fresh.delete_object(oids[0])
        assert not fresh.has_object(oids[0])

    def test_missing_bucket_is_said(self, s3_server):
        with pytest.raises(StoreError, match="bucket no-such-bucket-here of store s3://no-such-bucket-here/x does not exist"):
            open_store("s3://no-such-bucket-here/x", s3_endpoint=s3_server.endpoint)

    def test_unreachable_endpoint_is_said(self):
        from s3server import free_port

        started = time.monotonic()
        with pytest.raises(StoreError, match=r"cannot reach the bucket in store s3://b/x.*check the network and the endpoint"):
            open_store("s3://b/x", s3_endpoint=f"http://127.0.0.1:{free_port()}")
        assert time.monotonic() - started < 20

    def test_bad_urls(self):
        for url in ["s3://", "s3:///x", "s3://b/../x"]:
            with pytest.raises(StoreError, match="s3://BUCKET"):
                S3Backend(url)


def test_store_on_s3_needs_no_local_folder(s3_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store(f"s3://{s3_server.new_bucket()}/p", s3_endpoint=s3_server.endpoint)
    assert store.home is None and store.location.startswith("s3://")
    store.put_object(b"x")
    assert os.listdir(tmp_path) == []


def test_requests_leave_the_programs_random_numbers_alone(s3_server):
    """botocore's retry back-off draws from the global `random` module: a failed
    request must not change the numbers the program draws (replicability)."""
    import random

    from s3server import free_port

    before = random.getstate()
    store = open_store(f"s3://{s3_server.new_bucket()}/r", s3_endpoint=s3_server.endpoint)
    store.put_object(os.urandom(1000))
    with pytest.raises(StoreError):
        open_store("s3://b/x", s3_endpoint=f"http://127.0.0.1:{free_port()}")
    assert random.getstate() == before


def test_a_lease_whose_holder_missed_its_renewal_is_waited_out(s3_server, monkeypatch):
    monkeypatch.setenv("DART_S3_LEASE_TTL", "1.5")
    store = open_store(f"s3://{s3_server.new_bucket()}/stale", s3_endpoint=s3_server.endpoint)
    run = store.create_run({})
    key = f"leases/{run}.json"
    fresh = {"host": "machine-a.example", "pid": 7, "token": "t", "expires": time.time() + 1.45}
    store.backend.put(key, [json.dumps(fresh).encode()])
    with pytest.raises(StoreError, match="already running in process 7 on host machine-a.example"):
        store.lock_run(run)  # renewed on time: its holder is alive
    stale = dict(fresh, expires=time.time() + 0.4)  # last renewed 1.1 s ago: one renewal missed
    store.backend.put(key, [json.dumps(stale).encode()])
    started = time.monotonic()
    lease = store.lock_run(run)
    assert 0.3 < time.monotonic() - started < 5
    assert json.loads(store.backend.get(key))["pid"] == os.getpid()
    lease.release()


def test_commits_are_uploaded_on_the_flusher_thread_only(s3_server):
    """The program's thread only stages; every upload of a commit (packs of changed
    bytes, pods, index, record, ref) is made by the flusher's thread."""
    from dart.capture.pods import Pod
    from dart.flush import CommitWriter
    from dart.store.layout import CommitState

    store = open_store(f"s3://{s3_server.new_bucket()}/threads", s3_endpoint=s3_server.endpoint)
    run = store.create_run({"key": "k"})
    threads = []
    backend = store.backend
    real_put, real_cas = backend.put, backend.cas_ref

    def put(key, chunks, **kw):
        threads.append((threading.current_thread().name, key))
        return real_put(key, chunks, **kw)

    def cas_ref(*a):
        threads.append((threading.current_thread().name, "ref"))
        return real_cas(*a)

    backend.put, backend.cas_ref = put, cas_ref
    writer = CommitWriter(store, run, parent=None, staging=64 << 20, dirty=False)
    big = bytearray(os.urandom(3 << 20))
    handles = []
    for i in range(3):
        big[i * 1000] ^= 0xFF
        handles.append(writer.commit([Pod("g:x", b"pickle-%d" % i, [big])], {"position": i, "message": f"c{i}"}))
    ids = [h.wait(timeout=60) for h in handles]
    writer.close()
    assert threads and {name for name, _ in threads} == {f"dart-flusher-{run}"}, threads
    assert sum(1 for _, key in threads if key.startswith("objects/")) >= 6
    [(_, stream, buffers)] = CommitState(store, store.get_commit(ids[-1])).read()
    assert bytes(stream) == b"pickle-2" and bytes(buffers[0]) == bytes(big)
    assert store.read_ref(f"runs/{run}") == ids[-1]
