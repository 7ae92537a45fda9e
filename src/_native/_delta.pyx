# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The native half of dart's delta engine: which chunks of a buffer changed.

Every entry point has one shape: acquire the buffer, release the GIL when the buffer is
big enough for that to pay, do the byte work in C (delta.c), release the buffer in a
``finally``. Policy (which strategy, when) is in ``dart.delta``; each routine here has a
pure-Python twin in ``dart.delta.reference``.
"""
import os

from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from dart.errors import BufferMovedError, DeltaError

cdef extern from "delta.h" nogil:
    int DART_DELTA_EINVAL
    int DART_DELTA_ENOSPC
    int DART_DELTA_ENOMEM
    int DART_DELTA_ESYS
    ctypedef struct dart_delta_dirty:
        int uffd
        uintptr_t start
        uintptr_t end
        size_t page_size
        uint64_t features
        uint64_t *ranges
        size_t nranges
        size_t ranges_cap
        const char *failed
    uint64_t dart_delta_hash(const void *data, size_t len)
    size_t dart_delta_chunk_count(size_t nbytes, size_t chunk_size)
    int dart_delta_hash_chunks(const void *buf, size_t nbytes, size_t chunk_size,
                               uint64_t *fingerprints, int nthreads)
    long long dart_delta_compare_chunks(const void *buf, const void *shadow, size_t nbytes,
                                        size_t chunk_size, uint8_t *changed, int nthreads)
    long long dart_delta_copy_chunks(const void *src, size_t nbytes, size_t chunk_size,
                                     const size_t *idx, size_t n, void *out, size_t out_len,
                                     void *mirror)
    int dart_delta_dirty_probe(const char **failed)
    int dart_delta_dirty_open(dart_delta_dirty *t, const void *addr, size_t len)
    long long dart_delta_dirty_scan(dart_delta_dirty *t)
    long long dart_delta_dirty_save(dart_delta_dirty *t, void *addr, size_t nbytes,
                                    void *shadow)
    long long dart_delta_dirty_restore(dart_delta_dirty *t, void *addr, size_t nbytes,
                                       const void *shadow, int compare)
    long long dart_delta_dirty_mark_chunks(const dart_delta_dirty *t, const void *addr,
                                           size_t nbytes, size_t chunk_size, uint8_t *changed)
    void dart_delta_dirty_close(dart_delta_dirty *t)


# Below this many bytes releasing and re-taking the GIL costs more than it frees.
GIL_THRESHOLD = 1 << 18
cdef size_t _gil_threshold = GIL_THRESHOLD


cdef int _acquire(object obj, Py_buffer *view, bint writable, str what) except -1:
    cdef int flags = PyBUF_ANY_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0)
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, ValueError, TypeError) as exc:
        shape = getattr(obj, "shape", None)
        strides = getattr(obj, "strides", None)
        detail = f" (shape {shape}, strides {strides})" if shape is not None else ""
        if writable and getattr(obj, "flags", None) is not None and not obj.flags.writeable:
            raise DeltaError(f"{what} of type {type(obj).__name__} is read-only; pass a "
                             "writable buffer, such as a bytearray or a new NumPy array") from exc
        raise DeltaError(
            f"{what} of type {type(obj).__name__}{detail} is not one contiguous "
            f"{'writable ' if writable else ''}buffer ({exc}); track the array it is a view "
            "of, or pass numpy.ascontiguousarray(x) (a torch tensor: t.numpy())") from exc
    return 0


cdef _check_size(Py_ssize_t got, size_t want):
    if <size_t>got != want:
        raise BufferMovedError(
            f"the buffer now has {got} bytes but was tracked with {want} bytes; it was "
            "resized or re-allocated between calls: start a new tracker for it")


cdef _raise_code(long long rc, str what):
    if rc == DART_DELTA_ENOMEM:
        raise MemoryError(what)
    raise DeltaError(f"{what} failed (code {rc})")


def chunk_count(size_t nbytes, size_t chunk_size):
    """ceil(nbytes / chunk_size)."""
    if chunk_size == 0:
        raise DeltaError("chunk_size must be a positive number of bytes, not 0")
    return dart_delta_chunk_count(nbytes, chunk_size)


def chunk_hash(buffer):
    """64-bit fingerprint of the buffer's bytes (dart.delta.reference.chunk_hash)."""
    cdef Py_buffer view
    cdef uint64_t h
    _acquire(buffer, &view, False, "buffer")
    try:
        if <size_t>view.len >= _gil_threshold:
            with nogil:
                h = dart_delta_hash(view.buf, view.len)
        else:
            h = dart_delta_hash(view.buf, view.len)
        return h
    finally:
        PyBuffer_Release(&view)


