"""Moving commits between stores: ``copy_runs`` (``dart copy``/``push``/``pull``)
and archives (``dart export`` / ``dart import``).

Both keep the store's write order: objects first, then commit records, then run
files, and refs last, each moved by compare-and-swap. A copy or an import cut
short leaves the destination consistent (at most unreferenced objects). What
is sent is checked against its checksum on the way (an object against its id, a
record against its id, a run file against its header), so damage never spreads.

An archive is one uncompressed tar file (the objects in it are compressed
already) of the store's own files, first a manifest::

    dart-archive.json        {"format": 1, "commit": id, "run": run id, "members": {name: size}}
    objects/<32 hex>         objects as stored (header + payload)
    commits/<16 hex>.json    commit records
    runs/<run id>.json       the run file of the exported commit's run

Importing reads the archive twice: first everything is checked (names, sizes,
checksums, that every object a record needs is there, that the run's ref can
move) and nothing is written unless all of it is right; then it is written in
the store's order. Names other than these (``../x``, absolute paths, links,
devices) are refused.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dart.errors import CorruptObjectError, StoreError

from . import codec
from .backend import Missing
from .layout import object_names
from .record import CommitRecord, decode_record
from .store import Store

ARCHIVE_FORMAT = 1
MANIFEST = "dart-archive.json"
#: Objects sent at once by a copy (each a request on object storage).
PARALLEL = 8
_MEMBER = re.compile(r"^(objects/[0-9a-f]{32}|commits/[0-9a-f]{16}\.json|runs/[0-9A-Za-z_-]{1,64}\.json)$")


@dataclass
class Transfer:
    """What a copy or an import did."""

    commits: list[str] = field(default_factory=list)  #: commit ids new in the destination
    objects_sent: int = 0
    objects_present: int = 0  #: needed, and already in the destination: not sent
    bytes_sent: int = 0
    refs: dict[str, str] = field(default_factory=dict)  #: run -> the commit its ref now names

    def as_json(self) -> dict:
        return {"commits": self.commits, "objects_sent": self.objects_sent, "objects_present": self.objects_present,
                "bytes_sent": self.bytes_sent, "refs": self.refs}


# ---------------------------------------------------------------------- reading a history


def history(store: Store, cid: str, with_history: bool = True) -> list[CommitRecord]:
    """The record ``cid`` and (with ``with_history``) its ancestors, newest first;
    the chain ends where an ancestor is not in the store (collected, or never
    imported)."""
    chain: list[CommitRecord] = []
    seen: set[str] = set()
    current: str | None = cid
    while current and current not in seen:
        try:
            record = store.read_commit(current)
        except Missing:
            if not chain:
                raise StoreError(f"no commit {current} in store {store.location}; `dart log` lists them") from None
            break
        chain.append(record)
        seen.add(current)
        if not with_history:
            break
        current = record.parent
    return chain


def _object_bytes(store: Store, oid: str) -> bytes:
    """The stored bytes of an object, checked against its id."""
    key = store._object_key(oid)
    try:
        data = store.backend.get(key)
    except Missing:
        raise StoreError(f"object {oid} is missing from store {store.location}", next_step="damaged") from None
    codec.decode(io.BytesIO(data), oid, f"{store.location}/{key}")
    return data


def _can_move(dst: Store, run: str, new_head: str, chain_ids: set[str]) -> str | None:
    """The value the run's ref in ``dst`` has now, if moving it to ``new_head`` is a
    fast-forward (or it does not exist); StoreError if the histories diverged."""
    current = dst.read_ref(f"runs/{run}")
    if current is None or current == new_head or current in chain_ids:
        return current
    raise StoreError(
        f"run {run} in store {dst.location} is at commit {current[:12]}, which is not an ancestor of "
        f"{new_head[:12]}: the two stores' histories of the run diverged; nothing was copied for it",
    )


def _move_ref(dst: Store, run: str, new_head: str, expected: str | None) -> None:
    if expected != new_head:
        dst.write_ref(f"runs/{run}", new_head, expected=expected)


# ---------------------------------------------------------------------- copy between stores


def copy_runs(src: Store, dst: Store, runs: list[str] | None = None, progress=None) -> Transfer:
    """Copy runs (default: every run with a ref) with their history from ``src``
    to ``dst``, sending only the objects and records ``dst`` lacks."""
    if not dst.writable:
        raise StoreError(f"store {dst.location} is read-only here; nothing can be copied into it")
    names = runs if runs else [name[len("runs/"):] for name in src.backend.list_refs("runs/")]
    out = Transfer()
    for run in names:
        head = src.read_ref(f"runs/{run}")
        if head is None:
            raise StoreError(f"no run {run} with commits in store {src.location}; `dart log` lists the runs")
        chain = history(src, head)
        expected = _can_move(dst, run, head, {r.id for r in chain})
        new_records = [r for r in chain if not dst.backend.exists(dst._commit_key(r.id))]
        needed = sorted({oid for r in chain for oid in object_names(r)})
        missing = [oid for oid in needed if not dst.has_object(oid)]
        out.objects_present += len(needed) - len(missing)

        def send(oid: str) -> int:
            data = _object_bytes(src, oid)
            dst.backend.put(dst._object_key(oid), [data])
            return len(data)

        with ThreadPoolExecutor(PARALLEL) as pool:
            for n in pool.map(send, missing):
                out.objects_sent += 1
                out.bytes_sent += n
                if progress is not None:
                    progress(out)
        for record in reversed(new_records):  # oldest first: a parent before its children
            data = src.backend.get(src._commit_key(record.id))
            decode_record(data, f"{src.location}/commits/{record.id}.json", expected_id=record.id, key=src.key)
            dst.backend.put(dst._commit_key(record.id), [data], step="record")
            out.commits.append(record.id)
        try:
            run_file = src.backend.get(src._run_key(run))
            Store.decode_run(run_file, src._run_key(run), f"{src.location}/runs/{run}.json")
            dst.backend.put(dst._run_key(run), [run_file])
        except Missing:
            pass  # a run without a run file: dart rebuilds it from the records when it is needed
        _move_ref(dst, run, head, expected)
        out.refs[run] = head
    return out


# ---------------------------------------------------------------------- archives


def export_archive(store: Store, commit: str, path: str | os.PathLike, with_history: bool = False) -> Transfer:
    """Write commit ``commit`` (an id, a prefix or a run id) and what it needs,
    with its ancestors if ``with_history``, to the archive ``path`` (written
    whole to a temporary file first, then renamed into place)."""
    cid = store.resolve(commit)
    chain = history(store, cid, with_history)
    head = chain[0]
    path = Path(path)
    members: list[tuple[str, bytes]] = []
    out = Transfer()
    for oid in sorted({oid for r in chain for oid in object_names(r)}):
        data = _object_bytes(store, oid)
        members.append((f"objects/{oid}", data))
        out.objects_sent += 1
        out.bytes_sent += len(data)
    for record in chain:
        data = store.backend.get(store._commit_key(record.id))
        members.append((f"commits/{record.id}.json", data))
        out.commits.append(record.id)
    if head.run:
        try:
            members.append((f"runs/{head.run}.json", store.backend.get(store._run_key(head.run))))
        except Missing:
            pass
    manifest = {"format": ARCHIVE_FORMAT, "commit": head.id, "run": head.run,
                "members": {name: len(data) for name, data in members}}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode())] + members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write archive {path}: {exc.strerror or exc}; choose another file or free space") from exc
    out.refs[head.run] = head.id
    return out


def _refuse(path, what: str) -> StoreError:
    return StoreError(f"archive {path} is refused: {what}; nothing was imported")


def _members(path, tar: tarfile.TarFile):
    """(name, bytes) of each member, refusing anything but plain files with a store name."""
    seen = set()
    for info in tar:
        name = info.name
        if not info.isreg():
            raise _refuse(path, f"member {name!r} is not a plain file")
        if name != MANIFEST and not _MEMBER.match(name):
            raise _refuse(path, f"member {name!r} has a name no dart archive holds (a path outside the store?)")
        if name in seen:
            raise _refuse(path, f"member {name!r} appears twice")
        seen.add(name)
        f = tar.extractfile(info)
        yield name, f.read() if f is not None else b""


def _check_member(store: Store, path, name: str, data: bytes) -> CommitRecord | None:
    """Check one member against its checksum; a record is returned, parsed."""
    where = f"{path}:{name}"
    try:
        if name.startswith("objects/"):
            codec.decode(io.BytesIO(data), name[len("objects/"):], where)
        elif name.startswith("commits/"):
            return decode_record(data, where, expected_id=name[len("commits/"):-len(".json")], key=store.key)
        elif name.startswith("runs/"):
            Store.decode_run(data, name, where)
    except CorruptObjectError as exc:
        raise _refuse(path, exc.message) from None
    return None


def _open_archive(path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except FileNotFoundError:
        raise StoreError(f"no archive {path}; give the file `dart export` wrote") from None
    except (tarfile.TarError, OSError) as exc:
        raise StoreError(f"{path} is not a dart archive ({exc}); give the file `dart export` wrote") from None


def import_archive(path: str | os.PathLike, store: Store) -> Transfer:
    """Add the commits of archive ``path`` to ``store``; everything is checked
    before anything is written."""
    if not store.writable:
        raise StoreError(f"store {store.location} is read-only here; nothing can be imported into it")
    # pass 1: check everything, write nothing
    manifest = None
    records: dict[str, CommitRecord] = {}
    present: set[str] = set()
    try:
        with _open_archive(path) as tar:
            for name, data in _members(path, tar):
                if manifest is None:
                    if name != MANIFEST:
                        raise _refuse(path, f"it does not start with {MANIFEST}")
                    try:
                        manifest = json.loads(data)
                        if manifest.get("format") != ARCHIVE_FORMAT or not isinstance(manifest.get("members"), dict):
                            raise ValueError(f"format {manifest.get('format')!r}")
                    except (ValueError, AttributeError) as exc:
                        raise _refuse(path, f"its manifest cannot be read ({exc})") from None
                    continue
                if manifest["members"].get(name) != len(data):
                    raise _refuse(path, f"member {name} is not the size its manifest says (truncated or altered)")
                record = _check_member(store, path, name, data)
                if record is not None:
                    records[record.id] = record
                present.add(name)
    except tarfile.TarError as exc:
        raise _refuse(path, f"it is damaged ({exc})") from None
    if manifest is None:
        raise _refuse(path, "it is empty")
    if set(manifest["members"]) != present:
        lost = sorted(set(manifest["members"]) - present)[:3]
        raise _refuse(path, f"members its manifest lists are missing ({', '.join(lost)})")
    head, run = manifest.get("commit"), manifest.get("run")
    if not isinstance(head, str) or head not in records:
        raise _refuse(path, f"the commit it names ({head!r}) is not in it")
    if run is not None and (not isinstance(run, str) or not _MEMBER.match(f"runs/{run}.json")
                            or records[head].run != run):
        raise _refuse(path, f"its manifest names run {run!r}, which is not the run of commit {head}")
    for record in records.values():
        for oid in object_names(record):
            if f"objects/{oid}" not in present and not store.has_object(oid):
                raise _refuse(path, f"commit {record.id} needs object {oid}, which neither it nor store "
                                    f"{store.location} holds")
    expected = _can_move(store, run, head, set(records)) if run else None
    # pass 2: write in the store's order (every member is checked again as it is read)
    out = Transfer()
    later: list[tuple[str, bytes]] = []
    with _open_archive(path) as tar:
        for name, data in _members(path, tar):
            if name == MANIFEST:
                continue
            _check_member(store, path, name, data)
            if manifest["members"].get(name) != len(data):
                raise _refuse(path, f"member {name} changed while it was imported")
            if name.startswith("objects/"):
                oid = name[len("objects/"):]
                if store.has_object(oid):
                    out.objects_present += 1
                    continue
                store.backend.put(store._object_key(oid), [data], step="object")
                out.objects_sent += 1
                out.bytes_sent += len(data)
            else:
                later.append((name, data))
    for name, data in sorted(later, key=lambda item: not item[0].startswith("commits/")):
        if name.startswith("commits/"):
            cid = name[len("commits/"):-len(".json")]
            if not store.backend.exists(name):
                store.backend.put(name, [data], step="record")
                out.commits.append(cid)
        elif not store.backend.exists(name):  # a run file: the store's own is kept
            store.backend.put(name, [data])
    if run:
        _move_ref(store, run, head, expected)
        out.refs[run] = head
    return out
