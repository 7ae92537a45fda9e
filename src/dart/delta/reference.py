"""Pure-Python twins of every native routine in ``dart._delta`` (src/_native/delta.c).

They are slow and obviously right; the tests run the native code and these on the same
inputs and require the same answers. Keep each one a direct transcription of the
contract in delta.h, not of the C code's tricks (threads, SIMD, pointer swaps).
"""

from __future__ import annotations

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_STRIPE = 64
_STRIPES_PER_BLOCK = 16
_P32 = 0x9E3779B1
_P64 = 0x9E3779B185EBCA87


def _splitmix64(seed: int, n: int) -> list[int]:
    out, x = [], seed
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & _M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append(z ^ (z >> 31))
    return out


# the constants of delta.c: splitmix64 of "dartdelt"
K = _splitmix64(0x6461727464656C74, 32)


def as_bytes(obj) -> bytes:
    """The bytes of a buffer in memory order (NumPy arrays of any dtype, including the
    datetime ones that the buffer protocol refuses to describe)."""
    if hasattr(obj, "tobytes") and hasattr(obj, "dtype"):
        return obj.tobytes(order="A")
    return bytes(memoryview(obj).cast("B"))


def _fmix64(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _M64
    return x ^ (x >> 33)


def _stripe(acc: list[int], data: bytes, key: int) -> None:
    for lane in range(8):
        d = int.from_bytes(data[8 * lane : 8 * lane + 8], "little")
        dk = d ^ K[key + lane]
        acc[lane ^ 1] = (acc[lane ^ 1] + d) & _M64
        acc[lane] = (acc[lane] + (dk & _M32) * (dk >> 32)) & _M64


def chunk_hash(data) -> int:
    """The 64-bit fingerprint of ``dart_delta_hash``: 8 lanes; per 64-byte stripe s of a
    16-stripe block, lane l adds lo32(d ^ K[s+l]) * hi32(d ^ K[s+l]) to itself and d to
    lane l ^ 1; after each full block a scramble (xorshift 47, xor K[24+l], * P32); a
    last partial stripe is zero-padded; the length and the lanes are folded at the end."""
    data = as_bytes(data)
    n = len(data)
    acc = [K[16 + lane] for lane in range(8)]
    nstripes = n // _STRIPE
    for i in range(nstripes):
        _stripe(acc, data[i * _STRIPE : (i + 1) * _STRIPE], i % _STRIPES_PER_BLOCK)
        if i % _STRIPES_PER_BLOCK == _STRIPES_PER_BLOCK - 1:
            for lane in range(8):
                a = acc[lane]
                a ^= a >> 47
                a ^= K[24 + lane]
                acc[lane] = (a * _P32) & _M64
    if n % _STRIPE:
        last = data[nstripes * _STRIPE :].ljust(_STRIPE, b"\0")
        _stripe(acc, last, nstripes % _STRIPES_PER_BLOCK)
    h = (n * _P64) & _M64
    for lane in range(8):
        h ^= _fmix64(acc[lane] ^ K[8 + lane])
        h = ((((h << 27) | (h >> 37)) & _M64) * _P64) & _M64
    return _fmix64(h)


def chunk_count(nbytes: int, chunk_size: int) -> int:
    return -(-nbytes // chunk_size)


def _chunks(data: bytes, chunk_size: int) -> list[bytes]:
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


def hash_chunks(data, chunk_size: int) -> list[int]:
    """``dart_delta_hash_chunks``: the fingerprint of every chunk."""
    return [chunk_hash(c) for c in _chunks(as_bytes(data), chunk_size)]


def changed_chunks(old, new, chunk_size: int) -> list[int]:
    """Indexes of the chunks whose bytes differ between old and new (same length): what
    every strategy must report (hashing may only add false negatives with probability
    about 2**-64 per chunk; the others are exact). ``dart_delta_compare_chunks``."""
    old = as_bytes(old)
    new = as_bytes(new)
    if len(old) != len(new):
        raise ValueError(f"old has {len(old)} bytes, new has {len(new)}")
    return [i for i, (a, b) in enumerate(zip(_chunks(old, chunk_size), _chunks(new, chunk_size))) if a != b]


def copy_chunks(src, chunk_size: int, indexes) -> bytes:
    """``dart_delta_copy_chunks``: the listed chunks, packed in the order given."""
    data = as_bytes(src)
    return b"".join(data[i * chunk_size : (i + 1) * chunk_size] for i in indexes)


def mark_chunks(ranges, nbytes: int, chunk_size: int) -> list[int]:
    """``dart_delta_dirty_mark_chunks``: chunks of an nbytes buffer that overlap any of
    the (start, end) byte ranges (ranges may extend past the buffer)."""
    hit = set()
    for start, end in ranges:
        start, end = max(start, 0), min(end, nbytes)
        for i in range(start // chunk_size, -(-end // chunk_size)):
            if start < end:
                hit.add(i)
    return sorted(hit)


class ReferenceTracker:
    """The contract of ChunkTracker (any strategy) and DirtyTracker, in Python: keeps a
    copy of the bytes and compares."""

    def __init__(self, nbytes: int, chunk_size: int = 1 << 20):
        self.nbytes, self.chunk_size, self.last = nbytes, chunk_size, None

    def changed(self, buffer) -> list[int]:
        data = as_bytes(buffer)
        if len(data) != self.nbytes:
            raise ValueError(f"buffer has {len(data)} bytes, tracked with {self.nbytes}")
        if self.last is None:
            out = list(range(chunk_count(self.nbytes, self.chunk_size)))
        else:
            out = changed_chunks(self.last, data, self.chunk_size)
        self.last = data
        return out

    def copy_changed(self, buffer) -> tuple[list[tuple[int, int, int]], bytes]:
        idx = self.changed(buffer)
        spans = [(i, i * self.chunk_size, min(self.chunk_size, self.nbytes - i * self.chunk_size)) for i in idx]
        return spans, copy_chunks(self.last, self.chunk_size, idx)