def hash_chunks(buffer, size_t chunk_size, int threads=1):
    """[chunk_hash(chunk) for each chunk of the buffer]."""
    cdef Py_buffer view
    cdef size_t n, i
    cdef uint64_t *fps = NULL
    cdef int rc
    if chunk_size == 0:
        raise DeltaError("chunk_size must be a positive number of bytes, not 0")
    _acquire(buffer, &view, False, "buffer")
    try:
        n = dart_delta_chunk_count(view.len, chunk_size)
        fps = <uint64_t *>malloc(max(n, 1) * sizeof(uint64_t))
        if fps == NULL:
            raise MemoryError()
        with nogil:
            rc = dart_delta_hash_chunks(view.buf, view.len, chunk_size, fps, threads)
        if rc < 0:
            _raise_code(rc, "hashing chunks")
        return [fps[i] for i in range(n)]
    finally:
        free(fps)
        PyBuffer_Release(&view)


def mark_chunks(ranges, size_t nbytes, size_t chunk_size):
    """Chunks of an nbytes buffer overlapping any (offset, end) byte range; the routine
    that maps the kernel's written pages to chunks, exposed for the parity tests."""
    cdef dart_delta_dirty t
    cdef size_t n = dart_delta_chunk_count(nbytes, chunk_size), i
    cdef uint8_t *flags
    cdef uintptr_t base = 1 << 30
    if chunk_size == 0:
        raise DeltaError("chunk_size must be a positive number of bytes, not 0")
    memset(&t, 0, sizeof(t))
    t.nranges = len(ranges)
    t.ranges = <uint64_t *>malloc(max(2 * t.nranges, 1) * sizeof(uint64_t))
    flags = <uint8_t *>malloc(max(n, 1))
    try:
        if t.ranges == NULL or flags == NULL:
            raise MemoryError()
        for i, (s, e) in enumerate(ranges):
            t.ranges[2 * i] = base + s
            t.ranges[2 * i + 1] = base + e
        dart_delta_dirty_mark_chunks(&t, <void *>base, nbytes, chunk_size, flags)
        return [i for i in range(n) if flags[i]]
    finally:
        free(t.ranges)
        free(flags)


