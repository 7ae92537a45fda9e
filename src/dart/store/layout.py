"""How a commit's state lies in the store (format 2), and how it is read back.

A commit record's ``state`` is ``{"format": 2, "index": oid, "objects": [...]}``:
``objects`` lists every object the commit needs (so a copy or a collector knows
them without parsing). The index object is JSON::

    {"objects": [oid, ...],                      # numbered; rows refer to them by number
     "pods": [[name, obj, offset, length, [dep names], [buffer numbers], xxh3-128], ...],
     "buffers": [[nbytes, extents or manifest oid], ...]}

A pod is one pickle stream (``dart.capture.pods``), packed with the other pods that
changed at that commit into one object. A buffer is covered by extents
``[start, length, obj, offset, xxh3-64 or 0]``; a buffer with many extents keeps
them in a manifest object of its own (binary), so an unchanged sparse buffer's
manifest is not written again. Extent data sit in packs: objects made of the
changed chunks of one commit, raw or zstd as the store decided.

A large pod that changed a little since the last commit is stored as a patch on
its previous version (format 3): its row points at the whole version the chain
starts from, and ``"patches": {name: [[obj, offset, length], ...]}`` lists the
patches to apply in order (``codec.make_patch``, zstd with the previous version as
dictionary); the rebuilt stream is checked against the row's hash.

A numeric buffer rewritten everywhere at each commit (a tensor after a training
step) may be stored as XOR deltas on an earlier version (format 4,
``flush/xordelta.py``): its row is ``[nbytes, extents, layers]``, the extents give
the whole version the chain starts from and each layer (one per commit, oldest
first, at most 8) is ``[[start, length, obj, offset, delta length, xxh3-64], ...]``:
bytes ``offset..offset + delta length`` of the object are a ``codec.xor_delta``
turning ``start..start + length`` of the buffer into its next version, whose
hash is the last field (so a delta is read by a range read, checked by the hash
of what it gives).

Reading: a pack that is compressed, or of which nearly all bytes are needed, is read
whole and checked against its id; a buffer that is one whole extent of it is a
slice of it (no copy). Otherwise each extent is read where it lies and checked
against its own hash.
"""

from __future__ import annotations

import json
import mmap
import struct

import numpy as np
import xxhash

from dart.errors import CorruptObjectError, StoreError

from .codec import apply_patch, apply_xor_delta
from .sign import matches

FORMAT = 2
#: Format of a commit with patched pods (``"patches"`` in its index); a reader of
#: format 2 alone would take a patched pod's base for the pod, so it must refuse.
FORMAT_PATCHED = 3
#: Format of a commit with buffers stored as XOR deltas (rows with layers); a reader
#: of format 3 would take the chain's base for the buffer, so it must refuse.
FORMAT_XOR = 4
#: At most this many XOR delta layers on one whole version (a load applies them all).
XOR_CHAIN = 8
FORMATS = (FORMAT, FORMAT_PATCHED, FORMAT_XOR)
INLINE_EXTENTS = 64  #: more extents than this go to a manifest object
#: A raw object of which at least this share is needed is read whole (one read,
#: one hash); below it, only the needed extents are read, each checked on its own.
WHOLE_READ = 0.9
_MANIFEST_MAGIC = b"DARTMF1\n"


#: Buffers at least this large are restored into fresh anonymous memory, not a
#: bytearray: a bytearray is zero-filled first, a pass over the bytes as long as
#: reading them (a resume of 240 MiB of model + Adam: 0.31 s -> 0.19 s here).
FRESH_MIN = 1 << 20


def fresh_buffer(nbytes: int):
    """A writable buffer of ``nbytes`` for restored bytes, not zero-filled first
    (an anonymous mapping: its pages appear as the read fills them)."""
    if nbytes < FRESH_MIN:
        return bytearray(nbytes)
    return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def encode_manifest(rows: list[list], oids: list[str]) -> bytes:
    """Extent rows [start, length, obj number, offset, hash] -> manifest bytes."""
    header = json.dumps({"objects": oids}).encode() + b"\n"
    table = np.array(rows, dtype=np.uint64).reshape(-1, 5)
    return _MANIFEST_MAGIC + struct.pack("<I", len(header)) + header + table.astype("<u8").tobytes()


