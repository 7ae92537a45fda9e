"""The commit record: one typed value, written by :func:`encode_record` and read
by :func:`decode_record`, nothing else.

A record names a commit's parent, run, time, position (where the program was,
frame by frame), message, what resume needs besides the state (variables to
rebuild, loops to re-create or track), the environment, the script, and the
commit's state (``state``: the index object and every object it needs, see
``layout.py``). Its id is 16 hex characters of xxh3-128 over its canonical JSON
without the id, so the same record always has the same id.

Versions: 1 is a record of dart 0.1 (no ``version`` field); 2 adds the field and is
written now. A reader takes every version from ``OLDEST_VERSION`` to
``RECORD_VERSION`` and refuses a newer one with both numbers named.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import xxhash

from dart.errors import CorruptObjectError, StoreError

RECORD_VERSION = 2
OLDEST_VERSION = 1


@dataclass(frozen=True)
class CommitRecord:
    run: str
    parent: str | None = None
    time: float = 0.0
    message: str | None = None
    position: dict = field(default_factory=dict)  #: see capture.path.describe for its shape
    where: str = ""  #: the position, described for people
    resumable: bool = False
    state: dict = field(default_factory=dict)  #: {"format", "index", "objects"} (layout.py)
    bytes_written: int = 0
    staged_bytes: int = 0
    skipped: dict = field(default_factory=dict)  #: global name -> why it was not saved
    rebuild: dict = field(default_factory=dict)  #: frame index -> {name: statement path}
    recreated: list = field(default_factory=list)  #: iterator keys of re-created loops
    tracked: list = field(default_factory=list)  #: loops counted by the monitor
    env: dict = field(default_factory=dict)  #: versions the commit depends on
    source: dict = field(default_factory=dict)  #: {"file", "hash"} of the main script
    command: dict = field(default_factory=dict)  #: {"key", "script", "argv"}: rebuilds a lost run file
    appended: dict = field(default_factory=dict)  #: path -> length of the files appended to (capture/appended.py)
    version: int = RECORD_VERSION
    id: str = ""  #: filled in by encode_record / decode_record
    extra: dict = field(default_factory=dict)  #: fields of this version that this dart does not know

    @property
    def short(self) -> str:
        return self.id[:12]

    def replace(self, **changes: Any) -> CommitRecord:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name for f in dataclasses.fields(CommitRecord)} - {"id", "extra"}


def _body(record: CommitRecord) -> dict:
    body = {name: getattr(record, name) for name in _FIELDS}
    body.update(record.extra)
    return body


def record_id(record: CommitRecord) -> str:
    canonical = json.dumps(_body(record), sort_keys=True, separators=(",", ":"))
    return xxhash.xxh3_128_hexdigest(canonical.encode())[:16]


def _signed_bytes(body: dict) -> bytes:
    return json.dumps({k: v for k, v in body.items() if k not in ("id", "signature")}, sort_keys=True,
                      separators=(",", ":")).encode()


def encode_record(record: CommitRecord, key: bytes | None = None) -> tuple[str, bytes, CommitRecord]:
    """(id, bytes to store, the record with its id) of a record to write;
    signed when ``key`` is given (see sign.py)."""
    if record.version != RECORD_VERSION:
        raise ValueError(f"dart writes commit records of version {RECORD_VERSION}, not {record.version}")
    if key is not None:
        from .sign import mac

        extra = {k: v for k, v in record.extra.items() if k != "signature"}
        record = record.replace(extra=dict(extra, signature=mac(key, _signed_bytes(_body(record.replace(extra=extra))))))
    cid = record_id(record)
    body = dict(_body(record), id=cid)
    return cid, json.dumps(body, sort_keys=True, indent=1).encode() + b"\n", record.replace(id=cid)


def _raw_id(body: dict) -> str:
    canonical = json.dumps({k: v for k, v in body.items() if k != "id"}, sort_keys=True, separators=(",", ":"))
    return xxhash.xxh3_128_hexdigest(canonical.encode())[:16]


def decode_record(data: bytes, where: str, expected_id: str | None = None, key: bytes | None = None) -> CommitRecord:
    """The record stored as ``data`` (``where`` names it in messages). It must
    match its id (and ``expected_id``, the name it was stored under): a record
    changed after it was written is refused as damaged. With ``key``, it must
    carry a valid signature too."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptObjectError(f"commit record {where} is not valid JSON ({exc})", next_step="damaged") from exc
    if not isinstance(body, dict):
        raise CorruptObjectError(f"commit record {where} does not hold a JSON object", next_step="damaged")
    version = body.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptObjectError(f"commit record {where} has a bad version {version!r}", next_step="damaged")
    if version > RECORD_VERSION:
        raise StoreError(
            f"commit record {where} was written in record version {version}, and this dart reads "
            f"versions {OLDEST_VERSION} to {RECORD_VERSION}; upgrade dart to read it"
        )
    if version < OLDEST_VERSION:
        raise StoreError(
            f"commit record {where} was written in record version {version}, which this dart no longer "
            f"reads (oldest: {OLDEST_VERSION}); use an older dart to read it"
        )
    if not isinstance(body.get("run"), str) or not isinstance(body.get("id", ""), str):
        raise CorruptObjectError(f"commit record {where} has no run or a bad id", next_step="damaged")
    if body.get("id") != _raw_id(body) or (expected_id is not None and body.get("id") != expected_id):
        raise CorruptObjectError(
            f"commit record {where} does not match its id: it was changed after it was written",
            next_step="damaged",
        )
    if key is not None:
        from .sign import matches

        if "signature" not in body:
            raise CorruptObjectError(
                f"commit record {where} is not signed, and this store is read with a key (DART_HMAC_KEY): "
                "it was not written with that key or was replaced; refusing it. Unset the key to read "
                "unsigned stores you trust",
                unsigned=True,
            )
        if not matches(key, _signed_bytes(body), body["signature"]):
            raise CorruptObjectError(
                f"commit record {where} has a signature that does not match the key (DART_HMAC_KEY): it was "
                "tampered with or signed with another key; refusing it",
                unsigned=True,
            )
    known = {k: v for k, v in body.items() if k in _FIELDS}
    extra = {k: v for k, v in body.items() if k not in _FIELDS and k != "id"}
    known["version"] = version
    try:
        return CommitRecord(**known, id=body.get("id", ""), extra=extra)
    except TypeError as exc:
        raise CorruptObjectError(f"commit record {where} cannot be read ({exc})", next_step="damaged") from exc
