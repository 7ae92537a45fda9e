"""Pods: the program's state cut into separately pickled, content-addressed pieces.

The cut is one pod per root: each global variable, each local of a frame on the
path, each loop iterator, and the hidden state (random generators). A pod is one
pickle stream plus the out-of-band buffers it refers to. Pods are pickled in a
fixed order (globals in definition order, then frame locals, iterators, hidden),
and an object that an earlier pod already holds is not pickled again: the later pod
stores a reference ``(pod name, memo index)`` instead, resolved on load against the
earlier pod's unpickler memo. So identity and aliasing survive across pods
(``b = a``, a model shared by a trainer and a global, an optimizer holding the
model's parameters), and a change to one object changes only the pod that owns it
(the first one to reach it) plus pods whose references moved.

Only objects whose identity can matter are shared this way: atoms (numbers,
strings, bytes), tuples, classes and modules are cheaper to repeat and keep a pod's
bytes independent of its neighbours.
"""

from __future__ import annotations

import gc
import io
import pickle
import sys
import types
from dataclasses import dataclass, field

from . import pickler

#: Objects never shared across pods (repeating them costs less than a reference).
_NOT_SHARED = (
    str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range,
    type, types.ModuleType, types.BuiltinFunctionType, types.CodeType, pickle.PickleBuffer,
)


def _shareable(obj) -> bool:
    """Does identity matter for ``obj`` across pods? Not for atoms, nor for what
    pickle saves by name (functions of a module, NumPy and torch dtypes): a
    reference to the pod that first held one would make loading any pod that
    uses it load that pod too (and its buffers)."""
    if isinstance(obj, _NOT_SHARED):
        return False
    if isinstance(obj, types.FunctionType):
        return "<locals>" in obj.__qualname__ or "<lambda>" in obj.__qualname__
    kind = type(obj).__module__
    if kind.startswith("numpy"):
        numpy = sys.modules["numpy"]
        return not isinstance(obj, numpy.dtype)
    if kind == "torch":
        torch = sys.modules["torch"]
        return not isinstance(obj, (torch.dtype, torch.device, torch.layout, torch.memory_format))
    return True


@dataclass
class Pod:
    name: str
    stream: bytes
    buffers: list = field(default_factory=list)  #: pickle.PickleBuffer, not copied
    deps: list = field(default_factory=list)  #: names of earlier pods this one refers to


class _PlainPodPickler(pickler.StatePickler):
    def __init__(self, file, buffer_callback, main_module, shared, storages: dict):
        super().__init__(file, buffer_callback=buffer_callback, main_module=main_module)
        self._storages = storages  # one proxy per torch storage for the whole commit


class _PodPickler(_PlainPodPickler):
    def __init__(self, file, buffer_callback, main_module, shared: dict, storages: dict):
        super().__init__(file, buffer_callback, main_module, shared, storages)
        self._shared = shared
        self.deps: set[str] = set()

    def persistent_id(self, obj):
        ref = self._shared.get(id(obj))
        if ref is not None:
            self.deps.add(ref[0])
        return ref


def cut(roots: list[tuple[str, object]], main_module=None, fast: bool = True) -> tuple[list[Pod], list]:
    """Pickle each (name, value) of ``roots`` as one pod, in order. Returns the pods
    and a keep-alive list the caller must hold until it has copied the buffers (the
    picklers' memos own temporaries whose ids the sharing table relies on).

    Each pod is first pickled by the C pickler alone, with no Python callback per
    object; only if its memo then holds an object an earlier pod already holds is
    it pickled again with references to those pods. The result is the same either
    way (a callback that finds nothing writes nothing), and a large pod of its own
    objects costs about one ``pickle.dumps`` and a copy of its memo. ``fast=False``
    looks every object up from the start (the reference the tests compare with)."""
    collecting = gc.isenabled()
    gc.disable()  # the memo copies allocate a tuple per object: no collections over them meanwhile
    try:
        return _cut(roots, main_module, fast)
    finally:
        if collecting:
            gc.enable()


