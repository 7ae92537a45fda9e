"""Transactions on live Python state: ``with dart.transaction():`` and ``@dart.atomic``.

At entry a transaction records its roots (the caller's globals, the locals of the
enclosing user-code frames, the objects passed to it) and, for every object reachable
from them, the state it can restore *in place*: the items of a list, dict, set or deque,
an instance's ``__dict__`` and slots, a tensor's ``.grad`` and storage, a pandas
manager's blocks, a random generator's state, and the bytes of every NumPy array and
torch tensor. If the block raises, that state is put back into the same objects (every
alias sees it), then the exception goes on. If it completes, nothing is undone.

Buffers cost what the block changes, not what the state holds. A buffer of
``SHADOW_MIN`` bytes or more keeps a page-aligned shadow copy between transactions,
kept in step through the delta engine: kernel dirty-page tracking (``dart.delta.
DirtyTracker``) or, where the kernel refuses, a per-page hash. Entry copies into the
shadow only the pages written since the previous entry; rollback copies back only the
pages written inside the block. The first transaction to reach a buffer pays one copy
of it. Smaller buffers are copied at entry.

Nesting: each transaction rolls back to its own entry; an inner rollback leaves the
outer one going. A buffer's shadow serves every level: when an inner entry overwrites
shadow pages, the outer level keeps their old bytes (an undo log).

Threads, generators, async: the open transactions form a stack per thread and per
asyncio task (a ``ContextVar``). A transaction must end in the context that began it,
in LIFO order; a generator that yields inside a ``with`` block keeps the transaction
open until it resumes and leaves the block. Transactions do not isolate threads or
tasks: a rollback restores the objects it reached, including changes that other
threads or tasks made to them meanwhile. A buffer shadowed by a transaction of another
thread or task is copied privately instead.

What cannot be undone is named in ``Transaction.not_undone`` and in a warning at
rollback: bytes written to files and sockets, generators' positions, objects of C types
whose state Python cannot see. ``strict=True`` refuses to start instead. The read
position of a seekable file is restored.
"""

from __future__ import annotations

import array
import collections
import contextvars
import enum
import functools
import inspect
import io
import mmap
import pathlib
import random
import socket
import sys
import sysconfig
import threading
import types
import warnings

from . import compat
from .delta import ChunkTracker, DeltaError, DirtyTracker, available
from .errors import DartWarning, TransactionError

__all__ = ["Transaction", "transaction", "atomic", "current", "is_open", "release_shadows"]

PAGE = 4096
#: Buffers from this size get a shadow kept in step by change detection; smaller ones
#: are copied at each entry (cheaper than tracking them).
SHADOW_MIN = 1 << 20

_stack: contextvars.ContextVar[tuple] = contextvars.ContextVar("dart_transactions", default=())
_open_lock = threading.Lock()
_open_count = 0
#: held while shadows are created, entered, committed or rolled back (threads share them)
_shadow_lock = threading.RLock()
#: (address, nbytes) -> _Shadowed, kept between transactions so the next entry copies
#: only what changed; dropped when a new outermost transaction no longer reaches it.
_shadows: dict[tuple[int, int], "_Shadowed"] = {}
_MISSING = object()


def is_open() -> bool:
    """Whether a transaction of the program is open in any thread or task (commits wait
    for its end). The steps of ``--atomic-steps`` do not count: commits happen between
    and inside them as without transactions."""
    return _open_count > 0


def current() -> "Transaction | None":
    """The innermost transaction open in this thread or task."""
    stack = _stack.get()
    return stack[-1] if stack else None


def release_shadows() -> int:
    """Drop the shadow copies kept between transactions (and let go of their buffers);
    returns how many. The next transaction copies those buffers again."""
    dropped = 0
    for key, shadow in list(_shadows.items()):
        if not shadow.marks:
            shadow.close()
            del _shadows[key]
            dropped += 1
    return dropped


# -- what is reachable, and how each kind of object is snapshot --------------------------

_LEAF_TYPES = {int, float, complex, str, bytes, bool, type(None), range, slice, type(...),
               type(NotImplemented), types.FunctionType, types.BuiltinFunctionType, types.MethodType,
               types.CodeType, types.ModuleType, property, staticmethod, classmethod, types.CellType,
               types.FrameType, types.TracebackType, type(threading.Lock()), type(threading.RLock()),
               contextvars.Token, contextvars.Context, contextvars.ContextVar}
_LEAF_BASES = (type, types.ModuleType, enum.Enum, pathlib.PurePath, BaseException, threading.Thread,
               threading.Event, threading.Condition)
