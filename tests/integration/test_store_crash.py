"""Kill a real writer process at every step of a commit; the store must stay consistent.

Each child makes one good commit through the Flusher, then dies (os._exit(70) through
the DART_TEST_CRASH_AT hook, or a real SIGKILL) while writing the next one. The test
process then opens the store and checks that exactly the durable commits are visible
and that every byte they name reads back and verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dart.store import CRASH_EXIT_CODE, Store
from dart.store.layout import CommitState

CRASH_STEPS = ["object-tmp", "object", "record-tmp", "record", "ref-tmp"]

FIRST_PAYLOAD = b"first pickle stream"
FIRST_BUFFERS = [b"\x01" * 100_000, bytes(range(256)) * 64]

CHILD_ONE_GOOD_THEN_CRASH = textwrap.dedent(
    """
    import os, sys
    from dart.store import Store
    from dart.capture.pods import Pod
    from dart.flush import CommitWriter

    root, step = sys.argv[1], sys.argv[2]
    store = Store(root)
    run = store.create_run({"key": "crash-test"})
    print(run, flush=True)
    writer = CommitWriter(store, run, parent=None, staging=8 << 20)
    first = writer.commit(
        [Pod("g:x", b"first pickle stream", [bytearray(b"\\x01" * 100_000), bytearray(range(256)) * 64])],
        {"message": "first", "position": 1},
    )
    print(first.wait(30), flush=True)
    os.environ["DART_TEST_CRASH_AT"] = step
    second = writer.commit(
        [Pod("g:x", b"second pickle stream", [bytearray(os.urandom(200_000)), bytearray(b"\\x02" * 50_000)])],
        {"message": "second", "position": 2},
    )
    second.wait(30)
    sys.exit(0)  # not reached: the crash hook ends the process
    """
)


def _env(**extra):
    env = dict(os.environ)
    env.pop("DART_TEST_CRASH_AT", None)
    env.pop("DART_TEST_FLUSH_DELAY", None)
    env.update(extra)
    return env


def _verify_commit(store: Store, record: dict) -> list[bytes]:
    [(_, stream, buffers)] = CommitState(store, record).read()
    return [bytes(stream)] + [bytes(b) for b in buffers]


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_crash_at_each_step_keeps_previous_commit(tmp_path, step):
    root = tmp_path / ".dart"
    child = subprocess.run(
        [sys.executable, "-c", CHILD_ONE_GOOD_THEN_CRASH, str(root), step],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(DART_TEST_NO_JOURNAL="1"),  # each file on its own (the journal: below)
    )
    assert child.returncode == CRASH_EXIT_CODE, child.stderr
    run, first_id = child.stdout.split()

    # The crash left the garbage expected of its step (so the hook fired where it says).
    records = sorted(p.stem for p in (root / "commits").glob("*.json"))
    leftovers = list((root / "tmp").iterdir())
    assert len(records) == (2 if step in ("record", "ref-tmp") else 1)
    assert bool(leftovers) == step.endswith("-tmp")

    store = Store(root)
    log = store.log()
    assert [r.id for r in log] == [first_id]
    assert log[0].message == "first" and store.get_commit(first_id) == log[0]
    assert store.log(run) == log
    assert store.read_ref(f"runs/{run}") == first_id
    assert store.head(run).id == first_id
    assert _verify_commit(store, log[0]) == [FIRST_PAYLOAD, *FIRST_BUFFERS]

    # The store is still writable after the crash: a new commit chains on the first.
    from dart.flush import Flusher, StagedCommit

    with Flusher(store, run, parent=first_id) as flusher:
        cid = flusher.submit(StagedCommit([("g:x", b"after crash", [], [])], [], {"message": "third"})).wait(30)
    assert [r.id for r in store.log(run)] == [cid, first_id]
    assert store.get_commit(cid).parent == first_id


CHILD_LOOP = textwrap.dedent(
    """
    import os, sys
    from dart.store import Store
    from dart.capture.pods import Pod
    from dart.flush import CommitWriter

    store = Store(sys.argv[1])
    run = store.create_run({"key": "kill-test"})
    print(run, flush=True)
    writer = CommitWriter(store, run, parent=None, max_in_flight=2, staging=16 << 20)
    i = 0
    while True:
        buffers = [bytearray(os.urandom(1 << 20)), bytearray(1 << 20), bytearray(b"%d" % i * 1000)]
        handle = writer.commit([Pod("g:x", b"pickle %d" % i, buffers)], {"message": "loop", "position": i})
        if i > 0:
            print("durable", previous.wait(30), flush=True)
        previous = handle
        i += 1
    """
)


@pytest.mark.parametrize("kill_after", [0.35, 0.5, 0.75, 1.1])
def test_sigkill_mid_write(tmp_path, kill_after):
    root = tmp_path / ".dart"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_LOOP, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(DART_TEST_FLUSH_DELAY="0.2"),
    )
    try:
        run = child.stdout.readline().strip()
        assert run, child.stderr.read()
        assert child.stdout.readline().startswith("durable")  # at least one commit is durable
        time.sleep(kill_after)
    finally:
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    reported = [line.split()[1] for line in out.splitlines() if line.startswith("durable")]

    store = Store(root)
    log = store.log()
    ids = [r.id for r in log]
    assert log, "no commit survived"
    # Every commit reported durable before the kill survives the kill.
    assert set(reported) <= set(ids)
    assert store.read_ref(f"runs/{run}") == ids[0]
    positions = [r.position for r in log]
    assert positions == list(range(len(log)))[::-1]  # an unbroken chain, newest first
    for record in log:
        pickle, random, zeros, tail = _verify_commit(store, record)
        i = record.position
        assert pickle == b"pickle %d" % i
        assert len(random) == 1 << 20 and zeros == bytes(1 << 20)
        assert tail == b"%d" % i * 1000
