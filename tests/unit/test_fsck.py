"""dart.store.check: what fsck finds and what repair may do."""

from __future__ import annotations

import pytest

from dart.capture import snapshot
from dart.errors import StoreError
from dart.flush import CommitWriter
from dart.store import Store
from dart.store.check import check, repair


def _run(store, n=3, key="k"):
    run = store.create_run({"key": key, "script": "s.py", "argv": []})
    ids = []
    with CommitWriter(store, run, None, staging=8 << 20) as writer:
        for i in range(n):
            ids.append(writer.commit(snapshot({"g:x": list(range(i * 1000, i * 1000 + 20_000))}),
                                     {"message": str(i), "position": {}, "resumable": True,
                                      "command": {"key": key, "script": "s.py", "argv": []}}).wait(30))
    return run, ids


def test_a_clean_store(tmp_path):
    store = Store(tmp_path / "s")
    run, ids = _run(store)
    report = check(store)
    assert report.clean and not report.garbage
    assert set(report.intact) == set(ids) and report.heads == {run: ids[-1]}
    assert report.objects_checked == len(store.object_ids()) > 0


def test_damage_is_found_and_repair_keeps_every_intact_commit(tmp_path):
    store = Store(tmp_path / "s")
    run, ids = _run(store, n=4)
    newest = store.get_commit(ids[-1])
    # the newest record garbage, the ref garbage, the run file gone, a leftover temp file, a stray object
    (store.root / "commits" / f"{ids[-1]}.json").write_bytes(b"{garbage")
    (store.root / "refs" / "runs" / run).write_text("zzzz")
    (store.root / "runs" / f"{run}.json").unlink()
    (store.root / "tmp" / "x.123.tmp").write_bytes(b"half")
    stray, _ = store.put_object(b"nobody names me" * 100)
    report = check(store)
    kinds = sorted({p.kind for p in report.problems})
    assert kinds == ["record", "ref", "run"], report.problems
    assert {g.name for g in report.garbage} >= {stray, "tmp/x.123.tmp"}
    assert report.heads[run] == ids[-2]
    done = repair(store, report)
    assert any("moved ref" in d for d in done) and any("rebuilt the run file" in d for d in done)
    after = check(store)
    assert after.clean and not after.garbage, after.problems
    assert set(after.intact) == set(ids[:-1])  # every intact commit kept
    assert store.read_ref(f"runs/{run}") == ids[-2]
    assert store.get_run(run)["key"] == "k" and store.get_run(run)["rebuilt"] is True
    assert not store.has_object(stray)
    for oid in newest.state["objects"]:
        if any(oid in r.state["objects"] for r in after.intact.values()):
            assert store.has_object(oid)


def test_a_damaged_object_makes_its_commits_not_intact(tmp_path):
    store = Store(tmp_path / "s")
    run, ids = _run(store, n=2)
    record = store.get_commit(ids[-1])
    index = record.state["index"]
    path = store.object_path(index)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    report = check(store)
    assert {p.kind for p in report.problems} == {"object", "record", "ref"}  # the ref names it
    assert ids[-1] not in report.intact and ids[0] in report.intact
    assert check(store, objects=False).intact.keys() == {ids[0], ids[1]}  # --quick reads no object


def test_a_cut_history_is_reported_not_repaired_away(tmp_path):
    store = Store(tmp_path / "s")
    run, ids = _run(store, n=3)
    (store.root / "commits" / f"{ids[1]}.json").unlink()
    report = check(store)
    assert [p.kind for p in report.problems] == ["history"]
    repair(store, report)
    assert set(check(store).intact) == {ids[0], ids[2]}


def test_repair_refuses_with_records_not_signed_by_the_key(tmp_path):
    store = Store(tmp_path / "s")
    _run(store, n=1)
    keyed = Store(tmp_path / "s", key=b"some key")
    report = check(keyed)
    assert {p.kind for p in report.problems} == {"untrusted", "ref"}
    with pytest.raises(StoreError, match="not signed with the key"):
        repair(keyed, report)
    assert len(store.commit_ids()) == 1


def test_a_crash_before_the_first_ref_is_not_damage(tmp_path):
    """Record written, ref not yet (the protocol's last step): a note, and
    repair writes the ref."""
    store = Store(tmp_path / "s")
    run, ids = _run(store, n=1)
    (store.root / "refs" / "runs" / run).unlink()
    report = check(store)
    assert report.clean and [n.kind for n in report.notes] == ["ref"], report.problems
    assert [r.id for r in store.log(run)] == ids  # log uses the complete commit
    repair(store, report)
    assert store.read_ref(f"runs/{run}") == ids[0] and not check(store).notes