_LEAF_MODULES = ("dart", "pyarrow", "_thread", "logging", "re", "weakref", "typing", "datetime", "decimal",
                 "fractions", "uuid", "ipaddress", "zoneinfo")
_STD_STREAMS = tuple(s for s in (sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__,
                                 sys.__stderr__) if s is not None)


def _is_leaf(obj) -> bool:
    cls = type(obj)
    if cls in _LEAF_TYPES or cls is Transaction or isinstance(obj, _LEAF_BASES):
        return True
    module = cls.__module__ or ""
    if module.partition(".")[0] in _LEAF_MODULES or module.startswith("pandas._libs") and not _pandas_attrs(obj):
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, (np.generic, np.dtype)):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, (torch.dtype, torch.device))


def _render(path) -> str:
    """The name of an object from its path: (parent, "." or "[" or " key ", name)."""
    parts = []
    while path is not None:
        path, kind, key = path
        parts.append(f"[{key!r}]" if kind == "[" else f"{kind}{key!r}" if kind.startswith(" ") else f".{key}")
    text = "".join(reversed(parts))
    return text[1:] if text.startswith(".") else text


_CONTAINERS = (collections.OrderedDict, collections.defaultdict, collections.deque, dict, list, set)


def _builtin_base(cls: type) -> type:
    """The built-in container type ``cls`` derives from (dict for a Counter, OrderedDict
    for an OrderedDict): its methods change the container without a subclass's overrides."""
    return next((klass for klass in cls.__mro__ if klass in _CONTAINERS), cls)


class _ListState:
    __slots__ = ("obj", "items")

    def __init__(self, obj):
        self.obj, self.items = obj, list(obj)

    def restore(self, keep):
        now = self.obj
        if len(now) != len(self.items) or any(a is not b for a, b in zip(now, self.items)):
            _builtin_base(type(now)).__setitem__(now, slice(None), self.items)  # not a subclass's own


class _DequeState(_ListState):
    __slots__ = ()

    def restore(self, keep):
        now = self.obj
        if len(now) != len(self.items) or any(a is not b for a, b in zip(now, self.items)):
            base = _builtin_base(type(now))
            base.clear(now)
            base.extend(now, self.items)


class _DictState:
    __slots__ = ("obj", "items", "namespace", "factory")

    def __init__(self, obj, namespace=False):
        self.obj, self.items, self.namespace = obj, list(obj.items()), namespace
        self.factory = getattr(obj, "default_factory", None) if isinstance(obj, collections.defaultdict) else None

    def restore(self, keep):
        now = self.obj
        if isinstance(now, collections.defaultdict) and now.default_factory is not self.factory:
            now.default_factory = self.factory
        same = len(now) == len(self.items) and all(
            k is k2 and v is v2 for (k, v), (k2, v2) in zip(now.items(), self.items))
        if same:
            return
        # A namespace keeps the names bound to the transaction itself (`with ... as t`).
        # The built-in type's own methods: a Counter's update() would count.
        kept = {k: v for k, v in now.items() if v is keep} if self.namespace else {}
        base = _builtin_base(type(now))
        dropped = dict(now)  # alive until the old items are back: finalizers see a whole namespace
        base.clear(now)
        base.update(now, self.items)
        base.update(now, kept)
        del dropped


class _SetState:
    __slots__ = ("obj", "items")

    def __init__(self, obj):
        self.obj, self.items = obj, set(obj)

    def restore(self, keep):
        now = self.obj
        if len(now) != len(self.items) or {id(x) for x in now} != {id(x) for x in self.items}:
            base = _builtin_base(type(now))
            base.clear(now)
            base.update(now, self.items)


class _BytesState:
    """bytearray, array.array: copied (they may be resized, so no buffer is held)."""

    __slots__ = ("obj", "data")

    def __init__(self, obj):
        self.obj, self.data = obj, obj[:]

    def restore(self, keep):
        if self.obj != self.data:
            self.obj[:] = self.data


class _AttrState:
    """Named attributes set through their descriptors (slots, C types' attributes)."""

    __slots__ = ("obj", "values")

    def __init__(self, obj, names):
        self.obj = obj
        self.values = {n: getattr(obj, n, _MISSING) for n in names}

    def restore(self, keep):
        cls = type(self.obj)
        for name, value in self.values.items():
            now = getattr(self.obj, name, _MISSING)
            if now is value:
                continue
            descriptor = _descriptor(cls, name)
            if value is _MISSING:
                descriptor.__delete__(self.obj) if descriptor else delattr(self.obj, name)
            else:
                descriptor.__set__(self.obj, value) if descriptor else setattr(self.obj, name, value)


