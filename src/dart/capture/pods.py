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


def cut(roots: list[tuple[str, object]], main_module=None, fast: bool = True,
        fresh: frozenset[str] = frozenset()) -> tuple[list[Pod], list]:
    """Pickle each (name, value) of ``roots`` as one pod, in order. Returns the pods
    and a keep-alive list the caller must hold until it has copied the buffers (the
    picklers' memos own temporaries whose ids the sharing table relies on).

    Each pod is first pickled by the C pickler alone, with no Python callback per
    object; only if its memo then holds an object an earlier pod already holds is
    it pickled again with references to those pods. The result is the same either
    way (a callback that finds nothing writes nothing), and a large pod of its own
    objects costs about one ``pickle.dumps`` and a copy of its memo. ``fast=False``
    looks every object up from the start (the reference the tests compare with).
    ``fresh`` names roots made at capture time (the random states): no earlier pod
    can hold their objects, so they are not looked up (asking a large pod costs a
    copy of its memo)."""
    collecting = gc.isenabled()
    gc.disable()  # the memo copies allocate a tuple per object: no collections over them meanwhile
    try:
        return _cut(roots, main_module, fast, fresh)
    finally:
        if collecting:
            gc.enable()


def _cut(roots, main_module, fast: bool, fresh: frozenset[str]) -> tuple[list[Pod], list]:
    storages: dict = {}
    keep = []
    owners: list[tuple[str, object]] = []  # (pod name, memo copy or _MemoOracle) of each pod so far
    pods = []
    for name, value in roots:
        buffers: list[pickle.PickleBuffer] = []
        stream, held, deps = _dump(value, buffers, main_module, None, storages, fast)
        if not fast:
            shared = _all_held(owners)
        else:
            shared = {} if name in fresh else _held_before(held, owners)
        if shared or not fast:
            buffers.clear()
            keep.append(held)  # its temporaries stay alive: their ids stay unique
            stream, held, deps = _dump(value, buffers, main_module, shared, storages, fast)
        keep.append(held)
        owners.append((name, held))
        pods.append(Pod(name, stream, buffers, deps))
    return pods, keep


#: A pod whose stream is at least this long keeps its pickler to answer "do you
#: hold this object?" instead of copying its memo (a copy costs about twice the
#: pickling itself: a tuple and two ints per object).
ORACLE_MIN = 1 << 20


class _MemoOracle:
    """The memo of a large pod, asked one object at a time. A probe pickler, made
    at the first question, starts from a copy of the pod pickler's memo (a copy of its C table: no Python
    object per entry) and dumps the object asked about: a GET of its index if the
    memo holds it; anything it refers to is cut off by a persistent id, so a miss
    costs one object, not its graph. A miss leaves that object in the probe's
    memo: answers are remembered."""

    def __init__(self, pod_pickler):
        self.pod_pickler = pod_pickler  # keeps the pod's temporaries alive
        self.stream = io.BytesIO()
        self.probe: _Probe | None = None  # made at the first question (often none comes)
        self.answers: dict[int, int | None] = {}

    def index_of(self, obj) -> int | None:
        oid = id(obj)
        if oid in self.answers:
            return self.answers[oid]
        if self.probe is None:
            self.probe = _Probe(self.stream)
            self.probe.memo = self.pod_pickler.memo
        self.probe.target = obj
        self.stream.seek(0)
        self.stream.truncate()
        try:
            self.probe.dump(obj)
            out = self.stream.getvalue()[:32]  # a hit is PROTO, FRAME, a GET and STOP
            at = 2 + (9 if len(out) > 2 and out[2] == pickle.FRAME[0] else 0)
            op = out[at : at + 1]
            index = (out[at + 1] if op == pickle.BINGET else
                     int.from_bytes(out[at + 1 : at + 5], "little") if op == pickle.LONG_BINGET else None)
        except Exception:  # noqa: BLE001 - it was saved already; a failure here only means "not held"
            index = None
        self.answers[oid] = index
        return index

    def memo(self) -> dict:
        return self.pod_pickler.memo.copy()


class _Probe(pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, protocol=pickler.PROTOCOL)
        self.target = None

    def persistent_id(self, obj):
        return None if obj is self.target else 0


def _held_before(held, owners: list[tuple[str, object]]) -> dict[int, tuple[str, int]]:
    """id -> (pod name, memo index) of the objects of ``held`` (the memo copy or
    _MemoOracle of a pod pickled on its own) that an earlier pod already holds,
    atoms left out. Earlier pods hold no shareable object twice (a later pod
    refers to the first holder's), so each is found once. Between memo copies,
    set operations on their keys keep this at C speed; an oracle is asked about
    the shareable objects of the other side's memo."""
    shared: dict[int, tuple[str, int]] = {}
    for owner, earlier in owners:
        if isinstance(held, _MemoOracle) and isinstance(earlier, _MemoOracle):
            held = held.memo()  # two large pods: one of them must be listed
        if isinstance(earlier, _MemoOracle):
            for oid, (_, obj) in held.items():
                if _shareable(obj):
                    index = earlier.index_of(obj)
                    if index is not None:
                        shared.setdefault(oid, (owner, index))
        elif isinstance(held, _MemoOracle):
            for oid, (index, obj) in earlier.items():
                if _shareable(obj) and held.index_of(obj) is not None:
                    shared.setdefault(oid, (owner, index))
        elif not held.keys().isdisjoint(earlier.keys()):  # iterates the smaller of the two
            for oid in held.keys() & earlier.keys():
                index, obj = earlier[oid]
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


def _dump(value, buffers: list, main_module, shared: dict | None, storages: dict,
          oracle: bool = True) -> tuple[bytes, object, list]:
    """(stream, memo copy or _MemoOracle, names of the pods it refers to) of one
    pod; with ``shared`` None, no object is looked up (the fast C path)."""

    def out_of_band(buffer) -> bool:
        if buffer.raw().nbytes < pickler.OUT_OF_BAND_MIN:
            return True
        buffers.append(buffer)
        return False

    stream = io.BytesIO()
    cls = _PlainPodPickler if shared is None else _PodPickler
    p = cls(stream, out_of_band, main_module, shared, storages)
    p.dump(value)
    data = stream.getvalue()
    deps = sorted(getattr(p, "deps", ()))
    if oracle and len(data) >= ORACLE_MIN:
        return data, _MemoOracle(p), deps
    return data, p.memo.copy(), deps


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
        try:
            values[name] = u.load()
        except Exception as exc:
            exc.dart_pod = name  # which root failed, for the caller's message
            raise
        memos[name] = u.memo.copy()
    return values
