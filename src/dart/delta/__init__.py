"""Which chunks of a buffer changed since the last commit, found in native code without
the GIL, and the policy that picks how to find out for each buffer.

Strategies (all in src/_native/delta.c; measured in docs/delta.md):

- ``ChunkTracker(strategy="hash")``: a 64-bit fingerprint per chunk, one read pass over
  the buffer at memory speed, 8 bytes of state per chunk. The default.
- ``ChunkTracker(strategy="compare")``: exact comparison against a shadow copy; the
  shadow doubles the memory and the scan reads twice the bytes (slower than hashing
  here), but no collision is possible.
- ``DirtyTracker(buffer)``: the kernel reports the pages written since the last call
  (userfaultfd write protection in async mode + PAGEMAP_SCAN, Linux >= 6.7). Near-free
  detection, but each first write to a protected page costs the program a minor fault,
  so it suits buffers that rarely change; ``available()`` says whether the kernel allows
  it here, and why not.
- ``AdaptiveTracker``: chooses per buffer: dirty tracking (or hashing where it is not
  available) while the buffer changes sparsely, a plain copy without detection once it
  is rewritten at every commit, and a probe now and then to notice when that stops.

Buffers are anything with the buffer protocol that is contiguous (NumPy arrays,
bytearray, memoryview; torch CPU tensors through ``t.numpy()``, or passed directly
here). Non-contiguous views raise ``DeltaError``: track the array they view.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._native import delta as _delta
from ..errors import BufferMovedError, DeltaError

DirtyTracker = _delta.DirtyTracker
from .reference import changed_chunks

__all__ = [
    "AdaptiveTracker",
    "Availability",
    "ChunkTracker",
    "DeltaError",
    "DirtyTracker",
    "available",
    "as_buffer",
    "changed_chunks",
]

DEFAULT_CHUNK = 1 << 20
STRATEGIES = ("hash", "compare")


def as_buffer(obj):
    """The object whose bytes are tracked: itself, or for a torch CPU tensor the NumPy
    view of its data (no copy)."""
    if type(obj).__module__.startswith("torch") and hasattr(obj, "numpy"):
        if getattr(obj, "device", None) is not None and obj.device.type != "cpu":
            raise DeltaError(f"a {obj.device} tensor has no host buffer to track; copy it to "
                             "host memory first (dart stages CUDA tensors on the host)")
        return obj.detach().numpy()
    return obj


class ChunkTracker:
    """Remembers per-chunk fingerprints of one buffer between commits."""

    __slots__ = ("_native", "strategy")

    def __init__(self, nbytes: int, chunk_size: int = DEFAULT_CHUNK, strategy: str = "hash",
                 threads: int = 1):
        if strategy not in STRATEGIES:
            raise DeltaError(f"unknown change-detection strategy {strategy!r}; use one of {STRATEGIES}")
        self.strategy = strategy
        cls = _delta.HashTracker if strategy == "hash" else _delta.CompareTracker
        self._native = cls(nbytes, chunk_size, threads)

    nbytes = property(lambda self: self._native.nbytes)
    chunk_size = property(lambda self: self._native.chunk_size)
    nchunks = property(lambda self: self._native.nchunks)

    def changed(self, buffer) -> list[int]:
        """Indexes of the chunks whose bytes differ from the last call (all of them on the
        first call); remembers the new state. Native, GIL released for big buffers."""
        return self._native.changed(as_buffer(buffer))

    def copy_changed(self, buffer, out) -> list[tuple[int, int, int]]:
        """Detects as changed() does and copies each changed chunk into the pre-allocated
        writable buffer out, packed in order. Returns [(chunk index, offset in buffer,
        length)]. If out is too small, raises DeltaError and nothing moves."""
        return self._native.copy_changed(as_buffer(buffer), out)

    def __repr__(self):
        return (f"ChunkTracker(nbytes={self.nbytes}, chunk_size={self.chunk_size}, "
                f"strategy={self.strategy!r})")


@dataclass(frozen=True)
class Availability:
    """Whether kernel dirty-page tracking works in this process; true or false as a
    whole, with the reason (what the kernel refused, with its errno) either way."""

    ok: bool
    reason: str

    def __bool__(self):
        return self.ok


def available() -> Availability:
    """Whether ``DirtyTracker`` can work here (probed once per process)."""
    return Availability(*_delta.dirty_tracking_probe())


class AdaptiveTracker:
    """One buffer's change detection, chosen from what it did at the last commits.

    mode is "dirty" (kernel tracking), "hash" (portable), or "copy" (no detection: every
    chunk is reported, for buffers that change almost everywhere at each commit, where a
    detection pass would only add to the copy and write faults would slow the program).
    After ``dense_streak`` commits in a row with at least ``dense_fraction`` of the
    chunks changed it switches to "copy" (by default one: a tensor that changed at its
    first commit and again at the second, as a training step's do, is copied without
    detection from the third on, with no longer learning phase); every ``reprobe`` commits in "copy" it hashes
    two commits in a row to measure again, doubling the wait (up to 64) while the buffer
    stays dense.

    In "dirty" mode the tracker holds the buffer (its memory cannot be freed or resized
    until close()). A buffer passed later at another address but of the same size is
    reported as all changed, and then tracked at its new place.
    """

    def __init__(self, nbytes: int, chunk_size: int = DEFAULT_CHUNK, *, dirty: bool | None = None,
                 dense_fraction: float = 0.5, dense_streak: int = 1, reprobe: int = 8,
                 min_dirty_bytes: int = 1 << 22):
        self.nbytes, self.chunk_size = nbytes, chunk_size
        self.dense_fraction, self.dense_streak = dense_fraction, dense_streak
        self.reprobe = self._base_reprobe = reprobe
        use_dirty = available().ok if dirty is None else dirty
        self._want_dirty = use_dirty and nbytes >= min_dirty_bytes
        self.mode = "dirty" if self._want_dirty else "hash"
        self.why = "" if self._want_dirty or not use_dirty else f"below {min_dirty_bytes} bytes"
        if dirty is None and not use_dirty:
            self.why = available().reason
        self._dirty: DirtyTracker | None = None
        self._hash: ChunkTracker | None = None
        self._streak = 0
        self._countdown = 0
        self._probe = 0
        self.nchunks = _delta.chunk_count(nbytes, chunk_size)

    def close(self):
        if self._dirty is not None:
            self._dirty.close()
            self._dirty = None

    def _all(self) -> list[tuple[int, int, int]]:
        cs, n = self.chunk_size, self.nbytes
        return [(i, i * cs, min(cs, n - i * cs)) for i in range(self.nchunks)]

    def copy_changed(self, buffer, out) -> list[tuple[int, int, int]]:
        """As ChunkTracker.copy_changed, with the strategy picked for this buffer."""
        buffer = as_buffer(buffer)
        if self.mode == "copy":
            self._countdown -= 1
            if self._countdown > 0:
                self._copy_all(buffer, out)
                return self._all()
            # probe: hash this commit (all chunks, it has no history) and the next one
            self.mode, self._probe = "hash", 2
            self._hash = ChunkTracker(self.nbytes, self.chunk_size)
        spans, fresh = self._detect(buffer, out)
        self._learn(len(spans), fresh)
        return spans

    def changed(self, buffer) -> list[int] | None:
        """As ChunkTracker.changed, with the strategy picked for this buffer; None
        means every chunk (no detection ran: the buffer is in "copy" mode)."""
        buffer = as_buffer(buffer)
        if self.mode == "copy":
            self._countdown -= 1
            if self._countdown > 0:
                self._check_size(buffer)
                return None
            self.mode, self._probe = "hash", 2
            self._hash = ChunkTracker(self.nbytes, self.chunk_size)
        indices, fresh = self._detect(buffer, None)
        self._learn(len(indices), fresh)
        return indices

    def _check_size(self, buffer):
        n = memoryview(buffer).nbytes
        if n != self.nbytes:
            raise BufferMovedError(f"the buffer now has {n} bytes but was tracked with "
                                   f"{self.nbytes} bytes; start a new tracker for it")

    def _copy_all(self, buffer, out):
        self._check_size(buffer)
        view = memoryview(buffer).cast("B")
        memoryview(out).cast("B")[: self.nbytes] = view

    def _detect(self, buffer, out):
        """(changed chunk indexes, or spans copied into out when out is given; whether the
        tracker used had no history: then every chunk is reported)."""
        run = (lambda t: t.changed(buffer)) if out is None else (lambda t: t.copy_changed(buffer, out))
        if self.mode == "dirty":
            try:
                if self._dirty is None:
                    self._dirty = DirtyTracker(buffer, self.chunk_size, verify=True)
                fresh = not self._dirty.primed
                return run(self._dirty), fresh
            except DeltaError as exc:
                if isinstance(exc, BufferMovedError) and memoryview(buffer).nbytes != self.nbytes:
                    raise
                # re-allocated at the same size, or the kernel refused this memory
                moved = self._dirty is not None
                self.close()
                if not moved:
                    self.mode, self.why, self._want_dirty = "hash", str(exc), False
                    self._hash = None
                else:
                    self._dirty = DirtyTracker(buffer, self.chunk_size, verify=True)
                    return run(self._dirty), True
        if self._hash is None:
            self._hash = ChunkTracker(self.nbytes, self.chunk_size)
        fresh = not self._hash._native.primed
        return run(self._hash), fresh

    def _learn(self, nchanged: int, fresh: bool):
        dense = self.nchunks > 0 and nchanged >= self.dense_fraction * self.nchunks
        if self._probe:
            self._probe -= 1
            if self._probe:
                return  # the first probe commit primes the fingerprints: nothing learned
            if dense:
                self.reprobe = min(2 * self.reprobe, 64)
                self._to_copy()
            else:
                self.reprobe, self._streak = self._base_reprobe, 0
                if self._want_dirty:
                    self.mode, self._hash = "dirty", None
            return
        if fresh:
            return  # a first call reports every chunk: says nothing about the buffer
        self._streak = self._streak + 1 if dense else 0
        if self._streak >= self.dense_streak:
            self._to_copy()

    def _to_copy(self):
        self.close()  # no write faults for a buffer rewritten at every commit
        self.mode, self._hash, self._streak = "copy", None, 0
        self._countdown = self.reprobe
