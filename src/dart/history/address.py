"""Naming commits: every form a command or ``dart.load`` accepts, and tags.

Forms (see the README's "Naming commits"):

    3f2a9c1e            a unique prefix of a commit id (4+ hex digits), or the whole id
    NAME                a tag (``dart tag NAME COMMIT``)
    RUN                 the newest commit of run RUN (its id, as ``dart runs`` shows it)
    RUN@N               the N-th commit of run RUN (1: its first; -1: its newest, -2 the one before)
    HEAD                the newest commit in the store
    X~N                 N parents back from any of the above (``HEAD~2``, ``best~1``)

Tags are refs (``tags/NAME``) moved by compare-and-swap, like run heads.
"""

from __future__ import annotations

import re

from ..errors import StoreError
from ..store import CommitRecord, Store

TAG_PREFIX = "tags/"
_TAG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_ANCESTOR = re.compile(r"^(.*?)~(\d*)$")
_NTH = re.compile(r"^(.+)@(-?\d+)$")


def resolve_commit(store: Store, name: str) -> CommitRecord:
    """The commit ``name`` names (any form above); StoreError saying why not."""
    text = str(name).strip()
    if not text:
        raise StoreError("no commit named: give a commit id, a tag, a run id, RUN@N or HEAD~N", next_step="log")
    match = _ANCESTOR.match(text)
    if match:
        base, steps = match.group(1), int(match.group(2) or 1)
        record = resolve_commit(store, base)
        for step in range(steps):
            if record.parent is None:
                raise StoreError(
                    f"{text} goes back {steps} commits, but {base} has only {step} before it in store "
                    f"{store.location}", next_step="log")
            try:
                record = store.get_commit(record.parent)
            except StoreError:
                raise StoreError(
                    f"{text}: commit {record.parent}, {step + 1} back from {base}, is no longer in store "
                    f"{store.location} (collected by `dart gc` or lost)", next_step="log") from None
        return record
    if text == "HEAD":
        commits = store.log()
        if not commits:
            raise StoreError(f"HEAD names the newest commit, and store {store.location} has no commits yet")
        return commits[0]
    match = _NTH.match(text)
    if match:
        return nth_commit(store, match.group(1), int(match.group(2)))
    if _TAG_NAME.match(text):
        try:
            tagged = store.read_ref(TAG_PREFIX + text)
        except StoreError:
            tagged = None
        if tagged is not None:
            return store.get_commit(tagged)
    return store.get_commit(text)


def run_commits(store: Store, run_id: str) -> list[CommitRecord]:
    """The run's own commits, oldest first (StoreError if there is no such run)."""
    commits = store.log(run=run_id)
    if not commits and run_id not in store.run_ids():
        raise StoreError(f"no run {run_id} in store {store.location}; `dart runs` lists them")
    return list(reversed(commits))


def nth_commit(store: Store, run_id: str, n: int) -> CommitRecord:
    commits = run_commits(store, run_id)
    if n == 0 or abs(n) > len(commits):
        raise StoreError(
            f"run {run_id} has {len(commits)} commit(s), so {run_id}@{n} names none; "
            f"use {run_id}@1 to {run_id}@{len(commits)}, or {run_id}@-1 for its newest", next_step="log")
    return commits[n - 1] if n > 0 else commits[n]


# ---------------------------------------------------------------------------- tags


def tags(store: Store) -> dict[str, str]:
    """Tag name -> commit id."""
    return {name[len(TAG_PREFIX):]: cid for name, cid in store.list_refs(TAG_PREFIX).items()}


def tags_by_commit(store: Store) -> dict[str, list[str]]:
    """Commit id -> the names of the tags on it, sorted."""
    out: dict[str, list[str]] = {}
    for name, cid in sorted(tags(store).items()):
        out.setdefault(cid, []).append(name)
    return out


def check_tag_name(store: Store, name: str) -> str:
    """``name`` if it can be a tag: a word that no other form of commit name reads
    differently (not HEAD, not a run id, not something that looks like an id)."""
    if not _TAG_NAME.match(name or ""):
        raise StoreError(
            f"bad tag name {name!r}: use letters, digits, '_', '.' and '-' (not first), at most 100, "
            "for example best or epoch-3")
    if name == "HEAD":
        raise StoreError("HEAD names the newest commit and cannot be a tag; choose another name")
    if len(name) >= 4 and _HEX.match(name):
        raise StoreError(f"tag name {name!r} looks like a commit id prefix; choose a name with a letter past f")
    if name in store.run_ids() or store.read_ref(f"runs/{name}") is not None:
        raise StoreError(f"tag name {name!r} is the id of a run in store {store.location}; choose another name")
    return name


def set_tag(store: Store, name: str, cid: str, force: bool = False) -> str | None:
    """Tag commit ``cid`` as ``name``; returns the commit the tag named before
    (with ``force``), else refuses a tag that exists."""
    check_tag_name(store, name)
    ref = TAG_PREFIX + name
    current = store.read_ref(ref)
    if current is not None and not force:
        if current == cid:
            return current
        raise StoreError(
            f"tag {name} already names commit {current} in store {store.location}; delete it first "
            f"(`dart tag -d {name}`) or move it with `dart tag -f {name} COMMIT`")
    store.write_ref(ref, cid, expected=current)
    return current


def delete_tag(store: Store, name: str) -> str:
    """Remove tag ``name``; returns the commit it named."""
    ref = TAG_PREFIX + name
    current = store.read_ref(ref) if _TAG_NAME.match(name or "") else None
    if current is None:
        known = ", ".join(sorted(tags(store))) or "none"
        raise StoreError(f"no tag {name!r} in store {store.location} (tags: {known})")
    store.delete_ref(ref, current)
    return current
