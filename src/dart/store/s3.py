"""The object-storage backend: ``s3://bucket/prefix`` on S3 or any S3-compatible
server (MinIO, Ceph, R2, moto...), through fsspec + s3fs (the ``s3`` extra).

Each key is an object ``<prefix>/<key>`` (the same layout as a local store, so
``aws s3 sync`` of a local store is a store). What object storage lacks is made up
here:

- **Atomic, durable puts.** A PUT is atomic and durable when it returns. Big
  objects go up as a multipart upload, their parts in parallel; the object
  appears only when the upload completes, so a kill mid-upload leaves at most an
  incomplete upload (invisible; a bucket lifecycle rule
  ``AbortIncompleteMultipartUpload`` reclaims its parts).
- **Refs by compare-and-swap**: conditional writes. A ref is created with
  ``If-None-Match: *`` and moved with ``If-Match: <etag it was read with>``; the
  server refuses the write (412) when another writer got there first. A server
  without conditional writes (answering 501) is refused with a clear message:
  without them two machines could both advance one run.
- **Run leases**: ``leases/<run>.json`` holding who has it (host, pid) and until
  when, taken with ``If-None-Match: *``, renewed every ``ttl / 3`` s by a
  daemon thread with ``If-Match``, released by a conditional delete. A holder
  that stops renewing (its machine died) loses it after ``ttl`` s (30, or
  ``$DART_S3_LEASE_TTL``); one on this host whose process is gone loses it at
  once, and a start that finds a lease whose holder missed a renewal waits it
  out (a machine that just died) instead of failing. Taking over an expired lease is itself a conditional write, so of two
  machines that find it expired only one wins. Expiry compares the holder's
  clock with the taker's: keep the machines' clocks in sync (NTP).
- **Cheap existence checks.** Objects are immutable and named by their content,
  so whether one exists is answered from a listing of its shard
  (``objects/ab/``), fetched once per shard and kept up to date by this
  process's own puts and deletes: the flusher's "is this object already there?"
  costs one LIST per shard for a whole run, not a request per object. An
  object another machine wrote since is at worst written again (same bytes).

Endpoint and credentials: the usual AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``), and an endpoint given to
``open_store`` (``--s3-endpoint``, ``$DART_S3_ENDPOINT``, ``[tool.dart] s3_endpoint``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import threading
import time
from typing import BinaryIO

from dart.errors import StoreError

from .backend import Backend, Lease, LeaseHeld, Missing, PlainLease
from .local import crash_point

#: Objects bigger than this go up as a multipart upload, PART_SIZE bytes a part
#: (S3's smallest part is 5 MiB), at most PARALLEL_PARTS parts at a time.
MULTIPART_THRESHOLD = 16 << 20
PART_SIZE = 8 << 20
PARALLEL_PARTS = 8
DEFAULT_LEASE_TTL = 30.0
#: How often one request is tried (s3fs backs off between tries); the flusher and
#: the session retry a failed commit later, less and less often.
TRIES = 3


def lease_ttl() -> float:
    text = os.environ.get("DART_S3_LEASE_TTL")
    if not text:
        return DEFAULT_LEASE_TTL
    try:
        ttl = float(text)
    except ValueError:
        raise StoreError(f"DART_S3_LEASE_TTL: {text!r} is not a number of seconds; give e.g. 30") from None
    if not ttl > 0:
        raise StoreError(f"DART_S3_LEASE_TTL: {text!r} must be more than 0 seconds")
    return ttl


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception (s3fs wraps botocore's ClientError)."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        exc = exc.__cause__ or exc.__context__
    return None


def _precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, FileExistsError) or _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _not_supported(exc: BaseException) -> bool:
    return _error_code(exc) in ("NotImplemented", "501")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Pieces:
    """Chunks read as one byte string, a part at a time: a big object is not
    joined into one copy (at most PARALLEL_PARTS parts are in memory at once)."""

    def __init__(self, views: list[memoryview]) -> None:
        self.views = views
        self.size = sum(v.nbytes for v in views)

    def read(self, start: int, length: int) -> bytes:
        out, at = [], 0
        end = start + length
        for view in self.views:
            lo, hi = max(start, at), min(end, at + view.nbytes)
            if lo < hi:
                out.append(view[lo - at : hi - at])
            at += view.nbytes
            if at >= end:
                break
        return b"".join(out)


class S3Lease(PlainLease):
    """A run lease held in ``leases/<run>.json``, renewed by the backend's renewer thread."""

    def __init__(self, backend: S3Backend, run_id: str, etag: str, body: dict) -> None:
        super().__init__(run_id, on_release=lambda: backend._release(self))
        self.backend = backend
        self.etag = etag
        self.body = body
        self.lost: str | None = None  #: why the lease was lost while held (renewal refused), or None


