"""How an object's bytes lie in a store, whatever the backend: a 14-byte header
(magic, codec, raw length) and the payload, raw or zstd. An object's id is the
xxh3-128 of its raw bytes, checked on every read.

Compression is adaptive: a 256 KiB sample is compressed first, and zstd is kept
only if it shrinks the sample below 0.9 of its size (random float32 weights
barely compress; zeros and text do).
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import numpy as np
import xxhash
import zstandard

from dart.errors import CorruptObjectError, StoreError

#: Object header: magic, codec byte, little-endian raw length.
MAGIC = b"DART\x01"
_HEADER = struct.Struct("<5sBQ")
HEADER_SIZE = _HEADER.size  # 14
CODEC_RAW = 0
CODEC_ZSTD = 1

SAMPLE_SIZE = 256 * 1024
MIN_COMPRESS_SIZE = 4 * 1024
COMPRESS_RATIO = 0.9
ZSTD_LEVEL = 1



def object_id(data: bytes | memoryview) -> str:
    """The id of an object: xxh3_128 hex digest of its raw bytes."""
    return xxhash.xxh3_128_hexdigest(data)


def byte_view(data: Any) -> memoryview:
    """A flat unsigned-byte view of any buffer (bytes, bytearray, memoryview, array)."""
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def encode(view: memoryview) -> list:
    """The chunks to store for raw bytes ``view``: header, then payload."""
    codec, payload = CODEC_RAW, view
    if view.nbytes > MIN_COMPRESS_SIZE:
        sample = view[:SAMPLE_SIZE]
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        squeezed = compressor.compress(sample)
        if len(squeezed) < COMPRESS_RATIO * sample.nbytes:
            if sample.nbytes < view.nbytes:
                squeezed = compressor.compress(view)
            if len(squeezed) < view.nbytes:
                codec, payload = CODEC_ZSTD, squeezed
    return [_HEADER.pack(MAGIC, codec, view.nbytes), payload]


def read_header(f: BinaryIO, where: str) -> tuple[int, int]:
    """(codec, raw length) from the start of an object."""
    header = f.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE or header[:5] != MAGIC:
        raise CorruptObjectError(f"object {where} has a bad or truncated header", next_step="damaged")
    _, codec, length = _HEADER.unpack(header)
    return codec, length


def _check_length(f: BinaryIO, codec: int, length: int, where: str) -> None:
    """Refuse a header whose length the payload cannot have (before allocating it)."""
    start = f.tell()
    payload = f.seek(0, 2) - start
    if codec == CODEC_RAW:
        ok = payload == length
    elif codec == CODEC_ZSTD:
        f.seek(start)
        try:
            ok = zstandard.frame_content_size(f.read(18)) == length
        except zstandard.ZstdError:
            ok = False
    else:
        raise CorruptObjectError(f"object {where} has unknown codec {codec}", next_step="damaged")
    f.seek(start)
    if not ok:
        raise CorruptObjectError(
            f"object {where} is truncated or its header is damaged ({payload} bytes of payload for "
            f"{length} bytes of data)",
            next_step="damaged",
        )


def decode(f: BinaryIO, oid: str, where: str, allocate=bytearray) -> bytearray:
    """The raw bytes of object ``oid`` read from ``f`` (at its start) into a new
    writable buffer (``allocate(length)``), verified against the id. Raw payloads
    are read straight into it (no extra copy)."""
    codec, length = read_header(f, where)
    _check_length(f, codec, length, where)
    data = allocate(length)
    view = memoryview(data)
    got = 0
    try:
        if codec == CODEC_RAW:
            while got < length:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        elif codec == CODEC_ZSTD:
            with zstandard.ZstdDecompressor().stream_reader(f, closefd=False) as reader:
                while got < length:
                    n = reader.readinto(view[got:])
                    if not n:
                        break
                    got += n
        else:
            raise CorruptObjectError(f"object {where} has unknown codec {codec}", next_step="damaged")
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"object {where} cannot be decompressed ({exc})", next_step="damaged") from exc
    except OSError as exc:
        raise StoreError(f"cannot read object {where}: {exc.strerror or exc}") from exc
    if got != length:
        raise CorruptObjectError(f"object {where} holds {got} bytes, its header says {length}", next_step="damaged")
    if object_id(view) != oid:
        raise CorruptObjectError(f"object {where} failed its checksum", next_step="damaged")
    return data


# -- patches: a new version of a byte string against the previous one ------------

#: Versions longer than this are not patched (the window would pass zstd's default
#: decoding limit of 2^27 bytes).
PATCH_MAX = 48 << 20


def _patch_window(old_size: int, new_size: int) -> int:
    return max(20, (old_size + new_size).bit_length())


def make_patch(old, new) -> bytes:
    """``new`` as zstd with ``old`` as its dictionary: the bytes they share cost a
    few bytes per match (an object graph re-pickled with 1 % of it changed: the
    patch is about the size of the changed part). The hash table is sized to
    ``old`` so that matches anywhere in it are found; fast strategy, one probe."""
    log = min(24, max(16, len(old).bit_length() - 1))
    params = zstandard.ZstdCompressionParameters(
        window_log=_patch_window(len(old), len(new)), hash_log=log, chain_log=log, search_log=1, min_match=6,
        strategy=zstandard.STRATEGY_FAST,
    )
    base = zstandard.ZstdCompressionDict(bytes(old), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(dict_data=base, compression_params=params).compress(new)


def apply_patch(old, patch, where: str) -> bytes:
    """The version ``make_patch(old, new)`` was made from."""
    base = zstandard.ZstdCompressionDict(bytes(old), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    try:
        return zstandard.ZstdDecompressor(dict_data=base, max_window_size=1 << 27).decompress(patch)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"{where} cannot be rebuilt from its patch ({exc})", next_step="damaged") from exc


# -- XOR deltas: a new version of a numeric buffer against the previous one --------
#
# A training step changes every float of a tensor a little: the sign and exponent
# bits (the high byte of each item) rarely change, the low mantissa bytes always do.
# XOR with the previous version zeroes what did not change; splitting the result
# into byte planes (every item's byte 0, then every byte 1, ...) puts the zeros
# together where zstd finds them (docs/design.md, "XOR delta").

#: XOR delta header: magic, item size (the number of byte planes), delta length;
#: then per plane and for the tail (bytes past the last whole item): how it is
#: stored (raw or zstd) and its stored length; then the planes and the tail.
XOR_MAGIC = b"DXOR1"
_XOR_HEADER = struct.Struct("<5sBQ")
_XOR_PLANE = struct.Struct("<BQ")
#: Planes of at least this many bytes are compressed with two zstd threads.
XOR_THREADED = 8 << 20
#: A plane is compressed only if a sample of it shrinks below this share: the low
#: mantissa bytes of a float update are noise, storing them costs nothing to decide.
XOR_PLANE_RATIO = 0.95
_XOR_SAMPLE = 64 * 1024


def _as_uint8(data) -> np.ndarray:
    return np.frombuffer(byte_view(data), dtype=np.uint8)


def _squeeze(plane: np.ndarray, level: int) -> tuple[int, bytes | np.ndarray]:
    """(codec, bytes) of one plane: zstd if a sample says it pays, else raw."""
    if len(plane) == 0:
        return CODEC_RAW, plane
    at = max(0, (len(plane) - _XOR_SAMPLE) // 2)
    sample = plane[at : at + _XOR_SAMPLE]
    if len(zstandard.ZstdCompressor(level=level).compress(sample)) >= XOR_PLANE_RATIO * len(sample):
        return CODEC_RAW, plane
    threads = 2 if len(plane) >= XOR_THREADED else 0
    squeezed = zstandard.ZstdCompressor(level=level, threads=threads, write_content_size=True).compress(plane)
    return (CODEC_ZSTD, squeezed) if len(squeezed) < len(plane) else (CODEC_RAW, plane)


def xor_delta(new, old, itemsize: int, level: int = ZSTD_LEVEL) -> bytes:
    """``new`` as a delta on ``old`` (same length): XOR of the two, split into byte
    planes of ``itemsize`` (every item's byte 0, then every byte 1, ...), each plane
    zstd-compressed where that pays. ``apply_xor_delta`` inverts it exactly, whatever
    the bytes are (NaN, infinities, denormals: only bits are moved)."""
    return b"".join(xor_delta_parts(new, old, itemsize, level))


def xor_delta_parts(new, old, itemsize: int, level: int = ZSTD_LEVEL) -> list:
    """``xor_delta`` as the list of its pieces (not joined: the caller joins them
    with its own)."""
    a, b = _as_uint8(new), _as_uint8(old)
    if len(a) != len(b):
        raise ValueError(f"an XOR delta needs versions of one length, not {len(a)} and {len(b)} bytes")
    if not 1 <= itemsize <= 255:
        raise ValueError(f"item size {itemsize} is not between 1 and 255")
    diff = np.bitwise_xor(a, b)
    whole = len(diff) - len(diff) % itemsize
    items = diff[:whole].reshape(-1, itemsize)
    pieces = [_squeeze(np.ascontiguousarray(items[:, i]), level) for i in range(itemsize)]
    pieces.append((CODEC_RAW, diff[whole:]))
    table = b"".join(_XOR_PLANE.pack(codec, len(body)) for codec, body in pieces)
    return [_XOR_HEADER.pack(XOR_MAGIC, itemsize, len(a)), table, *(memoryview(body) for _, body in pieces)]


def _xor_layout(view: memoryview) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(item size, length, [(codec, start, stored length)] of the planes and tail)."""
    if view.nbytes < _XOR_HEADER.size or bytes(view[:5]) != XOR_MAGIC:
        raise CorruptObjectError("an XOR delta has a bad or truncated header", next_step="damaged")
    _, itemsize, length = _XOR_HEADER.unpack(view[: _XOR_HEADER.size])
    at = _XOR_HEADER.size + (itemsize + 1) * _XOR_PLANE.size
    if itemsize < 1 or at > view.nbytes:
        raise CorruptObjectError("an XOR delta has a bad or truncated header", next_step="damaged")
    planes = []
    for i in range(itemsize + 1):
        codec, stored = _XOR_PLANE.unpack_from(view, _XOR_HEADER.size + i * _XOR_PLANE.size)
        planes.append((codec, at, stored))
        at += stored
    if at != view.nbytes:
        raise CorruptObjectError(f"an XOR delta holds {view.nbytes} bytes, its header says {at}", next_step="damaged")
    return itemsize, length, planes


def xor_delta_length(delta) -> int:
    """The length of the versions an XOR delta is between (its header, checked)."""
    return _xor_layout(byte_view(delta))[1]


def apply_xor_delta(target, delta, where: str) -> None:
    """Turn ``target`` (a writable buffer holding the old version) into the new one."""
    out = _as_uint8(target)
    view = byte_view(delta)
    try:
        itemsize, length, planes = _xor_layout(view)
    except CorruptObjectError as exc:
        raise CorruptObjectError(f"{where}: {exc.message}", next_step="damaged") from None
    if length != len(out):
        raise CorruptObjectError(f"{where}: its XOR delta is for {length} bytes, not {len(out)}", next_step="damaged")
    whole = length - length % itemsize
    sizes = [whole // itemsize] * itemsize + [length - whole]
    diff = np.empty(length, dtype=np.uint8)
    items = diff[:whole].reshape(-1, itemsize)
    for i, ((codec, at, stored), size) in enumerate(zip(planes, sizes)):
        body = view[at : at + stored]
        if codec == CODEC_ZSTD:
            try:
                body = zstandard.ZstdDecompressor().decompress(body, max_output_size=size)
            except zstandard.ZstdError as exc:
                raise CorruptObjectError(f"{where} cannot be rebuilt from its XOR delta ({exc})",
                                         next_step="damaged") from exc
        elif codec != CODEC_RAW:
            raise CorruptObjectError(f"{where}: its XOR delta has a plane of unknown codec {codec}", next_step="damaged")
        if len(body) != size:
            raise CorruptObjectError(f"{where}: plane {i} of its XOR delta holds {len(body)} bytes, not {size}",
                                     next_step="damaged")
        plane = np.frombuffer(body, dtype=np.uint8)
        if i < itemsize:
            items[:, i] = plane
        else:
            diff[whole:] = plane
    np.bitwise_xor(out, diff, out=out)