cdef class _ChunkState:
    """What both portable strategies share: sizes, the changed-index scratch list."""
    cdef readonly size_t nbytes
    cdef readonly size_t chunk_size
    cdef readonly size_t nchunks
    cdef readonly bint primed
    cdef public int threads
    cdef size_t *idx
    cdef uint8_t *flags

    def __cinit__(self, Py_ssize_t nbytes, Py_ssize_t chunk_size=1 << 20, int threads=1):
        if nbytes < 0:
            raise DeltaError(f"nbytes must be >= 0, not {nbytes}")
        if chunk_size <= 0:
            raise DeltaError(f"chunk_size must be a positive number of bytes, not {chunk_size}")
        self.nbytes = nbytes
        self.chunk_size = chunk_size
        self.nchunks = dart_delta_chunk_count(nbytes, chunk_size)
        self.threads = threads
        self.idx = <size_t *>malloc(max(self.nchunks, 1) * sizeof(size_t))
        self.flags = <uint8_t *>malloc(max(self.nchunks, 1))
        if self.idx == NULL or self.flags == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.idx)
        free(self.flags)

    cdef size_t _detect(self, const void *buf) except? 0:
        """Fill self.idx with the changed chunks; return their number. Subclasses."""
        return 0

    cdef _commit(self, const void *buf, size_t n):
        """The changed chunks were handed out: remember their new state."""
        self.primed = True

    cdef object _run(self, buffer, out):
        cdef Py_buffer view, oview
        cdef size_t n, i, off
        cdef long long rc
        cdef bint have_out = out is not None
        cdef void *obuf = NULL
        cdef size_t olen = 0
        cdef void *mirror
        _acquire(buffer, &view, False, "buffer")
        try:
            _check_size(view.len, self.nbytes)
            if have_out:
                _acquire(out, &oview, True, "out")
            try:
                if have_out:
                    obuf = oview.buf
                    olen = oview.len
                n = self._detect(view.buf)
                mirror = self._mirror()
                if have_out or mirror != NULL:
                    if self.nbytes >= _gil_threshold:
                        with nogil:
                            rc = dart_delta_copy_chunks(view.buf, self.nbytes, self.chunk_size,
                                                        self.idx, n, obuf, olen, mirror)
                    else:
                        rc = dart_delta_copy_chunks(view.buf, self.nbytes, self.chunk_size,
                                                    self.idx, n, obuf, olen, mirror)
                    if rc == DART_DELTA_ENOSPC:
                        need = sum(min(self.chunk_size, self.nbytes - self.idx[i] * self.chunk_size)
                                   for i in range(n))
                        raise DeltaError(
                            f"out has {olen} bytes but the {n} changed chunks need {need}; "
                            f"pass a buffer of at least {need} bytes (at most {self.nbytes}); "
                            "nothing was copied and the tracker did not move")
                    if rc < 0:
                        _raise_code(rc, "copying changed chunks")
                self._commit(view.buf, n)
                if not have_out:
                    return [self.idx[i] for i in range(n)]
                result = []
                for i in range(n):
                    off = self.idx[i] * self.chunk_size
                    result.append((self.idx[i], off, min(self.chunk_size, self.nbytes - off)))
                return result
            finally:
                if have_out:
                    PyBuffer_Release(&oview)
        finally:
            PyBuffer_Release(&view)

    cdef void *_mirror(self):
        return NULL

    def changed(self, buffer):
        """Indexes of the chunks whose bytes differ from the last call (all of them on
        the first call); remembers the new state."""
        return self._run(buffer, None)

    def copy_changed(self, buffer, out):
        """Like changed(), and copies each changed chunk into the writable buffer out,
        packed in order; returns [(chunk index, offset in buffer, length)]. If out is too
        small, raises DeltaError and changes nothing."""
        return self._run(buffer, out)


cdef class HashTracker(_ChunkState):
    """Portable strategy 1: a 64-bit fingerprint per chunk (8 bytes of state each)."""
    cdef uint64_t *fps
    cdef uint64_t *scratch

    def __cinit__(self, Py_ssize_t nbytes, Py_ssize_t chunk_size=1 << 20, int threads=1):
        self.fps = <uint64_t *>malloc(max(self.nchunks, 1) * sizeof(uint64_t))
        self.scratch = <uint64_t *>malloc(max(self.nchunks, 1) * sizeof(uint64_t))
        if self.fps == NULL or self.scratch == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.fps)
        free(self.scratch)

    cdef size_t _detect(self, const void *buf) except? 0:
        cdef int rc
        cdef size_t i, n = 0
        if self.nbytes >= _gil_threshold:
            with nogil:
                rc = dart_delta_hash_chunks(buf, self.nbytes, self.chunk_size, self.scratch,
                                            self.threads)
        else:
            rc = dart_delta_hash_chunks(buf, self.nbytes, self.chunk_size, self.scratch,
                                        self.threads)
        if rc < 0:
            _raise_code(rc, "hashing chunks")
        for i in range(self.nchunks):
            if not self.primed or self.scratch[i] != self.fps[i]:
                self.idx[n] = i
                n += 1
        return n

    cdef _commit(self, const void *buf, size_t n):
        # the scratch row holds every new fingerprint: swap instead of copying
        self.fps, self.scratch = self.scratch, self.fps
        self.primed = True

    def fingerprints(self):
        """The remembered fingerprints (after at least one call)."""
        cdef size_t i
        return [self.fps[i] for i in range(self.nchunks)] if self.primed else None


