"""Small commits go to the run's journal (one fsync) and are put in place without
fsync; the run's next lease holder settles the journal. A real writer process is
killed right after the journal entry is durable, and a lost page cache (a machine crash) is imitated by removing what was put in
place: in both cases the commit comes back, whole and verified."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from dart.store import CRASH_EXIT_CODE, Store
from dart.store.layout import CommitState

CHILD = textwrap.dedent(
    """
    import os, sys
    from dart.store import Store
    from dart.capture.pods import Pod
    from dart.flush import CommitWriter

    root, crash = sys.argv[1], sys.argv[2]
    store = Store(root)
    run = store.create_run({"key": "journal-test"})
    print(run, flush=True)
    writer = CommitWriter(store, run, parent=None, staging=8 << 20)
    print(writer.commit([Pod("g:x", b"first stream", [])], {"message": "first"}).wait(30), flush=True)
    if crash == "journal":
        os.environ["DART_TEST_CRASH_AT"] = "journal"
    second = writer.commit([Pod("g:x", b"second stream", [])], {"message": "second"})
    print(second.wait(30), flush=True)
    os._exit(0)  # no close: the journal is not settled
    """
)


def _child(root, crash: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DART_TEST")}
    result = subprocess.run([sys.executable, "-c", CHILD, str(root), crash], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == (CRASH_EXIT_CODE if crash == "journal" else 0), result.stderr
    return result.stdout.split()


def _streams(store, record) -> list[bytes]:
    return [bytes(stream) for _, stream, _ in CommitState(store, record).read()]


def test_a_commit_killed_once_journaled_is_visible_and_settled_by_the_next_lease_holder(tmp_path):
    root = tmp_path / ".dart"
    run, first = _child(root, "journal")
    journal = root / "journal" / run
    assert journal.stat().st_size > 0
    store = Store(root)
    newest = store.read_ref(f"runs/{run}")
    assert newest != first  # in place before it was journaled: readers see what a resume sees
    store.lock_run(run).release()
    assert store.read_ref(f"runs/{run}") == newest
    assert not journal.exists()
    head = store.head(run)
    assert head.message == "second" and head.parent == first
    assert _streams(store, head) == [b"second stream"]


def test_files_lost_with_the_page_cache_come_back_from_the_journal(tmp_path):
    root = tmp_path / ".dart"
    run, first, second = _child(root, "none")
    store = Store(root)
    record = store.get_commit(second)
    lost = [store.object_path(oid) for oid in [record.state["index"], *record.state["objects"]]]
    lost.append(root / "commits" / f"{second}.json")
    for path in lost:
        path.unlink()
    (root / "refs" / "runs" / run).write_text(first + "\n")  # the ref's move was lost too
    store.lock_run(run).release()
    assert store.read_ref(f"runs/{run}") == second
    assert _streams(store, store.get_commit(second)) == [b"second stream"]
    assert all(p.exists() for p in lost)


def test_a_ref_naming_a_commit_that_was_never_journaled_goes_back(tmp_path):
    root = tmp_path / ".dart"
    run, first, second = _child(root, "none")
    (root / "refs" / "runs" / run).write_text("f" * 16 + "\n")  # placed, then lost with its record
    store = Store(root)
    store.lock_run(run).release()
    assert store.read_ref(f"runs/{run}") == second


def test_a_torn_last_entry_is_ignored(tmp_path):
    root = tmp_path / ".dart"
    run, first, second = _child(root, "none")
    journal = root / "journal" / run
    data = journal.read_bytes()
    journal.write_bytes(data + data[: len(data) // 3])  # a third entry cut short by a crash
    store = Store(root)
    store.lock_run(run).release()
    assert store.read_ref(f"runs/{run}") == second
    assert not journal.exists()
