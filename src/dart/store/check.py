"""Checking a store, and repairing what can be repaired without losing an intact commit.

``check(store)`` reads every record, every ref, every run file and (unless
``objects=False``) every object, and returns a ``Report``: what is intact, what
is damaged and why, and what is only garbage (objects no intact commit names,
temporary files a crash left). ``repair(store, report)`` moves each run's ref to
its newest intact commit, rebuilds run files from the commit records, and removes
damaged records and unreferenced objects. An intact commit is never removed.

A commit is *intact* when its record parses and matches its id, and every
object it names exists (and, when objects are checked, passes its checksum and,
for its index, parses and names only objects the record lists).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dart.errors import StoreError

from .backend import Missing
from .layout import FORMAT_XOR, XOR_CHAIN, CommitState, object_names
from .record import CommitRecord


@dataclass
class Problem:
    kind: str  #: "object", "record", "untrusted", "history", "ref", "run" or "garbage"
    name: str  #: the object id, commit id, ref name, run id or key
    what: str  #: what is wrong, in words

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.what}"


@dataclass
class Report:
    intact: dict[str, CommitRecord] = field(default_factory=dict)  #: commit id -> record
    problems: list[Problem] = field(default_factory=list)  #: damage (not garbage)
    garbage: list[Problem] = field(default_factory=list)  #: unreferenced objects, leftovers
    notes: list[Problem] = field(default_factory=list)  #: what a crash leaves that is not damage
    heads: dict[str, str | None] = field(default_factory=dict)  #: run -> newest intact commit
    objects_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "clean": self.clean,
            "intact_commits": len(self.intact),
            "objects_checked": self.objects_checked,
            "heads": self.heads,
            "problems": [vars(p) for p in self.problems],
            "garbage": [vars(p) for p in self.garbage],
            "notes": [vars(p) for p in self.notes],
        }


def newest_intact(records: list[CommitRecord]) -> CommitRecord | None:
    """The newest of ``records`` whose chain order is known: by time, then by
    chain depth (a child after its parent when times are equal)."""
    if not records:
        return None
    ids = {r.id for r in records}
    parents = {r.parent for r in records if r.parent in ids}
    tips = [r for r in records if r.id not in parents] or records
    return max(tips, key=lambda r: r.time)


def check(store, objects: bool = True, progress=None) -> Report:
    """The state of every part of ``store`` (see the module's docstring).
    ``progress(done, total)`` is called while objects are verified."""
    report = Report()
    bad_objects: dict[str, str] = {}
    all_objects = store.object_ids()
    if objects:
        for done, oid in enumerate(all_objects, start=1):
            try:
                store.read_object(oid)
            except StoreError as exc:
                bad_objects[oid] = exc.message
                report.problems.append(Problem("object", oid, exc.message))
            if progress is not None:
                progress(done, len(all_objects))
        report.objects_checked = len(all_objects)
    present = set(all_objects)

    records: dict[str, CommitRecord] = {}
    for cid in store.commit_ids():
        try:
            record = store.read_commit(cid)
        except StoreError as exc:
            # Not signed with the key given: maybe the wrong key, so never removed by repair.
            kind = "untrusted" if exc.facts.get("unsigned") else "record"
            report.problems.append(Problem(kind, cid, exc.message))
            continue
        reason = _damage(store, record, present, bad_objects, objects)
        if reason is not None:
            report.problems.append(Problem("record", cid, reason))
            continue
        records[cid] = record
    report.intact = records

    damaged_records = {p.name for p in report.problems if p.kind == "record"}
    collected = collected_commits(store)
    for record in records.values():
        if record.parent is not None and record.parent not in records and record.parent in collected:
            report.notes.append(Problem(
                "history", record.id, f"its parent commit {record.parent} was deleted by dart gc (as its policy said)"))
        elif record.parent is not None and record.parent not in records:
            why = "is damaged" if record.parent in damaged_records else "is missing"
            report.problems.append(Problem(
                "history", record.id,
                f"its parent commit {record.parent} {why}: the history of run {record.run} is cut there "
                "(this commit is intact)",
            ))
    by_run: dict[str, list[CommitRecord]] = {}
    for record in records.values():
        by_run.setdefault(record.run, []).append(record)
    run_ids = set(by_run)
    with_file = set(store.run_ids())
    for run_id in sorted(with_file):
        run_ids.add(run_id)
        try:
            store.get_run(run_id)
        except StoreError as exc:
            report.problems.append(Problem("run", run_id, exc.message))
    for run_id in sorted(set(by_run) - with_file):
        report.problems.append(Problem("run", run_id, "its run file is missing (its commits are intact)"))
    for name in store.backend.list_refs("runs/"):
        run_ids.add(name[len("runs/") :])
    for run_id in sorted(run_ids):
        newest = newest_intact(by_run.get(run_id, []))
        report.heads[run_id] = newest.id if newest is not None else None
        try:
            raw = store.backend.read_ref(f"runs/{run_id}")
        except StoreError as exc:
            report.problems.append(Problem("ref", f"runs/{run_id}", exc.message))
            continue
        if raw is None:
            own = by_run.get(run_id, [])
            if len(own) == 1 and own[0].parent is None:
                # The commit protocol writes the record, then the ref: a crash between the
                # two at a run's first commit leaves exactly this. Not damage.
                report.notes.append(Problem(
                    "ref", f"runs/{run_id}",
                    f"not written yet: the run's first commit {newest.id} is complete, but a crash came before "
                    "its ref; log and resume use that commit, --repair writes the ref",
                ))
            elif newest is not None:
                report.problems.append(Problem("ref", f"runs/{run_id}", f"missing; its newest intact commit is {newest.id}"))
        elif raw not in records:
            where = "a commit that is damaged or missing" if _is_commit_id(raw) else "no valid commit id"
            report.problems.append(
                Problem("ref", f"runs/{run_id}", f"holds {raw[:40]!r}: {where}"
                        + (f"; its newest intact commit is {newest.id}" if newest else ""))
            )

    named = set()
    for record in records.values():
        named.update(object_names(record))
    for oid in sorted(present - named - set(bad_objects)):
        report.garbage.append(Problem("garbage", oid, "no intact commit names this object"))
    for key in store.backend.list("tmp/"):
        report.garbage.append(Problem("garbage", key, "a temporary file a crash left behind"))
    return report


#: where ``dart gc`` lists the commits it deleted on purpose (``gc/<time>.json``)
COLLECTED_PREFIX = "gc/"


def collected_commits(store) -> set[str]:
    """Every commit id a ``dart gc`` deleted on purpose: a history cut there is no damage."""
    out: set[str] = set()
    for key in store.backend.list(COLLECTED_PREFIX):
        try:
            value = json.loads(store.backend.get(key))
        except (Missing, ValueError, UnicodeDecodeError, StoreError):
            continue
        if isinstance(value, list):
            out.update(v for v in value if isinstance(v, str))
    return out


def _is_commit_id(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def _damage(store, record: CommitRecord, present: set, bad: dict, verify: bool) -> str | None:
    """Why ``record`` is not intact, or None."""
    names = object_names(record)
    missing = [oid for oid in names if oid not in present]
    if missing:
        return f"names {len(missing)} missing object(s), e.g. {missing[0]}"
    broken = [oid for oid in names if oid in bad]
    if broken:
        return f"names {len(broken)} damaged object(s), e.g. {broken[0]} ({bad[broken[0]]})"
    if verify and "index" in (record.state or {}):
        try:
            index = json.loads(store.read_object(record.state["index"]))
            listed = set(record.state.get("objects", []))
            stray = [oid for oid in index.get("objects", []) if oid not in listed]
        except (StoreError, ValueError, AttributeError) as exc:
            return f"its index cannot be read ({exc})"
        if stray:
            return f"its index names object {stray[0]}, which the record does not list"
        if record.state.get("format") == FORMAT_XOR:
            return _xor_damage(store, record)
    return None


def _xor_damage(store, record: CommitRecord) -> str | None:
    """Rebuild every buffer stored as XOR deltas (format 4): each delta must lie in
    its object, decode, and give bytes matching its hash; the chain must not pass
    the limit (a load would read an unbounded chain)."""
    try:
        state = CommitState(store, record)
        numbers = [n for n in range(len(state.index["buffers"])) if state.layered(n)]
        for n in numbers:
            if len(state.index["buffers"][n][2]) > XOR_CHAIN:
                return f"buffer {n} is stored as {len(state.index['buffers'][n][2])} XOR deltas, more than {XOR_CHAIN}"
        state._read_buffers(numbers)
    except (StoreError, ValueError, TypeError, IndexError) as exc:
        return f"its XOR-delta buffers cannot be rebuilt ({getattr(exc, 'message', exc)})"
    return None


def repair(store, report: Report) -> list[str]:
    """Mend what ``report`` found; returns what was done, in words. Records that
    fail only their signature are kept (the key may be the wrong one), and so
    are the objects they name."""
    if any(p.kind == "untrusted" for p in report.problems):
        raise StoreError(
            f"store {store.location} has records that are not signed with the key in use (DART_HMAC_KEY); "
            "repair would remove them. Check the key, or unset it if the store was written without one"
        )
    done = []
    for run_id, head in sorted(report.heads.items()):
        try:
            raw = store.backend.read_ref(f"runs/{run_id}")
        except StoreError:
            raw = "?"
        if head is not None and raw != head:
            current = raw
            if raw in report.intact and report.intact[raw].time >= report.intact[head].time:
                continue
            store.backend.cas_ref(f"runs/{run_id}", current, head)
            done.append(f"moved ref runs/{run_id} to its newest intact commit {head}")
        try:
            store.get_run(run_id)
        except StoreError:
            if head is not None:
                store.rebuild_run(run_id, report.intact[head])
                done.append(f"rebuilt the run file of {run_id} from its commits")
    for problem in report.problems:
        if problem.kind == "record":
            store.backend.delete(f"commits/{problem.name}.json")
            done.append(f"removed damaged commit record {problem.name} ({problem.what})")
        elif problem.kind == "object":
            store.delete_object(problem.name)
            done.append(f"removed damaged object {problem.name}")
    for item in report.garbage:
        if item.name.startswith("tmp/"):
            store.backend.delete(item.name)
        else:
            try:
                store.delete_object(item.name)
            except Missing:
                pass
        done.append(f"removed {item.name} ({item.what})")
    return done
