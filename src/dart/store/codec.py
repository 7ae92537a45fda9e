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