cdef class CompareTracker(_ChunkState):
    """Portable strategy 2: an exact comparison with a shadow copy of the buffer (as many
    bytes of state as the buffer itself)."""
    cdef uint8_t *shadow

    def __dealloc__(self):
        free(self.shadow)

    cdef size_t _detect(self, const void *buf) except? 0:
        cdef long long rc
        cdef size_t i, n = 0
        if not self.primed:
            if self.shadow == NULL:
                self.shadow = <uint8_t *>malloc(max(self.nbytes, 1))
                if self.shadow == NULL:
                    raise MemoryError(f"no memory for a {self.nbytes}-byte shadow copy")
            for i in range(self.nchunks):
                self.idx[i] = i
            return self.nchunks
        if self.nbytes >= _gil_threshold:
            with nogil:
                rc = dart_delta_compare_chunks(buf, self.shadow, self.nbytes, self.chunk_size,
                                               self.flags, self.threads)
        else:
            rc = dart_delta_compare_chunks(buf, self.shadow, self.nbytes, self.chunk_size,
                                           self.flags, self.threads)
        if rc < 0:
            _raise_code(rc, "comparing chunks")
        for i in range(self.nchunks):
            if self.flags[i]:
                self.idx[n] = i
                n += 1
        return n

    cdef void *_mirror(self):
        return self.shadow


cdef dict _probe_cache = {}


def dirty_tracking_probe():
    """(True, description) if this process can track dirty pages with userfaultfd
    write protection (WP_ASYNC) and PAGEMAP_SCAN, else (False, what the kernel refused)."""
    cdef const char *failed = NULL
    cdef int rc, err
    if "result" in _probe_cache:
        return _probe_cache["result"]
    rc = dart_delta_dirty_probe(&failed)
    err = errno
    release = os.uname().release
    if rc == 0:
        result = (True, f"userfaultfd WP_ASYNC + PAGEMAP_SCAN work on Linux {release}")
    else:
        step = failed.decode() if failed != NULL else "probe"
        name = __import__("errno").errorcode.get(err, str(err))
        result = (False, f"{step} failed with {name} ({os.strerror(err)}) on "
                         f"{os.uname().sysname} {release}; dirty-page tracking needs Linux "
                         ">= 6.7 with userfaultfd allowed (vm.unprivileged_userfaultfd, "
                         "seccomp filters of containers)")
    _probe_cache["result"] = result
    return result


