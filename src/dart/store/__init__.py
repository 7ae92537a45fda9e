"""Where commits live: content-addressed objects, commit records, refs and runs.

``open_store(location)`` is the one way to open a store: a path (a local
directory, the default) or ``memory://NAME`` (this process only). ``Store`` holds
the layout and the checks over a ``Backend`` (``backend.py``), which only keeps
bytes; ``codec.py`` says how an object's bytes lie; ``record.py`` is the commit
record; ``layout.py`` how a commit's state lies in objects.
"""

from __future__ import annotations

import os
import re

from dart.errors import StoreError

from .backend import Backend, Lease, LeaseHeld, Missing
from .codec import object_id
from .local import CRASH_EXIT_CODE, LocalBackend, RunLock, crash_point
from .memory import MemoryBackend
from .record import RECORD_VERSION, CommitRecord, decode_record, encode_record, record_id
from .store import Store

__all__ = [
    "Backend",
    "CRASH_EXIT_CODE",
    "CommitRecord",
    "Lease",
    "LeaseHeld",
    "LocalBackend",
    "MemoryBackend",
    "Missing",
    "RECORD_VERSION",
    "RunLock",
    "Store",
    "commit_id",
    "crash_point",
    "decode_record",
    "encode_record",
    "object_id",
    "open_store",
    "record_id",
]

commit_id = record_id

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")


def open_store(location: str | os.PathLike, create: bool = True, mode: str = "private",
               s3_endpoint: str | None = None) -> Store:
    """The store at ``location``: a directory path (created if ``create``, with
    permissions ``mode``: "private", "group" or "public", see local.MODES), or a
    URL: ``memory://NAME``, ``s3://BUCKET/PREFIX`` (object storage, see s3.py;
    ``s3_endpoint`` names an S3-compatible server, else $DART_S3_ENDPOINT or the
    AWS defaults). Other schemes are refused with a clear message."""
    text = os.fspath(location)
    match = _SCHEME.match(text) if isinstance(text, str) else None
    if match is None or len(match.group(1)) == 1:  # "C://..." is a path
        return Store(LocalBackend(text, create=create, mode=mode), create=create)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "file":
        return Store(LocalBackend(rest, create=create, mode=mode), create=create)
    if scheme == "memory":
        if not rest or "/" in rest:
            raise StoreError(f"bad store location {text!r}; use memory://NAME")
        return Store(MemoryBackend(rest, create=create), create=create)
    if scheme == "s3":
        from .s3 import S3Backend  # needs s3fs (the s3 extra): imported only for s3:// stores

        return Store(S3Backend(text, create=create, endpoint=s3_endpoint), create=create)
    raise StoreError(
        f"stores at {scheme}:// locations are not supported (store {text!r}); "
        "use a local directory, s3://BUCKET/PREFIX or memory://NAME for --store"
    )
