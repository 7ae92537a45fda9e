"""``dart gc``: which commits a retention policy keeps, and deleting the rest
with every object no kept commit needs.

Kept, always: every tag's commit; per run, its newest ``keep_last`` commits; for
every run not finished, its newest commit and its newest resumable one (what a
resume continues from); the commit every branch started from. Older commits
may be thinned instead of dropped: one per ``thin`` seconds of each run is kept.
Everything else, and records no ref reaches (what a crash left), is deleted,
then every object no kept commit names.

Safety: gc holds the gc gate (a run cannot start or resume while it is held)
and the lease of every run while it deletes, so no run writes meanwhile; a run
that is writing when gc starts makes gc wait for it (up to ``wait`` seconds) or
stop without deleting anything. Deleting an object a writer has just found
already stored (and so did not write again) would break its commit: that is
why gc never deletes alongside a writer.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from ..errors import RunBusyError, StoreError
from ..store.check import COLLECTED_PREFIX
from ..store.reach import GC_LEASE, objects_needed, ref_heads
from .address import tags



@dataclass
class Policy:
    keep_last: int = 5  #: newest commits kept per run
    thin: float | None = None  #: of older commits, keep one per this many seconds per run


@dataclass
class Plan:
    keep: dict[str, str] = field(default_factory=dict)  #: commit id -> why it is kept
    delete_commits: list[str] = field(default_factory=list)
    delete_objects: list[str] = field(default_factory=list)
    freed_bytes: int = 0

    def to_json(self, done: bool) -> dict:
        return {
            "deleted" if done else "would_delete": {"commits": self.delete_commits, "objects": len(self.delete_objects)},
            "freed_bytes": self.freed_bytes,
            "kept": self.keep,
        }


def _object_size(store, oid: str) -> int:
    try:
        return os.path.getsize(store.object_path(oid))
    except (AttributeError, OSError):
        try:
            return store.object_header(oid)[1]
        except Exception:
            return 0


def plan(store, policy: Policy) -> Plan:
    """What gc would keep and delete now (nothing is changed)."""
    result = Plan()
    keep = result.keep
    unreadable = []
    for cid in store.commit_ids():
        try:
            store.read_commit(cid)
        except Exception as exc:  # damaged, or signed with another key (DART_HMAC_KEY)
            unreadable.append(f"{cid} ({getattr(exc, 'message', exc)})")
    if unreadable:
        # Which objects such a record needs is unknown: collecting could take an intact
        # commit's bytes (a wrong key makes every record unreadable). fsck decides first.
        raise StoreError(
            f"dart gc collects only a store whose commit records all read back, and {len(unreadable)} of "
            f"store {store.location} do not, e.g. {unreadable[0]}; check the key (DART_HMAC_KEY) or run "
            "`dart fsck` (--repair removes damaged records), then dart gc again")

    def hold(cid: str | None, why: str) -> None:
        if cid and cid not in keep:
            keep[cid] = why

    for name, cid in sorted(tags(store).items()):
        hold(cid, f"tag {name}")
    runs = {run["id"]: run for run in store.list_runs()}
    by_id = {}
    run_ids = sorted(set(runs) | {name[len("runs/"):] for name in ref_heads(store) if name.startswith("runs/")})
    for run_id in run_ids:
        commits = store.log(run=run_id)  # newest first
        by_id.update((c.id, c) for c in commits)
        run = runs.get(run_id, {})
        if run.get("status") != "finished" and commits:
            hold(commits[0].id, f"newest commit of unfinished run {run_id}")
            resumable = next((c for c in commits if c.resumable), None)
            if resumable is not None:
                hold(resumable.id, f"resume point of unfinished run {run_id}")
        hold(run.get("branched_from"), f"run {run_id} branched from it")
        if commits and commits[-1].parent:
            hold(commits[-1].parent, f"run {run_id} branched from it")
        for c in commits[: policy.keep_last]:
            hold(c.id, f"one of the {policy.keep_last} newest of run {run_id}")
        if policy.thin:
            last_kept = None
            for c in reversed(commits):  # oldest first: one per `thin` seconds
                if last_kept is None or c.time - last_kept >= policy.thin:
                    hold(c.id, f"thinned: one per {policy.thin:g} s of run {run_id}")
                    last_kept = c.time
                elif c.id in keep:
                    last_kept = c.time
    kept_records = []
    for cid in keep:
        record = by_id.get(cid)
        if record is None:
            try:
                record = store.read_commit(cid)
            except Exception:
                continue
        kept_records.append(record)
    result.delete_commits = sorted(c for c in store.commit_ids() if c not in keep)
    needed = objects_needed(kept_records)
    result.delete_objects = sorted(o for o in store.object_ids() if o not in needed)
    result.freed_bytes = sum(_object_size(store, o) for o in result.delete_objects)
    return result


def _take_all_leases(store, wait: float) -> list:
    """The gc gate, then the lease of every run; RunBusyError naming the runs
    that are writing if they do not end within ``wait`` seconds. The gate is
    held while gc waits, so no new run starts meanwhile (it waits for gc)."""
    try:
        gate = store.lock_run(GC_LEASE)
    except RunBusyError as exc:
        raise RunBusyError(f"another dart gc ({exc.holder}) is collecting store {store.location}; "
                           "wait for it to end", holder=exc.holder) from None
    deadline = time.monotonic() + wait
    while True:
        held, busy = [gate], []
        names = set(store.run_ids()) | {n[len("runs/"):] for n in store.backend.list_refs("runs/")}
        for run_id in sorted(names):
            try:
                held.append(store.lock_run(run_id))
            except RunBusyError as exc:
                busy.append(f"run {run_id} ({exc.holder})")
        if not busy:
            return held
        for lease in reversed(held[1:]):
            lease.release()
        if time.monotonic() >= deadline:
            gate.release()
            raise RunBusyError(
                f"dart gc deletes nothing while a run is writing, and {', '.join(busy)} is: wait for it to end "
                f"(or pass --wait SECONDS), then run dart gc again", holder=busy[0])
        time.sleep(0.2)


def collect(store, policy: Policy, wait: float = 0.0, progress=None) -> Plan:
    """Delete what :func:`plan` says, holding every lease (see the module's
    docstring); returns the plan that was carried out."""
    if not store.writable:
        raise StoreError(f"store {store.location} is read-only here; dart gc cannot delete from it")
    leases = _take_all_leases(store, wait)
    try:
        result = plan(store, policy)
        if result.delete_commits:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
            store.backend.put(f"{COLLECTED_PREFIX}{stamp}.json", [json.dumps(result.delete_commits).encode()])
        # Records first: a commit never names an object that is gone while it is listed.
        total = len(result.delete_commits) + len(result.delete_objects)
        done = 0
        for cid in result.delete_commits:
            store.backend.delete(f"commits/{cid}.json")
            done += 1
            if progress:
                progress(done, total)
        for oid in result.delete_objects:
            store.delete_object(oid)
            done += 1
            if progress:
                progress(done, total)
        return result
    finally:
        for lease in reversed(leases):
            lease.release()