def decode_manifest(data: bytes, oid: str) -> tuple[list[str], np.ndarray]:
    try:
        if data[: len(_MANIFEST_MAGIC)] != _MANIFEST_MAGIC:
            raise ValueError("bad magic")
        at = len(_MANIFEST_MAGIC)
        (n,) = struct.unpack_from("<I", data, at)
        oids = json.loads(data[at + 4 : at + 4 + n])["objects"]
        table = np.frombuffer(data, dtype="<u8", offset=at + 4 + n).reshape(-1, 5)
    except (ValueError, KeyError, struct.error) as exc:
        raise CorruptObjectError(f"manifest object {oid} cannot be read ({exc})", next_step="damaged") from exc
    return oids, table


class CommitState:
    """The saved state of one commit, read on demand."""

    def __init__(self, store, record):
        self.store = store
        self.record = record
        state = record.state or {}
        self.legacy = "pickle" in state  # written by dart 0.1 (one stream, whole buffers)
        if self.legacy:
            return
        if state.get("format") not in FORMATS:
            raise StoreError(
                f"commit {record.short} was written in state format {state.get('format')!r}, "
                f"which this dart cannot read; use the dart version that wrote it"
            )
        index_bytes = store.get_object(state["index"])
        self.key = getattr(store, "key", None)
        if self.key is not None and not matches(self.key, index_bytes, state.get("index_mac")):
            raise CorruptObjectError(
                f"the index of commit {record.short} does not match its signature (DART_HMAC_KEY): it was "
                "tampered with or signed with another key; refusing it"
            )
        self.index = _json_object(index_bytes, state["index"])
        self.objects = self.index["objects"]
        self.pods = {row[0]: row for row in self.index["pods"]}
        #: pod name -> [[object number, offset, length], ...]: patches to apply, in
        #: order, to the stream the row points at (codec.make_patch)
        self.patches = self.index.get("patches", {})
        self.loaded_buffers: dict[int, memoryview] = {}  #: buffer number -> its bytes, once read
        self._plans: dict[int, tuple] = {}  # buffer number -> (nbytes, oids, extent table)
        #: progress(bytes read, bytes to read) while buffers are read, or None
        self.progress = None

    @property
    def names(self) -> list[str]:
        return list(self.pods)

    def needed(self, names) -> list[str]:
        """``names`` and the pods they refer to, in pickling order."""
        want, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in want:
                continue
            if name not in self.pods:
                raise StoreError(f"commit {self.record.short} has no saved object {name!r}", next_step="damaged")
            want.add(name)
            todo.extend(self.pods[name][4])
        return [n for n in self.pods if n in want]

    def read(self, names=None, loaded=()) -> list[tuple[str, bytes, list]]:
        """[(pod name, pickle stream, buffers)] for ``names`` (default all) and their
        dependencies, in the order they must be unpickled; pods in ``loaded`` are
        left out (the caller has them)."""
        order = [n for n in self.needed(self.names if names is None else names) if n not in loaded]
        wanted_buffers = sorted({b for n in order for b in self.pods[n][5]})
        buffers = self._read_buffers(wanted_buffers)
        streams = self._read_pod_streams(order)
        return [(n, streams[n], [buffers[b] for b in self.pods[n][5]]) for n in order]

    # ------------------------------------------------------------------ pods

    def _read_pod_streams(self, order) -> dict[str, memoryview]:
        blobs: dict[int, bytearray] = {}
        out = {}
        for name in order:
            obj, offset, length = self.pods[name][1:4]
            if obj not in blobs:
                blobs[obj] = self.store.get_object(self.objects[obj])
            out[name] = memoryview(blobs[obj])[offset : offset + length]
            row = self.pods[name]
            if name in self.patches:
                out[name] = self._patched(name, out[name], blobs, row[6])
            if self.key is not None and not matches(self.key, out[name], row[7] if len(row) > 7 else None):
                raise CorruptObjectError(
                    f"saved object {name!r} of commit {self.record.short} does not match its signature "
                    "(DART_HMAC_KEY): it was tampered with; refusing to load it"
                )
        return out

    def _patched(self, name: str, stream, blobs: dict, digest: str) -> memoryview:
        for obj, offset, length in self.patches[name]:
            if obj not in blobs:
                blobs[obj] = self.store.get_object(self.objects[obj])
            stream = apply_patch(stream, memoryview(blobs[obj])[offset : offset + length],
                                 f"saved object {name!r} of commit {self.record.short}")
        if xxhash.xxh3_128_hexdigest(stream) != digest:
            raise CorruptObjectError(
                f"saved object {name!r} of commit {self.record.short} does not match its hash once its "
                "patches are applied",
                next_step="damaged",
            )
        return memoryview(stream)

    # ------------------------------------------------------------------ buffers

    def _extents(self, number: int) -> tuple[int, list[str], np.ndarray]:
        if number in self._plans:  # read once (a manifest is an object of its own)
            return self._plans[number]
        nbytes, spec = self.index["buffers"][number][:2]
        if isinstance(spec, str):
            oids, table = decode_manifest(self.store.get_object(spec), spec)
        else:
            oids, table = self.objects, np.array(spec, dtype=np.uint64).reshape(-1, 5)
        if int(table[:, 1].sum()) != nbytes:
            raise CorruptObjectError(
                f"the extents of buffer {number} of commit {self.record.short} do not cover its "
                f"{nbytes} bytes",
                next_step="damaged",
            )
        self._plans[number] = nbytes, oids, table
        return nbytes, oids, table

    def _read_buffers(self, numbers) -> dict[int, object]:
        plans = {n: self._extents(n) for n in numbers}
        # bytes needed from each object, to choose between reading it whole or in parts
        need: dict[str, int] = {}
        unhashed = set()  # objects holding a piece without its own hash: checked whole
        for nbytes, oids, table in plans.values():
            for start, length, obj, offset, digest in table.tolist():
                need[oids[obj]] = need.get(oids[obj], 0) + length
                if not digest:
                    unhashed.add(oids[obj])
        whole: dict[str, bytearray] = {}
        total, done = sum(need.values()), 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if self.progress is not None:
                self.progress(done, total)

        layers = {n: self.index["buffers"][n][2] for n in numbers if len(self.index["buffers"][n]) > 2}
        for chain in layers.values():  # deltas: read where they lie unless their object is read whole
            for layer in chain:
                for _, _, obj, _, dlen, _ in layer:
                    oid = self._object(obj, number=None)
                    need[oid] = need.get(oid, 0) + dlen
        total = sum(need.values())
        for oid, n in need.items():
            codec, length = self.store.object_header(oid)
            # Read whole what cannot be read in part (compressed, or a piece with no
            # hash of its own) and what is nearly all needed; else only the bytes needed.
            if codec != 0 or oid in unhashed or n >= WHOLE_READ * length or length <= 1 << 20:
                whole[oid] = self.store.read_object(oid, fresh_buffer)
                advance(n)
        out = {}
        for number, (nbytes, oids, table) in plans.items():
            if len(table) == 1 and oids[table[0][2]] in whole and number not in layers:
                start, length, obj, offset, _ = (int(v) for v in table[0])
                out[number] = memoryview(whole[oids[obj]])[offset : offset + length]  # no copy
                continue
            view = memoryview(fresh_buffer(nbytes))
            for start, length, obj, offset, digest in table.tolist():
                oid = oids[obj]
                if oid in whole:
                    view[start : start + length] = memoryview(whole[oid])[offset : offset + length]
                else:
                    self.store.read_object_range(oid, offset, view[start : start + length])
                    if xxhash.xxh3_64_intdigest(view[start : start + length]) != digest:
                        raise CorruptObjectError(
                            f"bytes {offset}..{offset + length} of object {oid} failed their checksum",
                            next_step="damaged",
                        )
                    advance(length)
            if number in layers:
                self._apply_layers(number, view, layers[number], whole, advance)
            out[number] = view
        self.loaded_buffers.update(out)
        return out

    def _object(self, obj, number) -> str:
        if not isinstance(obj, int) or not 0 <= obj < len(self.objects):
            raise CorruptObjectError(f"the index of commit {self.record.short} names object number {obj!r}, "
                                     "which it does not list", next_step="damaged")
        return self.objects[obj]

    def _apply_layers(self, number: int, view: memoryview, chain: list, whole: dict, advance=None) -> None:
        """Turn buffer ``number``'s chain base (in ``view``) into its version at this
        commit, one XOR delta layer at a time, each piece checked against its hash."""
        nbytes = len(view)
        for depth, layer in enumerate(chain, start=1):
            for start, length, obj, offset, dlen, digest in layer:
                oid = self._object(obj, number)
                where = (f"buffer {number} of commit {self.record.short} (bytes {start}..{start + length}, "
                         f"delta {depth} of {len(chain)})")
                size = len(whole[oid]) if oid in whole else self.store.object_header(oid)[1]
                if not (0 <= start and start + length <= nbytes and 0 <= offset and offset + dlen <= size):
                    raise CorruptObjectError(f"{where}: its XOR delta lies outside its object or buffer",
                                             next_step="damaged")
                if oid in whole:
                    delta = memoryview(whole[oid])[offset : offset + dlen]
                else:  # not checked on its own: the result's hash below checks it
                    delta = memoryview(bytearray(dlen))
                    self.store.read_object_range(oid, offset, delta)
                    if advance is not None:
                        advance(dlen)
                piece = view[start : start + length]
                apply_xor_delta(piece, delta, where)
                if xxhash.xxh3_64_intdigest(piece) != digest:
                    raise CorruptObjectError(f"{where} does not match its hash once its XOR delta is applied",
                                             next_step="damaged")

    def layered(self, number: int) -> bool:
        """Whether buffer ``number`` is stored as XOR deltas on an earlier version
        (its ``extents`` are then that version's, not this commit's)."""
        return len(self.index["buffers"][number]) > 2

    def extents(self, number: int) -> tuple[int, list[list]]:
        """(nbytes, [[start, length, object id, offset, xxh3-64 or 0]]) of a buffer."""
        nbytes, oids, table = self._extents(number)
        return nbytes, [[s, n, oids[o], off, h] for s, n, o, off, h in table.tolist()]

    def pod_locations(self) -> dict[str, tuple[str, int, int]]:
        """Content hash -> (object, offset, length) of this commit's pods."""
        return {row[6]: (self.objects[row[1]], row[2], row[3]) for row in self.index["pods"] if row[0] not in self.patches}