def _descriptor(cls, name):
    for klass in cls.__mro__:
        d = klass.__dict__.get(name)
        if d is not None and hasattr(d, "__set__"):
            return d
    return None


class _CallState:
    """An object with a state getter and setter (random generators)."""

    __slots__ = ("setter", "state")

    def __init__(self, getter, setter):
        self.state, self.setter = getter(), setter

    def restore(self, keep):
        self.setter(self.state)


class _FileState:
    __slots__ = ("obj", "position")

    def __init__(self, obj, position):
        self.obj, self.position = obj, position

    def restore(self, keep):
        if not self.obj.closed and self.obj.tell() != self.position:
            self.obj.seek(self.position)


class _FrameState:
    """The local variables of a running function frame (rebinding, not just mutation)."""

    __slots__ = ("frame", "values", "left_bound")

    def __init__(self, frame):
        self.frame, self.values = frame, dict(frame.f_locals)
        self.left_bound: list[str] = []

    def restore(self, keep):
        now = dict(self.frame.f_locals)
        changed = {k: v for k, v in self.values.items() if now.get(k, _MISSING) is not v}
        unbind = [k for k, v in now.items() if k not in self.values and v is not keep]
        if changed:
            compat.rebind_locals(self.frame, changed)
        where = self.frame.f_code.co_qualname
        self.left_bound = [f"{where}().{n!r}" for n in unbind]


