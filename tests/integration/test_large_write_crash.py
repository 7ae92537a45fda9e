"""Kill a real writer while a large pack is being written by its writer threads
(pieces with direct I/O and through the page cache, store/local.py begin_put):
the previous commit must stay the run's head and read back byte for byte, and a
resumed writer must go on from it.

Two ways to die: the DART_TEST_CRASH_AT hook after the N-th piece
(``object-piece:N``, os._exit in a writer thread, with other pieces in flight)
or after the pack's fsync before its rename (``object-tmp``), and a real SIGKILL
at several instants of a loop of large commits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dart.store import CRASH_EXIT_CODE, Store
from dart.store.layout import CommitState

NBYTES = 40 << 20  # above PARALLEL_MIN: the pack goes through the writer threads

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from dart.store import Store
    from dart.capture.pods import Pod
    from dart.flush import CommitWriter

    root, nbytes, crash = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = Store(root)
    run = store.create_run({"key": "large-crash"})
    print(run, flush=True)
    writer = CommitWriter(store, run, parent=None, staging=2 * nbytes)
    data = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    i = 0
    while True:
        data[i::4096] += 1  # changed everywhere (every 4 KiB chunk)
        handle = writer.commit([Pod("g:x", b"pickle %d" % i, [data])], {"message": "big", "position": i})
        print("durable", handle.wait(60), i, flush=True)
        if i == 0 and crash != "-":
            import os
            os.environ["DART_TEST_CRASH_AT"] = crash
        i += 1
    """
)


def expected(i: int) -> bytes:
    """The buffer of commit ``i`` as the child made it."""
    data = np.random.default_rng(0).integers(0, 256, NBYTES, dtype=np.uint8)
    for k in range(i + 1):
        data[k::4096] += 1
    return data.tobytes()


def _env() -> dict:
    env = dict(os.environ)
    for name in ("DART_TEST_CRASH_AT", "DART_TEST_FLUSH_DELAY", "DART_TEST_NO_JOURNAL"):
        env.pop(name, None)
    return env


def _check_survivors(root, run: str, reported: list[tuple[str, int]]) -> list:
    store = Store(root)
    log = store.log(run)
    assert log, "no commit survived"
    ids = [r.id for r in log]
    assert {cid for cid, _ in reported} <= set(ids)  # every durable commit survives
    assert store.read_ref(f"runs/{run}") == ids[0]
    assert [r.position for r in log] == list(range(len(log)))[::-1]  # an unbroken chain
    for record in log[:2]:  # the newest (and the one before): byte for byte
        [(_, stream, [buffer])] = CommitState(store, record).read()
        assert bytes(stream) == b"pickle %d" % record.position
        assert bytes(buffer) == expected(record.position)
    return log


@pytest.mark.parametrize("crash", ["object-piece:1", "object-piece:3", "object-tmp"])
def test_crash_while_a_large_pack_is_written_keeps_the_previous_commit(tmp_path, crash):
    root = tmp_path / ".dart"
    child = subprocess.run([sys.executable, "-c", CHILD, str(root), str(NBYTES), crash],
                           capture_output=True, text=True, timeout=120, env=_env())
    assert child.returncode == CRASH_EXIT_CODE, child.stderr
    lines = child.stdout.split("\n")
    run = lines[0].strip()
    reported = [(line.split()[1], int(line.split()[2])) for line in lines if line.startswith("durable")]
    assert [i for _, i in reported] == [0]  # the crash hit the second commit's pack
    assert (root / "tmp").is_dir() and list((root / "tmp").iterdir())  # its unfinished file is left
    log = _check_survivors(root, run, reported)
    assert [r.id for r in log] == [reported[0][0]]
    # The store goes on: a writer continuing the run commits on top of the survivor.
    from dart.capture.pods import Pod
    from dart.flush import CommitWriter

    store = Store(root)
    with CommitWriter(store, run, parent=log[0].id, staging=2 * NBYTES) as writer:
        data = np.frombuffer(expected(1), dtype=np.uint8).copy()
        cid = writer.commit([Pod("g:x", b"pickle 1", [data])], {"message": "after", "position": 1}).wait(60)
    assert [r.id for r in store.log(run)] == [cid, log[0].id]
    [(_, _, [buffer])] = CommitState(store, store.get_commit(cid)).read()
    assert bytes(buffer) == expected(1)


@pytest.mark.parametrize("kill_after", [0.05, 0.3, 0.7])
def test_sigkill_during_large_commits(tmp_path, kill_after):
    root = tmp_path / ".dart"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(NBYTES), "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        run = child.stdout.readline().strip()
        assert run, child.stderr.read()
        assert child.stdout.readline().startswith("durable")  # one commit durable
        time.sleep(kill_after)
    finally:
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    reported = [(line.split()[1], int(line.split()[2])) for line in out.splitlines() if line.startswith("durable")]
    _check_survivors(root, run, reported)