def _json_object(data: bytes, oid: str) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptObjectError(f"index object {oid} is not valid JSON ({exc})", next_step="damaged") from exc
    if not isinstance(value, dict) or "pods" not in value:
        raise CorruptObjectError(f"index object {oid} is not a commit index", next_step="damaged")
    return value


def build_index(pods: list, buffers: list, put_object, patches: dict | None = None) -> tuple[dict, list[str], int]:
    """The index of a commit from resolved rows. ``pods``: [name, oid, offset,
    length, deps, bufs, content hash]; ``buffers``: [(nbytes, [[start, length, oid, offset,
    hash]])]; ``patches``: pod name -> [[oid, offset, length]] to apply to the stream
    its row points at. Large extent lists go to manifest objects through ``put_object``.
    Returns (index, every object the commit needs, bytes written for manifests)."""
    objects: list[str] = []
    numbers: dict[str, int] = {}

    def number(oid: str) -> int:
        if oid not in numbers:
            numbers[oid] = len(objects)
            objects.append(oid)
        return numbers[oid]

    pod_rows = [[name, number(oid), off, n, deps, bufs, digest, *signed]
                for name, oid, off, n, deps, bufs, digest, *signed in pods]
    patch_rows = {name: [[number(oid), off, n] for oid, off, n in chain] for name, chain in (patches or {}).items()}
    needed = set(objects)
    written = 0
    buffer_rows = []
    for nbytes, extents, *layers in buffers:
        if len(extents) > INLINE_EXTENTS:
            local: dict[str, int] = {}
            rows = [[s, n, local.setdefault(oid, len(local)), off, h or 0] for s, n, oid, off, h in extents]
            moid, w = put_object(encode_manifest(rows, list(local)))
            written += w
            needed.update(local)
            needed.add(moid)
            buffer_rows.append([nbytes, moid])
        else:
            buffer_rows.append([nbytes, [[s, n, number(oid), off, h or 0] for s, n, oid, off, h in extents]])
        if layers and layers[0]:  # XOR deltas on the extents' version (flush/xordelta.py)
            buffer_rows[-1].append([[[s, n, number(oid), off, dn, h] for s, n, oid, off, dn, h in layer]
                                    for layer in layers[0]])
    needed.update(objects)
    index = {"objects": objects, "pods": pod_rows, "buffers": buffer_rows}
    if patch_rows:
        index["patches"] = patch_rows
    return index, sorted(needed), written


def object_names(record: dict) -> list[str]:
    """Every object a commit record needs (both formats)."""
    state = record.state or {}
    if "pickle" in state:
        return [state["pickle"], *state.get("buffers", [])]
    return [state["index"], *state.get("objects", [])] if "index" in state else []
