"""Commit names, tags and gc's retention policy, on stores built in memory."""

from __future__ import annotations

import json
import secrets

import pytest

from dart.errors import RunBusyError, StoreError
from dart.history import gc
from dart.history.address import delete_tag, resolve_commit, set_tag, tags, tags_by_commit
from dart.store import CommitRecord, open_store
from dart.store.check import check
from dart.store.reach import GC_LEASE, objects_needed, reachable_commits


@pytest.fixture
def store():
    return open_store(f"memory://history-{secrets.token_hex(4)}")


def commit_chain(store, run_id: str, n: int, parent=None, start=0.0, status="running", resumable=True):
    """n commits of run ``run_id`` (each with an object of its own), oldest first."""
    ids = []
    for i in range(n):
        index = {"objects": [], "pods": [], "buffers": [], "name": f"{run_id}-{i}-{secrets.token_hex(2)}"}
        oid, _ = store.put_object(json.dumps(index).encode())
        record = CommitRecord(run=run_id, parent=parent, time=start + i, resumable=resumable,
                              state={"format": 2, "index": oid, "objects": []})
        parent = store.put_commit(record)
        store.write_ref(f"runs/{run_id}", parent, expected=ids[-1] if ids else store.read_ref(f"runs/{run_id}"))
        ids.append(parent)
    store._put_run({"id": run_id, "created": start, "status": status})
    return ids


def test_every_form_of_commit_name(store):
    a = commit_chain(store, "r1", 5)
    b = commit_chain(store, "r2", 3, parent=a[1], start=10.0)  # a branch of r1 from its 2nd commit
    assert resolve_commit(store, "HEAD").id == b[-1]
    assert resolve_commit(store, "HEAD~").id == b[-2]
    assert resolve_commit(store, "HEAD~3").id == a[1]  # history crosses into the run branched from
    assert resolve_commit(store, "r1").id == a[-1]
    assert resolve_commit(store, "r1@1").id == a[0]
    assert resolve_commit(store, "r1@-2").id == a[-2]
    assert resolve_commit(store, "r2@1~1").id == a[1]
    assert resolve_commit(store, a[2][:6]).id == a[2]
    set_tag(store, "best", a[3])
    assert resolve_commit(store, "best").id == a[3]
    assert resolve_commit(store, "best~2").id == a[1]


@pytest.mark.parametrize("name, words", [
    ("HEAD~9", "goes back 9 commits"),
    ("r1@6", "has 5 commit(s)"),
    ("r1@0", "names none"),
    ("nope@1", "no run nope"),
    ("nope", "no commit nope"),
    ("", "no commit named"),
])
def test_names_that_name_nothing_say_why(store, name, words):
    commit_chain(store, "r1", 5)
    with pytest.raises(StoreError) as err:
        resolve_commit(store, name)
    assert words in str(err.value)


def test_tags_refuse_clashes_and_move_only_when_forced(store):
    a = commit_chain(store, "r1", 3)
    set_tag(store, "v1", a[0])
    with pytest.raises(StoreError, match="already names commit"):
        set_tag(store, "v1", a[1])
    assert set_tag(store, "v1", a[0]) == a[0]  # the same commit again: nothing to do
    assert set_tag(store, "v1", a[1], force=True) == a[0]
    for bad, words in [("HEAD", "HEAD names"), ("r1", "id of a run"), ("abc123", "looks like a commit id"),
                       ("-x", "bad tag name"), ("a/b", "bad tag name"), ("a~1", "bad tag name")]:
        with pytest.raises(StoreError, match=words):
            set_tag(store, bad, a[0])
    assert tags(store) == {"v1": a[1]} and tags_by_commit(store) == {a[1]: ["v1"]}
    assert delete_tag(store, "v1") == a[1]
    with pytest.raises(StoreError, match="no tag 'v1'"):
        delete_tag(store, "v1")


def test_reachability_follows_parents_across_runs(store):
    a = commit_chain(store, "r1", 4)
    b = commit_chain(store, "r2", 2, parent=a[1], start=10.0)
    found = reachable_commits(store, [b[-1]])
    assert set(found) == {a[0], a[1], *b}
    assert objects_needed(found.values()) == {found[c].state["index"] for c in found}


def test_gc_policy_keeps_newest_tags_resume_points_and_branch_points(store):
    finished = commit_chain(store, "done", 8, status="finished")
    unfinished = commit_chain(store, "alive", 6, start=20.0)
    branch = commit_chain(store, "branch", 2, parent=finished[2], start=40.0, status="finished")
    set_tag(store, "keep", finished[0])
    plan = gc.plan(store, gc.Policy(keep_last=2))
    expected = {*finished[-2:], *unfinished[-2:], *branch, finished[0], finished[2]}
    assert set(plan.keep) == expected
    assert set(plan.delete_commits) == set(store.commit_ids()) - expected
    gc.collect(store, gc.Policy(keep_last=2))
    assert set(store.commit_ids()) == expected
    assert set(store.object_ids()) == objects_needed(store.read_commit(c) for c in expected)
    report = check(store)
    assert report.clean, report.problems  # a history cut by gc is no damage
    assert any("deleted by dart gc" in n.what for n in report.notes)
    # the run not finished still resumes from its newest commit, and names still work
    assert store.log(run="alive")[0].id == unfinished[-1]
    assert resolve_commit(store, "keep").id == finished[0]


def test_gc_thinning_keeps_one_commit_per_interval(store):
    ids = commit_chain(store, "r", 10, status="finished")  # one commit per second
    plan = gc.plan(store, gc.Policy(keep_last=1, thin=3.0))
    assert set(plan.keep) == {ids[0], ids[3], ids[6], ids[9]}


def test_gc_deletes_nothing_while_a_run_holds_its_lease(store):
    commit_chain(store, "r", 4, status="finished")
    before = set(store.commit_ids())
    lease = store.lock_run("r")
    try:
        with pytest.raises(RunBusyError, match="while a run is writing"):
            gc.collect(store, gc.Policy(keep_last=1))
        assert set(store.commit_ids()) == before
    finally:
        lease.release()
    gate = store.lock_run(GC_LEASE)  # another gc, or a run starting
    try:
        with pytest.raises(RunBusyError, match="another dart gc"):
            gc.collect(store, gc.Policy(keep_last=1))
    finally:
        gate.release()
    gc.collect(store, gc.Policy(keep_last=1))
    assert len(store.commit_ids()) == 1


def test_gc_refuses_a_store_with_records_it_cannot_read(store):
    ids = commit_chain(store, "r", 3, status="finished")
    store.backend.put(f"commits/{ids[0]}.json", [b"{not json"])
    before = (set(store.commit_ids()), set(store.object_ids()))
    with pytest.raises(StoreError, match="dart fsck"):
        gc.collect(store, gc.Policy(keep_last=1))
    assert (set(store.commit_ids()), set(store.object_ids())) == before