def _cut(roots, main_module, fast: bool) -> tuple[list[Pod], list]:
    storages: dict = {}
    keep = []
    owners: list[tuple[str, dict]] = []  # (pod name, memo copy) of each pod so far
    pods = []
    for name, value in roots:
        buffers: list[pickle.PickleBuffer] = []
        stream, memo, deps = _dump(value, buffers, main_module, None, storages)
        shared = _held_before(memo, owners) if fast else _all_held(owners)
        if shared or not fast:
            buffers.clear()
            keep.append(memo)  # its temporaries stay alive: their ids stay unique
            stream, memo, deps = _dump(value, buffers, main_module, shared, storages)
        keep.append(memo)
        owners.append((name, memo))
        pods.append(Pod(name, stream, buffers, deps))
    return pods, keep


def _held_before(memo: dict, owners: list[tuple[str, dict]]) -> dict[int, tuple[str, int]]:
    """id -> (pod name, memo index) of the objects in ``memo`` (a pod pickled on
    its own) that an earlier pod already holds, atoms left out. Earlier pods hold
    no shareable object twice (a later pod refers to the first holder's), so each
    is found once. Set operations on the memos' keys keep this at C speed."""
    shared: dict[int, tuple[str, int]] = {}
    for owner, held in owners:
        if memo.keys().isdisjoint(held.keys()):  # iterates the smaller of the two
            continue
        for oid in memo.keys() & held.keys():
            index, obj = held[oid]
            if _shareable(obj):
                shared.setdefault(oid, (owner, index))
    return shared


def _all_held(owners: list[tuple[str, dict]]) -> dict[int, tuple[str, int]]:
    """Every shareable object of the pods so far (the reference: what a lookup of
    every object consults)."""
    shared: dict[int, tuple[str, int]] = {}
    for owner, held in owners:
        for oid, (index, obj) in held.items():
            if _shareable(obj):
                shared.setdefault(oid, (owner, index))
    return shared


def _dump(value, buffers: list, main_module, shared: dict | None, storages: dict) -> tuple[bytes, dict, list]:
    """(stream, memo copy, names of the pods it refers to) of one pod; with
    ``shared`` None, no object is looked up (the fast C path)."""

    def out_of_band(buffer) -> bool:
        if buffer.raw().nbytes < pickler.OUT_OF_BAND_MIN:
            return True
        buffers.append(buffer)
        return False

    stream = io.BytesIO()
    cls = _PlainPodPickler if shared is None else _PodPickler
    p = cls(stream, out_of_band, main_module, shared, storages)
    p.dump(value)
    return stream.getvalue(), p.memo.copy(), sorted(getattr(p, "deps", ()))


class _PodUnpickler(pickler.StateUnpickler):
    def __init__(self, file, buffers, main_namespace, memos: dict):
        super().__init__(file, buffers=buffers, main_namespace=main_namespace)
        self._memos = memos

    def persistent_load(self, pid):
        try:
            name, index = pid
            return self._memos[name][index]
        except (KeyError, TypeError, ValueError):
            raise pickle.UnpicklingError(f"a saved object refers to {pid!r}, which is not in this commit") from None


def assemble(pods, main_namespace: dict | None = None, memos: dict | None = None) -> dict:
    """Unpickle ``pods`` (iterable of (name, stream, buffers), each after the pods it
    depends on); returns {name: value}. ``memos`` (pod name -> memo) carries the
    pods loaded by an earlier call, so objects they share stay shared."""
    memos = {} if memos is None else memos
    values = {}
    for name, stream, buffers in pods:
        if name in memos:
            continue
        u = _PodUnpickler(io.BytesIO(stream), buffers, main_namespace, memos)
        values[name] = u.load()
        memos[name] = u.memo.copy()
    return values
