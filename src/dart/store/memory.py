"""An in-memory backend: ``memory://NAME``. Everything lives in this process and
is gone when it exits. For tests that need a store without a disk, and for tools
that want a scratch store; the same name opens the same store again."""

from __future__ import annotations

import io
import os
import threading
from typing import BinaryIO

from dart.errors import StoreError

from .backend import Backend, Lease, LeaseHeld, Missing, PlainLease

_SPACES: dict[str, "_Space"] = {}
_SPACES_LOCK = threading.Lock()


class _Space:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.refs: dict[str, str] = {}
        self.leases: set[str] = set()
        self.lock = threading.Lock()


class MemoryBackend(Backend):
    home = None

    def __init__(self, name: str, create: bool = True) -> None:
        self.name = name
        self.location = f"memory://{name}"
        with _SPACES_LOCK:
            space = _SPACES.get(name)
            if space is None:
                if not create:
                    raise StoreError(f"no dart store at {self.location}; nothing was written there in this process", next_step="store")
                space = _SPACES[name] = _Space()
        self._space = space

    def __repr__(self) -> str:
        return f"MemoryBackend({self.name!r})"

    @staticmethod
    def discard(name: str) -> None:
        """Forget the store ``name`` (the next open starts empty)."""
        with _SPACES_LOCK:
            _SPACES.pop(name, None)

    def _check(self, key: str) -> str:
        parts = key.split("/")
        if not key or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"bad key {key!r} in store {self.location}")
        return key

    def put(self, key: str, chunks: list, *, step: str | None = None) -> int:
        data = b"".join(bytes(memoryview(c)) for c in chunks)
        with self._space.lock:
            self._space.blobs[self._check(key)] = data
        return len(data)

    def get(self, key: str) -> bytes:
        try:
            return self._space.blobs[self._check(key)]
        except KeyError:
            raise Missing(key) from None

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get(key))

    def get_range(self, key: str, offset: int, out: memoryview) -> None:
        data = self.get(key)
        if offset + len(out) > len(data):
            raise StoreError(f"{key} in {self.location} ends before byte {offset + len(out)}; it is truncated")
        out[:] = memoryview(data)[offset : offset + len(out)]

    def exists(self, key: str) -> bool:
        return self._check(key) in self._space.blobs

    def list(self, prefix: str) -> list[str]:
        with self._space.lock:
            return sorted(k for k in self._space.blobs if k.startswith(prefix))

    def delete(self, key: str) -> None:
        with self._space.lock:
            self._space.blobs.pop(self._check(key), None)

    def read_ref(self, name: str) -> str | None:
        return self._space.refs.get(self._check(name))

    def list_refs(self, prefix: str) -> list[str]:
        with self._space.lock:
            return sorted(name for name in self._space.refs if name.startswith(prefix))

    def cas_ref(self, name: str, expected: str | None, new: str) -> str | None:
        with self._space.lock:
            current = self._space.refs.get(self._check(name))
            if current != expected:
                return current
            self._space.refs[name] = new
        return None

    def delete_ref(self, name: str, expected: str) -> str | None:
        with self._space.lock:
            current = self._space.refs.get(self._check(name))
            if current != expected:
                return current
            del self._space.refs[name]
        return None

    def lease_holder(self, run_id: str) -> str | None:
        with self._space.lock:
            return f"process {os.getpid()}" if run_id in self._space.leases else None

    def lease(self, run_id: str) -> Lease:
        with self._space.lock:
            if run_id in self._space.leases:
                raise LeaseHeld(run_id, f"process {os.getpid()}")
            self._space.leases.add(run_id)

        def release() -> None:
            with self._space.lock:
                self._space.leases.discard(run_id)

        return PlainLease(run_id, release)