class _TensorState:
    """A torch tensor's own fields: .grad, and which storage it views (``.data = ``,
    ``set_``, ``resize_``). Its bytes are a buffer region of its storage."""

    __slots__ = ("obj", "grad", "storage", "view", "dtype", "requires_grad")

    def __init__(self, t):
        self.obj, self.grad = t, t.grad
        self.storage = t.untyped_storage()
        self.view = (self.storage.data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        self.dtype, self.requires_grad = t.dtype, t.requires_grad

    def restore(self, keep):
        import torch

        t = self.obj
        if t.dtype != self.dtype:  # `model.double()`, `t.data = t.half()`: set_ cannot change the dtype
            old = torch.empty(0, dtype=self.dtype, device=self.storage.device)
            with torch.no_grad():
                old.set_(self.storage, self.view[1], self.view[2], self.view[3])
            t.data = old
        elif (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()) != self.view:
            with torch.no_grad():
                t.set_(self.storage, self.view[1], self.view[2], self.view[3])
        if t.requires_grad != self.requires_grad and t.is_leaf:
            t.requires_grad_(self.requires_grad)
        if t.grad is not self.grad:
            t.grad = self.grad


# -- buffers ------------------------------------------------------------------------------

class _Copied:
    """A buffer copied whole at entry (small, or shadowed by another context)."""

    __slots__ = ("flat", "data")

    def __init__(self, flat):
        self.flat = flat
        self.data = flat.clone() if hasattr(flat, "clone") else flat.copy()

    def enter(self, txn):
        pass

    def rollback(self, txn):
        if hasattr(self.flat, "copy_"):
            self.flat.copy_(self.data)  # a device tensor: one device copy
        else:
            self.flat[...] = self.data

    def commit(self, txn):
        pass


class _Mark:
    """One open transaction's hold on a shadowed buffer: the bytes of its few edge bytes
    (outside the whole pages) and the undo log of shadow pages overwritten since its entry."""

    __slots__ = ("txn", "edges", "saved_pages", "saved")

    def __init__(self, txn, edges):
        self.txn, self.edges = txn, edges
        self.saved_pages: set[int] = set()
        self.saved: list[tuple] = []  # (page indexes, their rows at this mark's entry)


class _Shadowed:
    """A big buffer and a shadow copy of its whole pages, kept in step by the delta engine."""

    def __init__(self, flat, owner):
        import numpy as np

        self.np = np
        self.flat, self.owner = flat, owner  # owner: checked before each use (torch storages move)
        self.address, self.nbytes = flat.__array_interface__["data"][0], flat.nbytes
        head = (-self.address) % PAGE
        pages = max(0, (self.nbytes - head) // PAGE)
        self.bounds = (head, head + pages * PAGE)
        self.mid = flat[head:head + pages * PAGE].reshape(pages, PAGE)
        self.marks: list[_Mark] = []
        self.tracker = None
        self.mode = "dirty"
        self.restored = None  # hash mode: pages the last rollback wrote (see _changed)
        if pages and available():
            try:
                self.tracker = DirtyTracker(self.mid, PAGE)
            except DeltaError:
                pass  # another tracker holds these pages (a commit's buffer book): hash instead
        if self.tracker is None:
            self.mode = "hash"
            self.tracker = ChunkTracker(pages * PAGE, PAGE, "hash")
        self._changed()  # primes the tracker: every page
        # the one full copy, into plain anonymous memory: NumPy would advise huge pages
        # for it, and with THP defrag=madvise each fault then waits for compaction (4x
        # slower measured here); MAP_POPULATE faults it in inside the kernel, in one go
        # (1 GiB: 0.9 s instead of 1.4 s of first-touch faults from the copy)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        self._memory = mmap.mmap(-1, max(pages * PAGE, PAGE), flags=flags)
        self.shadow = np.frombuffer(self._memory, dtype=np.uint8)[: pages * PAGE].reshape(pages, PAGE)
        np.copyto(self.shadow, self.mid)

    def valid(self) -> bool:
        owner = self.owner
        if owner is None:
            return True
        return owner.data_ptr() == self.address and owner.nbytes() == self.nbytes

    def close(self):
        if self.mode == "dirty" and self.tracker is not None:
            self.tracker.close()
        self.tracker = None

    def _changed(self):
        if self.mode == "dirty":
            return self.np.asarray(self.tracker.changed(), dtype=self.np.intp)
        pages = self.np.asarray(self.tracker.changed(self.mid), dtype=self.np.intp)
        if self.restored is not None:
            # the hash tracker's fingerprints are of the bytes a rollback replaced: the pages
            # it restored count as changed once, or writing the block's values back to one
            # would go unseen
            pages, self.restored = self.np.union1d(pages, self.restored), None
        return pages

    def _edges(self):
        head, tail = self.bounds
        return (self.flat[:head].copy(), self.flat[tail:].copy())

    def _sync(self, below: _Mark | None):
        """Copy the pages written since the last scan into the shadow; ``below`` (the
        enclosing open transaction's mark) first keeps the shadow's old bytes of pages it
        has not saved."""
        if self.mode == "dirty" and below is None:
            try:
                self.tracker.save_written(self.shadow)  # scan, re-protect, copy: one native call
            except DeltaError:
                self.np.copyto(self.shadow, self.mid)
                self._lost_tracking()
            return
        pages = self._changed()
        if not len(pages):
            return
        if below is not None:
            new = [p for p in pages.tolist() if p not in below.saved_pages]
            if new:
                below.saved_pages.update(new)
                index = self.np.asarray(new, dtype=self.np.intp)
                below.saved.append((index, self.shadow[index]))
        self.shadow[pages] = self.mid[pages]

    def _restore(self):
        """Copy the pages written since the last scan back from the shadow."""
        if self.mode == "dirty":
            try:
                # lists the written pages, copies them back without the GIL and only then
                # protects them again, so the copy takes no write faults. With other threads
                # about, it also compares the restored pages with the shadow (about twice
                # the cost), to catch a page another thread wrote right after its copy
                self.tracker.restore_written(self.mid, self.shadow, compare=threading.active_count() > 1)
            except DeltaError:
                self.np.copyto(self.mid, self.shadow)
                self._lost_tracking()
            return
        pages = self._changed()
        if len(pages):
            self.mid[pages] = self.shadow[pages]
            self.restored = pages

    def _lost_tracking(self):
        """The kernel stopped tracking the pages (they were unmapped and mapped again, a
        scan failed): hash from now on, starting from the bytes there now (the caller
        has just copied the whole buffer one way or the other)."""
        self.tracker.close()
        self.mode = "hash"
        self.tracker = ChunkTracker(self.mid.nbytes, PAGE, "hash")
        self._changed()

    def enter(self, txn):
        self._sync(self.marks[-1] if self.marks else None)
        self.marks.append(_Mark(txn, self._edges()))

    def _pop(self, txn) -> _Mark:
        for i in range(len(self.marks) - 1, -1, -1):
            if self.marks[i].txn is txn:
                return self.marks.pop(i)
        raise TransactionError("a transaction ended that had no hold on a buffer it reached")

    def rollback(self, txn):
        mark = self._pop(txn)
        self._restore()
        for index, rows in mark.saved:
            self.mid[index] = rows
            self.shadow[index] = rows
        head, tail = self.bounds
        self.flat[:head] = mark.edges[0]
        self.flat[tail:] = mark.edges[1]
        if mark.saved and self.mode == "dirty":
            self._changed()  # protect the pages the undo log wrote again: they equal the shadow
        elif mark.saved:
            undone = self.np.concatenate([index for index, _ in mark.saved])
            self.restored = undone if self.restored is None else self.np.union1d(self.restored, undone)

    def commit(self, txn):
        mark = self._pop(txn)
        if not self.marks:
            if self.mode == "dirty":
                # the outermost level: the block's pages go into the shadow now, so the
                # next entry only scans (and copies what changed between transactions); a
                # hash tracker leaves it to the next entry, which hashes the buffer anyway
                self._sync(None)
        elif mark.saved:
            below = self.marks[-1]
            for index, rows in mark.saved:
                keep = [i for i, p in enumerate(index.tolist()) if p not in below.saved_pages]
                if keep:
                    below.saved_pages.update(index[keep].tolist())
                    below.saved.append((index[keep], rows[keep]))


def _array_region(a):
    """(key, flat uint8 view, owner to re-check) of the memory an ndarray views, or None."""
    np = sys.modules["numpy"]
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not root.flags.writeable or root.dtype.hasobject:
        return None
    if root.flags.c_contiguous:
        flat = root.reshape(-1).view(np.uint8)
    elif root.flags.f_contiguous:
        flat = root.T.reshape(-1).view(np.uint8)
    else:
        return None
    return (flat.__array_interface__["data"][0], flat.nbytes), flat, None


def _tensor_region(t):
    """(key, flat uint8 view, storage) of a torch tensor's whole storage."""
    import torch

    storage = t.untyped_storage()
    n = storage.nbytes()
    if n == 0:
        return None
    flat = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)
    if storage.device.type == "cpu":
        flat = flat.numpy()
    return (storage.data_ptr(), n), flat, storage


# -- the transaction ----------------------------------------------------------------------

_DART_DIR = str(pathlib.Path(__file__).parent) + "/"
_LIBRARY_DIRS = tuple({p for k in ("stdlib", "platstdlib", "purelib", "platlib")
                       if (p := sysconfig.get_paths().get(k))})


def _user_frames(frame):
    """The frames of user code from ``frame`` outward: dart's own frames first are
    skipped; the walk stops at the first frame of the standard library or an installed
    package (pytest, runpy, dart's runner)."""
    while frame is not None and frame.f_code.co_filename.startswith(_DART_DIR):
        frame = frame.f_back
    frames = []
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_DART_DIR) or name.startswith(_LIBRARY_DIRS) or name.startswith("<frozen"):
            break
        frames.append(frame)
        frame = frame.f_back
    return frames