cdef class DirtyTracker:
    """Kernel dirty-page tracking of one buffer. Holds the buffer (so its memory cannot
    be freed or resized) until close(). With verify=True it also keeps a fingerprint per
    chunk and re-hashes only the chunks on written pages, reporting those whose bytes
    changed: exact chunks at the price of one hashing pass on the first call."""
    cdef dart_delta_dirty t
    cdef Py_buffer view
    cdef bint have_view
    cdef readonly size_t nbytes
    cdef readonly size_t chunk_size
    cdef readonly size_t nchunks
    cdef readonly bint primed
    cdef readonly bint verify
    cdef size_t *idx
    cdef uint8_t *flags
    cdef uint64_t *fps

    def __cinit__(self, buffer, Py_ssize_t chunk_size=1 << 20, bint verify=False):
        cdef int rc, err
        self.t.uffd = -1
        self.verify = verify
        if chunk_size <= 0:
            raise DeltaError(f"chunk_size must be a positive number of bytes, not {chunk_size}")
        _acquire(buffer, &self.view, False, "buffer")
        self.have_view = True
        self.nbytes = self.view.len
        self.chunk_size = chunk_size
        self.nchunks = dart_delta_chunk_count(self.nbytes, chunk_size)
        self.idx = <size_t *>malloc(max(self.nchunks, 1) * sizeof(size_t))
        self.flags = <uint8_t *>malloc(max(self.nchunks, 1))
        if self.idx == NULL or self.flags == NULL:
            raise MemoryError()
        if verify:
            self.fps = <uint64_t *>malloc(max(self.nchunks, 1) * sizeof(uint64_t))
            if self.fps == NULL:
                raise MemoryError()
        if self.nbytes == 0:
            return  # nothing to protect; changed() is always empty after the first call
        with nogil:
            rc = dart_delta_dirty_open(&self.t, self.view.buf, self.nbytes)
            err = errno
        if rc < 0:
            step = self.t.failed.decode() if self.t.failed != NULL else "open"
            name = __import__("errno").errorcode.get(err, str(err))
            self._release()
            raise DeltaError(
                f"cannot track dirty pages of this {self.nbytes}-byte buffer: {step} failed "
                f"with {name} ({os.strerror(err)}); EINVAL: the memory is not anonymous or "
                "shmem (a file mapping), EBUSY: another tracker holds its pages. Use "
                "ChunkTracker for it")

    cdef _release(self):
        dart_delta_dirty_close(&self.t)
        if self.have_view:
            PyBuffer_Release(&self.view)
            self.have_view = False

    def __dealloc__(self):
        self._release()
        free(self.idx)
        free(self.flags)
        free(self.fps)

    def close(self):
        """Stop tracking: lift the write protection and let go of the buffer."""
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return not self.have_view

    cdef _check_same(self, Py_buffer *other):
        if other.buf != self.view.buf or other.len != self.view.len:
            raise BufferMovedError(
                f"the buffer passed ({other.len} bytes at {<uintptr_t>other.buf:#x}) "
                f"is not the one tracked ({self.view.len} bytes at "
                f"{<uintptr_t>self.view.buf:#x}): it was resized or re-allocated; "
                "start a new tracker for it")

    cdef size_t _scan(self, buffer) except? 0:
        cdef long long rc
        cdef size_t i, n = 0
        cdef int err
        cdef Py_buffer other
        if not self.have_view:
            raise DeltaError("this DirtyTracker is closed")
        if buffer is not None:
            _acquire(buffer, &other, False, "buffer")
            try:
                self._check_same(&other)
            finally:
                PyBuffer_Release(&other)
        if self.nbytes == 0:
            self.primed = True
            return 0
        with nogil:
            rc = dart_delta_dirty_scan(&self.t)
            err = errno
        if rc == DART_DELTA_ESYS:
            step = self.t.failed.decode() if self.t.failed != NULL else "scan"
            raise DeltaError(f"{step} failed with {os.strerror(err)} (errno {err}); the "
                             "buffer's pages are no longer tracked: start a ChunkTracker")
        if rc < 0:
            _raise_code(rc, "scanning dirty pages")
        if not self.primed:
            if self.verify:
                with nogil:
                    dart_delta_hash_chunks(self.view.buf, self.nbytes, self.chunk_size,
                                           self.fps, 1)
            for i in range(self.nchunks):
                self.idx[i] = i
            self.primed = True
            return self.nchunks
        dart_delta_dirty_mark_chunks(&self.t, self.view.buf, self.nbytes, self.chunk_size,
                                     self.flags)
        if self.verify:
            with nogil:
                self._verify()
        for i in range(self.nchunks):
            if self.flags[i]:
                self.idx[n] = i
                n += 1
        return n

    cdef void _verify(self) noexcept nogil:
        # keep only the written chunks whose bytes really differ: drops writes of equal
        # values and chunks that merely share a page with a written one
        cdef size_t i, off, n
        cdef uint64_t h
        for i in range(self.nchunks):
            if self.flags[i]:
                off = i * self.chunk_size
                n = self.chunk_size if self.nbytes - off > self.chunk_size else self.nbytes - off
                h = dart_delta_hash(<const uint8_t *>self.view.buf + off, n)
                if h == self.fps[i]:
                    self.flags[i] = 0
                else:
                    self.fps[i] = h

    def changed(self, buffer=None):
        """Indexes of the chunks with a page written since the last call (all of them on
        the first call); the pages are protected again. buffer, if given, must be the
        tracked one (checked: address and size)."""
        cdef size_t i, n = self._scan(buffer)
        return [self.idx[i] for i in range(n)]

    def written_ranges(self):
        """(offset, length) of the page ranges the last call found written, clipped to
        the buffer."""
        cdef size_t k
        cdef uintptr_t a = <uintptr_t>self.view.buf, b = a + self.nbytes, s, e
        out = []
        for k in range(self.t.nranges):
            s = max(<uintptr_t>self.t.ranges[2 * k], a)
            e = min(<uintptr_t>self.t.ranges[2 * k + 1], b)
            if s < e:
                out.append((s - a, e - s))
        return out

    def copy_changed(self, buffer, out):
        """Like changed() (buffer may be None), and copies each changed chunk into the writable buffer out,
        packed in order; returns [(chunk index, offset, length)]. The pages are protected
        again before the copy, so a write racing with it shows up in the next call."""
        cdef Py_buffer oview
        cdef long long rc
        cdef size_t i, n, off
        _acquire(out, &oview, True, "out")
        try:
            n = self._scan(buffer)
            with nogil:
                rc = dart_delta_copy_chunks(self.view.buf, self.nbytes, self.chunk_size,
                                            self.idx, n, oview.buf, oview.len, NULL)
            if rc == DART_DELTA_ENOSPC:
                # the pages were protected again already: keep them reported next time
                self.primed = False
                raise DeltaError(f"out has {oview.len} bytes, too small for the changed "
                                 f"chunks (up to {self.nbytes} bytes); the next call reports "
                                 "every chunk")
            if rc < 0:
                _raise_code(rc, "copying changed chunks")
            result = []
            for i in range(n):
                off = self.idx[i] * self.chunk_size
                result.append((self.idx[i], off, min(self.chunk_size, self.nbytes - off)))
            return result
        finally:
            PyBuffer_Release(&oview)

    cdef _check_copy(self, Py_buffer *shadow, str what):
        if not self.have_view:
            raise DeltaError(f"this DirtyTracker is closed; {what} needs an open one")
        if self.verify:
            raise DeltaError(f"{what} is not for a verify=True tracker (its fingerprints would "
                             "go stale); use DirtyTracker(buffer, verify=False)")
        if <size_t>shadow.len != self.nbytes:
            raise DeltaError(f"the shadow has {shadow.len} bytes but the tracked buffer has "
                             f"{self.nbytes}; pass a shadow of exactly the buffer's size")

    cdef _raise_copy(self, long long rc, int err, str what):
        if rc == DART_DELTA_ESYS:
            step = self.t.failed.decode() if self.t.failed != NULL else what
            raise DeltaError(f"{what}: {step} failed with {os.strerror(err)} (errno {err}); the "
                             "buffer's pages are no longer tracked: close this tracker and "
                             "copy the whole shadow instead")
        _raise_code(rc, what)

    def save_written(self, shadow):
        """Copy the pages written since the last call into the same offsets of shadow (a
        writable buffer of the tracked buffer's size), after protecting them again, with
        the GIL released; returns the bytes copied. written_ranges() then lists them. A
        write racing with the copy is reported by the next call."""
        cdef Py_buffer sview
        cdef long long rc = 0
        cdef int err = 0
        _acquire(shadow, &sview, True, "shadow")
        try:
            self._check_copy(&sview, "save_written")
            if self.nbytes:
                with nogil:
                    rc = dart_delta_dirty_save(&self.t, self.view.buf, self.nbytes, sview.buf)
                    err = errno
            if rc < 0:
                self._raise_copy(rc, err, "saving written pages")
            self.primed = True
            return rc
        finally:
            PyBuffer_Release(&sview)

    def restore_written(self, buffer, shadow, bint compare=True):
        """The rollback: copy the pages written since the last call back from shadow (a
        buffer of the tracked buffer's size) into buffer (the tracked one, writable),
        with the GIL released, then protect them again; returns the bytes copied.
        written_ranges() then lists the restored ranges. The pages are listed without
        protection and protected after the copy, so the copy takes no write fault. A page
        another thread writes meanwhile stays reported for the next call: one first
        written during the restore is unprotected again after the walk, and one written
        after its copy is found by comparing the restored pages with the shadow.
        compare=False skips that comparison (about half the cost): for a caller that
        knows no other thread can write the buffer meanwhile."""
        cdef Py_buffer bview, sview
        cdef long long rc = 0
        cdef int err = 0
        _acquire(buffer, &bview, True, "buffer")
        try:
            _acquire(shadow, &sview, False, "shadow")
            try:
                self._check_copy(&sview, "restore_written")
                self._check_same(&bview)
                if self.nbytes:
                    with nogil:
                        rc = dart_delta_dirty_restore(&self.t, bview.buf, self.nbytes, sview.buf,
                                                      compare)
                        err = errno
                if rc < 0:
                    self._raise_copy(rc, err, "restoring written pages")
                self.primed = True
                return rc
            finally:
                PyBuffer_Release(&sview)
        finally:
            PyBuffer_Release(&bview)
