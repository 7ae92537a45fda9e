"""What a store backend implements: where bytes live, not what they mean.

A backend stores *blobs* under keys such as ``objects/ab/cdef...``,
``commits/<id>.json`` and ``runs/<run>.json`` (``Store`` in ``store.py`` chooses
the keys and their contents, the codec in ``codec.py`` the bytes), moves *refs*
by compare-and-swap, and grants *run leases* (one process advances a run at a
time). A second backend (object storage, say) implements this class and inherits
the layout, the codec, the record format and every check; the contract tests in
``dart.store.contract`` say what each method must do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO


class Missing(KeyError):
    """No blob (or ref) under this key. ``Store`` turns it into a StoreError."""


class LeaseHeld(Exception):
    """Another holder has the lease of a run; ``holder`` says who (a pid, a host)."""

    def __init__(self, run_id: str, holder: str) -> None:
        super().__init__(run_id, holder)
        self.run_id = run_id
        self.holder = holder


class Lease(ABC):
    """The right to advance one run, until released or the holder dies."""

    run_id: str

    @property
    @abstractmethod
    def held(self) -> bool: ...

    @abstractmethod
    def release(self) -> None:
        """Give the lease up. Idempotent."""

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PlainLease(Lease):
    """A lease that is only a flag (and what to do when it is given up)."""

    def __init__(self, run_id: str, on_release=None) -> None:
        self.run_id = run_id
        self._on_release = on_release
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            if self._on_release is not None:
                self._on_release()


class Backend(ABC):
    #: where the store is, for messages and ``dart`` commands (a path or a URL)
    location: str
    #: the local folder that holds the store, or None when it is not local: a
    #: script's path relative to it is part of a run's identity
    home: Path | None = None
    #: False when this process can read the store but not write it
    writable: bool = True

    # -- blobs -------------------------------------------------------------------
    @abstractmethod
    def put(self, key: str, chunks: list, *, step: str | None = None) -> int:
        """Store the concatenated ``chunks`` under ``key`` atomically (readers see
        the old blob or the whole new one, never part), durably before it returns;
        return the bytes written. ``step`` names the write for crash tests
        (``DART_TEST_CRASH_AT``: ``<step>-tmp`` before it becomes visible,
        ``<step>`` after)."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable binary file of the blob (Missing if there is none)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole blob (Missing if there is none)."""

    @abstractmethod
    def get_range(self, key: str, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the blob's bytes from ``offset`` (Missing; StoreError
        if the blob is shorter)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix`` (a folder such as ``commits/``), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob; no error if it is already gone."""

    # -- refs ----------------------------------------------------------------------
    @abstractmethod
    def read_ref(self, name: str) -> str | None:
        """The value of ref ``name`` (``runs/<run>``), None if it does not exist."""

    @abstractmethod
    def list_refs(self, prefix: str) -> list[str]:
        """The names of the refs that start with ``prefix`` (``runs/``), sorted."""

    @abstractmethod
    def cas_ref(self, name: str, expected: str | None, new: str) -> str | None:
        """Set ref ``name`` to ``new`` if it still holds ``expected`` (None: absent).
        Returns None on success, else the value it holds now (nothing written)."""

    def delete_ref(self, name: str, expected: str) -> str | None:
        """Remove ref ``name`` if it still holds ``expected`` (tags are deleted;
        run refs never are). Returns None on success, else the value it holds now
        (None too if it is already gone). A backend that cannot delete refs says so."""
        from dart.errors import StoreError

        raise StoreError(f"store {self.location} cannot delete refs (its backend does not implement delete_ref)")

    # -- run leases ------------------------------------------------------------------
    @abstractmethod
    def lease(self, run_id: str) -> Lease:
        """Take the lease of a run (LeaseHeld if another holder has it). A lease
        ends with its holder's process."""

    def lease_holder(self, run_id: str) -> str | None:
        """Who holds the lease of a run now (``process 1234``), None if nobody.
        This default takes the lease for an instant to find out; a backend that
        can look without taking it (local.py) does, so a run starting at that
        instant is never told its run is busy."""
        try:
            lease = self.lease(run_id)
        except LeaseHeld as exc:
            return exc.holder
        lease.release()
        return None

    def owner(self) -> str | None:
        """Who owns the store when it is not the user of this process (loading it
        runs code from its pickles), else None."""
        return None