class S3Backend(Backend):
    """A store under ``s3://bucket/prefix``. Safe to use from several threads and processes."""

    home = None
    writable = True

    def __init__(self, url: str, create: bool = True, endpoint: str | None = None) -> None:
        rest = url.split("://", 1)[1].rstrip("/")
        bucket, _, prefix = rest.partition("/")
        if not bucket or (prefix and any(p in ("", ".", "..") for p in prefix.split("/"))):
            raise StoreError(f"bad store location {url!r}; use s3://BUCKET or s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint = endpoint or os.environ.get("DART_S3_ENDPOINT") or None
        try:
            import s3fs
        except ImportError:
            raise StoreError(
                f"store {self.location} is on S3, which needs the s3fs package; "
                "install it with `pip install 'dart[s3]'` (or `pip install s3fs`)"
            ) from None
        client_kwargs = {"endpoint_url": self.endpoint} if self.endpoint else {}
        self.fs = s3fs.S3FileSystem(
            client_kwargs=client_kwargs,
            # No retries inside botocore: its back-off draws from the global `random`
            # module, which would change the program's own random numbers (s3fs
            # retries instead, with a fixed back-off).
            config_kwargs={"connect_timeout": 5, "read_timeout": 60,
                           "retries": {"mode": "standard", "total_max_attempts": 1}},
            use_listings_cache=False,
            skip_instance_cache=True,
            max_concurrency=PARALLEL_PARTS,
        )
        self.fs.retries = TRIES
        self.ttl = lease_ttl()
        self._shards: dict[str, set[str]] = {}  # "objects/ab/" -> keys known to exist there
        self._shards_lock = threading.Lock()
        self._leases: set[S3Lease] = set()
        self._leases_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._check_bucket(create)

    def __repr__(self) -> str:
        return f"S3Backend({self.location!r})"

    # ------------------------------------------------------------------ plumbing

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"bad key {key!r} in store {self.location}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _sync(self, coro):
        from fsspec.asyn import sync

        return sync(self.fs.loop, lambda: coro)

    def _call(self, method: str, **kwargs):
        return self._sync(self.fs._call_s3(method, Bucket=self.bucket, **kwargs))

    def _fail(self, exc: BaseException, doing: str) -> StoreError:
        """The StoreError for a failed request (what, where, what to do)."""
        if isinstance(exc, StoreError):
            return exc
        if (isinstance(exc, PermissionError) or type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError")
                or _error_code(exc) in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch")):
            hint = "check the AWS credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE)"
        elif _error_code(exc) in ("NoSuchBucket",):
            hint = f"create the bucket {self.bucket} first, or give another --store"
        else:
            hint = (f"check the network and the endpoint ({self.endpoint or 'AWS default'}; "
                    "--s3-endpoint or DART_S3_ENDPOINT sets it)")
        error = StoreError(f"cannot {doing} in store {self.location}: {type(exc).__name__}: {exc}; {hint}")
        error.__cause__ = exc
        return error

    def _check_bucket(self, create: bool) -> None:
        try:
            self._call("head_bucket")
        except Exception as exc:  # noqa: BLE001 - every failure is said as a StoreError
            if isinstance(exc, FileNotFoundError) or _error_code(exc) in ("NoSuchBucket", "404"):
                raise StoreError(
                    f"bucket {self.bucket} of store {self.location} does not exist "
                    f"(endpoint {self.endpoint or 'AWS default'}); create it first, or give another --store",
                    next_step="store" if not create else None,
                ) from None
            raise self._fail(exc, "reach the bucket") from None

    # ------------------------------------------------------------------ blobs

    def put(self, key: str, chunks: list, *, step: str | None = None) -> int:
        path = self._path(key)
        views = [memoryview(c).cast("B") for c in chunks]  # the codec's chunks are flat byte buffers
        size = sum(v.nbytes for v in views)
        if step:
            crash_point(f"{step}-tmp")  # nothing visible yet
        try:
            if size > MULTIPART_THRESHOLD:
                self._sync(self._multipart(path, _Pieces(views), step))
            else:
                self._call("put_object", Key=path, Body=b"".join(views))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"write {key}") from None
        self._note(key, True)
        if step:
            crash_point(step)
        return size

    async def _multipart(self, path: str, data: _Pieces, step: str | None) -> None:
        """Upload ``data`` in parts, PARALLEL_PARTS at a time; the object appears
        only at the end. On failure the upload is aborted (its parts freed)."""
        fs = self.fs
        upload = await fs._call_s3("create_multipart_upload", Bucket=self.bucket, Key=path)
        upload_id = upload["UploadId"]
        gate = asyncio.Semaphore(PARALLEL_PARTS)
        sent = 0

        async def part(number: int, start: int) -> dict:
            nonlocal sent
            async with gate:
                out = await fs._call_s3(
                    "upload_part", Bucket=self.bucket, Key=path, UploadId=upload_id, PartNumber=number,
                    Body=data.read(start, PART_SIZE),
                )
                sent += 1
                if step:
                    crash_point(f"{step}-part")  # a kill mid-upload: some parts sent, no object
                return {"PartNumber": number, "ETag": out["ETag"]}

        try:
            starts = range(0, data.size, PART_SIZE)
            parts = await asyncio.gather(*(part(i + 1, start) for i, start in enumerate(starts)))
            await fs._call_s3(
                "complete_multipart_upload", Bucket=self.bucket, Key=path, UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)},
            )
        except BaseException:
            try:
                await fs._call_s3("abort_multipart_upload", Bucket=self.bucket, Key=path, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the lifecycle rule reclaims it
                pass
            raise

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return self.fs.open(f"{self.bucket}/{path}", "rb", block_size=PART_SIZE, cache_type="readahead")
        except FileNotFoundError:
            raise Missing(key) from None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"read {key}") from None

    def get(self, key: str) -> bytes:
        return self._get(key)[0]

    def _get(self, key: str) -> tuple[bytes, str]:
        """(bytes, etag) of a blob."""
        path = self._path(key)

        async def fetch():
            out = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=path)
            async with out["Body"] as body:
                return await body.read(), out["ETag"]

        try:
            return self._sync(fetch())
        except FileNotFoundError:
            raise Missing(key) from None
        except Exception as exc:  # noqa: BLE001
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise Missing(key) from None
            raise self._fail(exc, f"read {key}") from None

    def get_range(self, key: str, offset: int, out: memoryview) -> None:
        if not len(out):
            return
        path = self._path(key)
        try:
            data = self.fs.cat_file(f"{self.bucket}/{path}", start=offset, end=offset + len(out))
        except FileNotFoundError:
            raise Missing(key) from None
        except Exception as exc:  # noqa: BLE001
            if _error_code(exc) in ("InvalidRange", "416"):
                data = b""
            else:
                raise self._fail(exc, f"read {key}") from None
        if len(data) != len(out):
            raise StoreError(f"{self.location}/{key} ends before byte {offset + len(out)}; it is truncated")
        out[:] = data

    def _shard(self, key: str) -> str | None:
        """The listing shard of an object key (objects/ab/), None for other keys."""
        if key.startswith("objects/"):
            folder = key.rpartition("/")[0]
            return folder + "/"
        return None

    def _note(self, key: str, present: bool) -> None:
        shard = self._shard(key)
        if shard is None:
            return
        with self._shards_lock:
            known = self._shards.get(shard)
            if known is not None:
                (known.add if present else known.discard)(key)

    def exists(self, key: str) -> bool:
        shard = self._shard(key)
        if shard is None:
            try:
                self._call("head_object", Key=self._path(key))
                return True
            except FileNotFoundError:
                return False
            except Exception as exc:  # noqa: BLE001
                if _error_code(exc) in ("404", "NoSuchKey"):
                    return False
                raise self._fail(exc, f"look for {key}") from None
        with self._shards_lock:
            known = self._shards.get(shard)
        if known is None:
            listed = set(self.list(shard))
            with self._shards_lock:
                known = self._shards.setdefault(shard, set())
                known.update(listed)
        self._path(key)
        with self._shards_lock:
            return key in known

    def list(self, prefix: str) -> list[str]:
        folder, _, _ = prefix.rpartition("/")
        base = self._path(folder) if folder else self.prefix
        start = f"{self.prefix}/" if self.prefix else ""
        keys = []
        try:
            token = None
            while True:
                kwargs = {"Prefix": f"{base}/" if base else ""}
                if token:
                    kwargs["ContinuationToken"] = token
                page = self._call("list_objects_v2", **kwargs)
                for item in page.get("Contents", []):
                    key = item["Key"][len(start) :]
                    if key.startswith(prefix):
                        keys.append(key)
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"list {prefix}") from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._call("delete_object", Key=self._path(key))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"delete {key}") from None
        self._note(key, False)

    # ------------------------------------------------------------------ refs

    def read_ref(self, name: str) -> str | None:
        return self._read_ref(name)[0]

    def _read_ref(self, name: str) -> tuple[str | None, str | None]:
        """(value, etag) of a ref; (None, None) if it does not exist."""
        try:
            data, etag = self._get(f"refs/{name}")
        except Missing:
            return None, None
        return data.decode("utf-8", errors="replace").strip() or None, etag

    def list_refs(self, prefix: str) -> list[str]:
        return [key[len("refs/") :] for key in self.list(f"refs/{prefix}")]

    def _conditional_put(self, key: str, data: bytes, etag: str | None) -> str | None:
        """Write ``key`` if it still has ``etag`` (None: if it does not exist).
        Returns the new etag, or None when another writer got there first."""
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            out = self._call("put_object", Key=self._path(key), Body=data, **condition)
        except Exception as exc:  # noqa: BLE001
            if _precondition_failed(exc):
                return None
            if _not_supported(exc):
                raise StoreError(
                    f"the server of store {self.location} does not support conditional writes "
                    "(If-Match / If-None-Match), which dart needs to move refs and hold leases safely; "
                    "use a server that has them (AWS S3, MinIO, Ceph, R2 and moto do) or a local store"
                ) from None
            raise self._fail(exc, f"write {key}") from None
        return out["ETag"]

    def cas_ref(self, name: str, expected: str | None, new: str) -> str | None:
        self._path(f"refs/{name}")
        for _ in range(10):
            current, etag = self._read_ref(name)
            if current != expected:
                return current if current is not None else ""  # "" : it was deleted meanwhile
            crash_point("ref-tmp")
            if self._conditional_put(f"refs/{name}", new.encode() + b"\n", etag) is not None:
                crash_point("ref")
                return None
            # another writer moved it between our read and our write: read again
        current, _ = self._read_ref(name)
        return current if current is not None else ""

    def delete_ref(self, name: str, expected: str) -> str | None:
        """Remove ref ``name`` if it still holds ``expected``: a conditional
        delete on the etag it was read with, so a concurrent move wins."""
        key = f"refs/{name}"
        self._path(key)
        for _ in range(10):
            current, etag = self._read_ref(name)
            if current != expected:
                return current
            try:
                self._call("delete_object", Key=self._path(key), IfMatch=etag)
            except Exception as exc:  # noqa: BLE001
                if _precondition_failed(exc):
                    continue  # moved between our read and our delete: read again
                raise self._fail(exc, f"delete {key}") from None
            self._note(key, False)
            return None
        return self.read_ref(name)

    # ------------------------------------------------------------------ leases

    def lease_holder(self, run_id: str) -> str | None:
        """Who holds the lease of a run, read from its lease object without
        taking it; None if nobody or the lease lapsed."""
        try:
            current, _ = self._get(self._lease_key(run_id))
        except Missing:
            return None
        try:
            held = json.loads(current)
        except ValueError:
            return None
        if not isinstance(held, dict) or self._expired(held):
            return None
        return self.describe_holder(held)

    def _holder(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}

    @staticmethod
    def describe_holder(body: dict) -> str:
        return f"process {body.get('pid', '?')} on host {body.get('host', '?')}"

    def _lease_key(self, run_id: str) -> str:
        return f"leases/{run_id}.json"

    def lease(self, run_id: str) -> Lease:
        key = self._lease_key(run_id)
        self._path(key)
        body = self._holder()
        waited = False
        for _ in range(5):
            body["expires"] = time.time() + self.ttl
            data = json.dumps(body).encode()
            try:
                current, etag = self._get(key)
            except Missing:
                current, etag = None, None
            if current is not None:
                try:
                    held = json.loads(current)
                    if not isinstance(held, dict):
                        raise ValueError
                except ValueError:
                    held = {}  # a damaged lease file is no lease
                if held and not self._expired(held):
                    wait = None if waited else self._stale_for(held)
                    if wait is None:
                        raise LeaseHeld(run_id, self._held_text(held))
                    time.sleep(wait)  # its holder missed a renewal: likely gone, wait the lease out once
                    waited = True
                    continue
            new_etag = self._conditional_put(key, data, etag)
            if new_etag is not None:
                lease = S3Lease(self, run_id, new_etag, body)
                with self._leases_lock:
                    self._leases.add(lease)
                self._start_renewer()
                return lease
        raise StoreError(f"could not take the lease of run {run_id} in store {self.location}: it kept changing; try again")

    def _held_text(self, held: dict) -> str:
        left = float(held.get("expires", 0)) - time.time()
        return (f"{self.describe_holder(held)} (its lease in {self.location} expires in {max(left, 0):.0f} s "
                "unless that process renews it)")

    def _stale_for(self, held: dict) -> float | None:
        """Seconds until a lease whose holder missed its last renewal expires (a
        machine that died a moment ago: the next start waits it out rather than
        failing); None for a lease renewed on time."""
        try:
            left = float(held.get("expires", 0)) - time.time()
        except (TypeError, ValueError):
            return None
        renewed_ago = self.ttl - left
        if renewed_ago > self.ttl / 3 * 1.5 and left < self.ttl:
            return max(left, 0) + 0.05
        return None

    def _expired(self, held: dict) -> bool:
        try:
            if float(held.get("expires", 0)) < time.time():
                return True
            if held.get("host") == socket.gethostname() and not _pid_alive(int(held.get("pid", -1))):
                return True  # its process on this machine is gone
            if held.get("host") == socket.gethostname() and int(held.get("pid", -1)) == os.getpid():
                return False  # our own, held by another lease object of this process
        except (TypeError, ValueError):
            return True
        return False

    def _release(self, lease: S3Lease) -> None:
        with self._leases_lock:
            self._leases.discard(lease)
        if lease.lost is not None:
            return
        try:
            self._call("delete_object", Key=self._path(self._lease_key(lease.run_id)), IfMatch=lease.etag)
        except Exception:  # noqa: BLE001 - not ours any more, or unreachable: it expires
            pass

    def _start_renewer(self) -> None:
        with self._leases_lock:
            if self._renewer is not None and self._renewer.is_alive():
                return
            self._renewer = threading.Thread(target=self._renew_loop, name="dart-s3-leases", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while True:
            time.sleep(self.ttl / 3)
            with self._leases_lock:
                leases = list(self._leases)
            if not leases:
                with self._leases_lock:
                    if not self._leases:
                        self._renewer = None
                        return
            for lease in leases:
                self._renew(lease)

    def _renew(self, lease: S3Lease) -> None:
        if not lease.held or lease.lost is not None:
            return
        body = dict(lease.body, expires=time.time() + self.ttl)
        try:
            etag = self._conditional_put(self._lease_key(lease.run_id), json.dumps(body).encode(), lease.etag)
        except StoreError:
            return  # unreachable: try again next time (the ref's compare-and-swap still guards the run)
        if etag is None:
            lease.lost = "another process took the lease over after it expired"
            with self._leases_lock:
                self._leases.discard(lease)
        else:
            lease.etag, lease.body = etag, body
