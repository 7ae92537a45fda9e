"""Reachability: which commits and objects hang off which refs.

Shared by everything that must know what a store still needs: ``dart gc``
(what it may delete), and a copy or push to another store (what it must send).
A commit needs its record and the objects ``layout.object_names`` lists; its
history is its parent chain, which may cross runs (a run resumed from a past
commit of another run starts with that commit as its parent).
"""

from __future__ import annotations

from collections.abc import Iterable

from dart.errors import StoreError

from .backend import Missing
from .layout import object_names
from .record import CommitRecord

#: the lease ``dart gc`` holds while it collects; a run takes it for the instant
#: it starts or resumes, so no run begins writing while objects are deleted
GC_LEASE = "gc-gate"

#: the ref folders that name commits: a run's head, and tags
REF_PREFIXES = ("runs/", "tags/")


def ref_heads(store) -> dict[str, str]:
    """Every ref that names a commit (``runs/<run>``, ``tags/<name>``) -> commit id."""
    heads: dict[str, str] = {}
    for prefix in REF_PREFIXES:
        heads.update(store.list_refs(prefix))
    return heads


def reachable_commits(store, heads: Iterable[str]) -> dict[str, CommitRecord]:
    """The records of ``heads`` and of their ancestors (parent links), by id. A
    chain ends where an ancestor is missing (collected) or cannot be read."""
    found: dict[str, CommitRecord] = {}
    for cid in heads:
        while cid and cid not in found:
            try:
                record = store.read_commit(cid)
            except (Missing, StoreError):
                break
            found[cid] = record
            cid = record.parent
    return found


def objects_needed(records: Iterable[CommitRecord]) -> set[str]:
    """Every object the given commits need to be read back whole."""
    needed: set[str] = set()
    for record in records:
        needed.update(object_names(record))
    return needed