CO_OPTIMIZED = 0x1
#: Objects of these types carry no state of their own worth naming.
_NOT_STATE = {object, type(None)}


class Transaction:
    """``with dart.transaction():`` / ``@dart.transaction()`` / ``@dart.atomic``.

    objects: more roots to cover besides the caller's globals and locals (``frames=False``:
    only them; a counter or timer in the caller's locals is then not rolled back). strict: refuse
    to start (TransactionError) if something reachable cannot be snapshot or restored.
    commit: under dart, commit once the outermost transaction completes.

    After the block: ``rolled_back`` (bool), ``not_undone`` (what the rollback could not
    undo, named), ``left_bound`` (locals first bound inside a block that rolled back: they
    keep their values, as Python cannot unbind a local of a running frame), ``reached``
    (objects snapshot), ``shadowed`` (buffers kept in step by the delta engine).
    """

    def __init__(self, *objects, strict: bool = False, commit: bool = False, frames: bool = True, frame=None,
                 step: bool = False):
        self.objects = objects
        self.step = step  # a loop iteration of --atomic-steps, not a transaction of the program
        self.frames = frames
        self.strict, self.commit_at_end = strict, commit
        self._frame = frame
        self.rolled_back = False
        self.not_undone: list[str] = []
        self.left_bound: list[str] = []  # locals first bound in the block: Python cannot unbind them
        self.reached = 0
        self.shadowed = 0
        self._states: list = []
        self._regions: list = []
        self._token = None

    def __call__(self, func):
        """As a decorator: each call of ``func`` runs in a fresh transaction."""
        if inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            kind = "a generator" if inspect.isgeneratorfunction(func) else "a coroutine"
            raise TransactionError(
                f"{getattr(func, '__qualname__', func)}() is {kind} function: a transaction around its call "
                "would end before its body runs; open `with dart.transaction():` inside its body instead"
            )
        @functools.wraps(func)
        def inner(*args, **kwargs):
            with Transaction(*self.objects, args, kwargs, strict=self.strict, commit=self.commit_at_end,
                             frames=self.frames, frame=sys._getframe(1)):
                return func(*args, **kwargs)

        return inner

    def __enter__(self):
        global _open_count
        if self._token is not None:
            raise TransactionError("this transaction is already open; use a new dart.transaction() for each block")
        frame = self._frame if self._frame is not None else sys._getframe(1)
        self.rolled_back, self.not_undone, self.left_bound = False, [], []  # of this block (an object reused)
        self.reached = self.shadowed = 0
        stack = _stack.get()
        with _shadow_lock:
            self._snapshot(_user_frames(frame) if self.frames else [])
            for region in self._regions:
                region.enter(self)
        self._token = _stack.set(stack + (self,))
        if not self.step:
            with _open_lock:
                _open_count += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        global _open_count
        stack = _stack.get()
        out_of_order = not stack or stack[-1] is not self
        _stack.set(tuple(t for t in stack if t is not self))
        self._token = None
        failed = exc_type is not None
        try:
            with _shadow_lock:
                if failed:
                    self._rollback()
                else:
                    for region in self._regions:
                        region.commit(self)
        finally:
            # open until its state is whole again: a commit from another thread while a
            # big restore runs without the GIL would capture it half rolled back
            if not self.step:
                with _open_lock:
                    _open_count -= 1
            self._states, self._regions, self._frame = [], [], None  # no frame <-> self cycle left
        if failed and self.not_undone:
            summary = "; ".join(self.not_undone[:8]) + (f"; and {len(self.not_undone) - 8} more"
                                                        if len(self.not_undone) > 8 else "")
            exc.add_note(f"dart rolled back the transaction's live state except: {summary}")
            try:
                warnings.warn(f"the transaction rolled back after {exc_type.__name__}, but did not undo: {summary}",
                              DartWarning, stacklevel=2)
            except Warning:  # warnings turned into errors: the program's own exception goes on (with the note)
                pass
        if out_of_order:
            raise TransactionError(
                "a transaction ended while a transaction opened after it was still open (a generator or "
                "coroutine suspended inside a `with dart.transaction()` block); each transaction must end "
                "before the ones opened before it") from exc
        if not failed and self.commit_at_end and all(t.step for t in _stack.get()):
            for hook in _commit_hooks:
                hook(self)
        return False

    # -- entry: walk the roots ------------------------------------------------------------

    def _snapshot(self, frames):
        cannot: list[str] = []
        seen: dict[int, object] = {id(self): self}
        states = self._states
        regions: dict[tuple, tuple] = {}
        pending = []
        for frame in frames:
            where = frame.f_code.co_qualname
            if frame.f_code.co_flags & CO_OPTIMIZED:  # a function frame: its locals can be rebound
                state = _FrameState(frame)
                states.append(state)
                pending.extend((v, (None, ".", f"{where}().{k}")) for k, v in state.values.items())
            elif frame.f_locals is not frame.f_globals and id(frame.f_locals) not in seen:
                seen[id(frame.f_locals)] = frame.f_locals  # a class body
                states.append(_DictState(frame.f_locals, namespace=True))
                pending.extend((v, (None, ".", k)) for k, v in frame.f_locals.items())
            g = frame.f_globals
            if id(g) not in seen:
                seen[id(g)] = g
                states.append(_DictState(g, namespace=True))
                pending.extend((v, (None, ".", k)) for k, v in g.items() if not k.startswith("__"))
        pending.extend((obj, (None, ".", f"<argument {i}>")) for i, obj in enumerate(self.objects))
        while pending:
            obj, path = pending.pop()
            if _is_leaf(obj) or id(obj) in seen:
                continue
            seen[id(obj)] = obj
            pending.extend(self._state_of(obj, path, seen, cannot, regions))
        stack_now = _stack.get()
        for key, (flat, owner) in regions.items():
            self._regions.append(self._region_for(key, flat, owner, stack_now))
        if not stack_now:
            # a new outermost transaction: shadows it no longer reaches are let go
            for key, shadow in list(_shadows.items()):
                if key not in regions and not shadow.marks:
                    shadow.close()
                    del _shadows[key]
        self.reached = len(seen) - 1
        self.shadowed = sum(isinstance(r, _Shadowed) for r in self._regions)
        self.not_undone = cannot
        if self.strict and cannot:
            self._states, self._regions = [], []
            raise TransactionError(
                "dart.transaction(strict=True) refuses to start: a rollback could not undo "
                + "; ".join(cannot[:8]) + ". Move these out of reach of the block (or close them), or drop "
                "strict=True to run with them named at rollback")

    def _region_for(self, key, flat, owner, stack_now):
        is_numpy = type(flat).__module__ == "numpy"
        if not is_numpy or flat.nbytes < SHADOW_MIN:
            return _Copied(flat)
        shadow = _shadows.get(key)
        if shadow is not None and not shadow.valid():
            shadow.close()
            del _shadows[key]
            shadow = None
        if shadow is not None and shadow.marks and not any(m.txn in stack_now for m in shadow.marks):
            return _Copied(flat)  # shadowed by a transaction of another thread or task
        if shadow is None:
            shadow = _shadows[key] = _Shadowed(flat, owner)
        return shadow

    def _state_of(self, obj, path, seen, cannot, regions):
        """Record what restores ``obj`` in place; return its children to visit."""
        cls = type(obj)
        np = sys.modules.get("numpy")
        torch = sys.modules.get("torch")
        states = self._states
        before = len(states)
        children = []
        known = True  # a kind handled below; unknown kinds fall to the last branch
        if isinstance(obj, (tuple, frozenset)):
            children = [(v, (path, "[", i)) for i, v in enumerate(obj)]
        elif isinstance(obj, list):
            states.append(_ListState(obj))
            children = [(v, (path, "[", i)) for i, v in enumerate(obj) if type(v) not in _LEAF_TYPES]
        elif isinstance(obj, dict):
            states.append(_DictState(obj))
            for k, v in obj.items():
                if type(v) not in _LEAF_TYPES:
                    children.append((v, (path, "[", k)))
                if type(k) not in _LEAF_TYPES:
                    children.append((k, (path, " key ", k)))
        elif isinstance(obj, set):
            states.append(_SetState(obj))
            children = [(v, (path, " item ", v)) for v in obj if type(v) not in _LEAF_TYPES]
        elif isinstance(obj, collections.deque):
            states.append(_DequeState(obj))
            children = [(v, (path, "[", i)) for i, v in enumerate(obj) if type(v) not in _LEAF_TYPES]
        elif isinstance(obj, (bytearray, array.array)):
            states.append(_BytesState(obj))
        elif isinstance(obj, memoryview):
            children = [(obj.obj, (path, ".", "obj"))]
        elif np is not None and isinstance(obj, np.ndarray):
            found = None if obj.dtype.hasobject else _array_region(obj)
            if found is not None:
                regions.setdefault(found[0], found[1:])
            elif obj.flags.writeable:
                states.append(_ObjectArrayState(obj))
            if obj.dtype.hasobject:
                children = [(v, (path, "[", "...")) for v in obj.ravel(order="K").tolist()]
        elif torch is not None and isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided or obj.device.type == "meta":
                cannot.append(f"{_render(path)} (a {obj.layout} tensor on {obj.device}: its values are not undone)")
            else:
                states.append(_TensorState(obj))
                found = _tensor_region(obj)
                if found is not None:
                    regions.setdefault(found[0], found[1:])
                if obj.grad is not None:
                    children.append((obj.grad, (path, ".", "grad")))
        elif isinstance(obj, random.Random):
            states.append(_CallState(obj.getstate, obj.setstate))
        elif np is not None and isinstance(obj, np.random.RandomState):
            states.append(_CallState(obj.get_state, obj.set_state))
        elif np is not None and isinstance(obj, np.random.Generator):
            bit = obj.bit_generator
            states.append(_CallState(lambda b=bit: b.state, lambda s, b=bit: setattr(b, "state", s)))
        elif isinstance(obj, io.IOBase):
            if any(obj is s for s in _STD_STREAMS) or obj.closed:
                return []
            name = getattr(obj, "name", None) or cls.__name__
            try:
                if obj.seekable():
                    states.append(_FileState(obj, obj.tell()))
            except (OSError, ValueError):
                pass
            if obj.writable():
                cannot.append(f"{_render(path)} (file {name} open for writing: what the block writes to it stays)")
            return []
        elif isinstance(obj, socket.socket):
            cannot.append(f"{_render(path)} (a socket: what the block sends or receives is not undone)")
            return []
        elif isinstance(obj, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            cannot.append(f"{_render(path)} (a {cls.__name__}: how far it has run is not undone)")
            return []
        else:
            known = False
            names = _pandas_attrs(obj)
            if names:
                known = True
                states.append(_AttrState(obj, names))
                children += [(getattr(obj, n), (path, ".", n)) for n in names if n in ("blocks", "axes", "values")]
        # an instance's own attributes, whatever its kind
        d = getattr(obj, "__dict__", None)
        if type(d) is dict and id(d) not in seen:
            seen[id(d)] = d
            states.append(_DictState(d))
            children += [(v, (path, ".", k)) for k, v in d.items() if type(v) not in _LEAF_TYPES]
        slots = _slot_names(cls)
        if slots:
            states.append(_AttrState(obj, slots))
            children += [(v, (path, ".", n)) for n in slots if (v := getattr(obj, n, _MISSING)) is not _MISSING]
        if not known and len(states) == before and d is None and not callable(obj) and cls not in _NOT_STATE:
            cannot.append(f"{_render(path)} (a {cls.__module__}.{cls.__qualname__}: a C object whose state "
                          "dart cannot see)")
        return children

    # -- exit: put everything back --------------------------------------------------------

    def _rollback(self):
        self.rolled_back = True
        for region in reversed(self._regions):
            region.rollback(self)
        for state in reversed(self._states):
            try:
                state.restore(self)
            except Exception as exc:  # one object refusing must not stop the rest
                self.not_undone.append(f"a {type(getattr(state, 'obj', state)).__name__} could not be "
                                       f"restored ({type(exc).__name__}: {exc})")
            if isinstance(state, _FrameState):
                self.left_bound += state.left_bound


class _ObjectArrayState:
    """A NumPy array whose bytes are not one writable buffer (object dtype, odd strides)."""

    __slots__ = ("obj", "data")

    def __init__(self, obj):
        self.obj, self.data = obj, obj.copy()

    def restore(self, keep):
        self.obj[...] = self.data


@functools.cache
def _slot_names(cls) -> tuple[str, ...]:
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for name in slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"
            names.append(name)
    return tuple(names)


_PANDAS_MANAGER = ("blocks", "axes", "_blknos", "_blklocs", "_known_consolidated", "_is_consolidated")
_PANDAS_BLOCK = ("values", "_mgr_locs", "ndim", "refs")


def _pandas_attrs(obj) -> tuple[str, ...]:
    """The C-level attributes of a pandas block manager or block (they have no __dict__ entries)."""
    if not type(obj).__module__.startswith("pandas"):
        return ()
    internals = sys.modules.get("pandas._libs.internals")
    if internals is None:
        return ()
    if isinstance(obj, internals.BlockManager):
        return tuple(n for n in _PANDAS_MANAGER if hasattr(obj, n))
    if isinstance(obj, internals.Block):
        return tuple(n for n in _PANDAS_BLOCK if hasattr(obj, n))
    return ()


def transaction(*objects, strict: bool = False, commit: bool = False, frames: bool = True) -> Transaction:
    """A transaction over the caller's live state: ``with dart.transaction(): ...``.

    If the block raises, everything reachable from the caller's globals, the locals of
    the enclosing frames and ``objects`` is restored in place to its state at entry, and
    the exception propagates. ``strict=True`` refuses to start if something reachable
    cannot be undone (open files written, sockets, C objects); ``commit=True`` commits
    (under ``dart run`` / ``dart.enable()``) when the outermost transaction completes.
    ``frames=False`` covers only ``objects``. Also a decorator: ``@dart.transaction(strict=True)``."""
    return Transaction(*objects, strict=strict, commit=commit, frames=frames, frame=sys._getframe(1))


def atomic(func=None, *, strict: bool = False, commit: bool = False, frames: bool = True):
    """Decorator: each call of ``func`` is a transaction over the caller's state and the
    call's arguments (``frames=False``: the arguments only); a call that raises leaves
    them as they were."""
    if func is None:
        return lambda f: atomic(f, strict=strict, commit=commit, frames=frames)
    return Transaction(strict=strict, commit=commit, frames=frames)(func)


class Step:
    """One loop iteration under ``--atomic-steps`` (see monitor/steps.py): a transaction
    over the main script's state from the iteration's first statement."""

    def __init__(self, frame):
        self.txn = Transaction(frame=frame, step=True)
        self.txn.__enter__()

    def commit(self) -> None:
        if self.txn is not None:
            self.txn.__exit__(None, None, None)
            self.txn = None

    def failed(self, exc: BaseException) -> bool:
        """The iteration raised ``exc`` and it is being caught: roll back to the start of
        the iteration. False (nothing done) while a transaction of the program is open
        inside the step: the exception is then that transaction's business."""
        if self.txn is None:
            return True
        if current() is not self.txn:
            return False
        txn, self.txn = self.txn, None
        txn.__exit__(type(exc), exc, exc.__traceback__)
        return True


#: Called with the transaction when an outermost ``commit=True`` transaction completes;
#: the session registers its commit here (this module knows nothing of sessions).
_commit_hooks: list = []
