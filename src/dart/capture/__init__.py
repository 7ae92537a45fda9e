"""Capture: turn the program's roots into one pickle stream plus buffers.

Roots are the main module's globals, the iterators of the loops on the path to
the safe point and hidden state (random generators). A variable that cannot be
pickled is left out and named in one warning; the commit goes on without it.
"""

from __future__ import annotations

import pickle
import types
import warnings
from collections.abc import Mapping
from contextvars import ContextVar

from ..errors import CaptureError, DartError, DartWarning
from . import pickler, pods
from .hidden import capture_hidden

#: Module attributes that belong to the interpreter, not to the program.
SKIPPED_GLOBALS = frozenset(
    {
        "__builtins__",
        "__loader__",
        "__spec__",
        "__cached__",
        "__file__",
        "__name__",
        "__package__",
        "__doc__",
        "__dart_one__",
    }
)


#: The id of the commit whose pods are being unpickled (objects saved as "the
#: result of this commit" read it, see session.CommitResult).
loading_commit: ContextVar[str | None] = ContextVar("loading_commit", default=None)


def _type_name(value) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:400]


class Capturer:
    """Captures the state of one main module, commit after commit.

    A variable that does not pickle is left out. If the session can rebuild it
    on resume (``rebuildable`` returns where: the statement that created it),
    the commit goes on and records that; otherwise a global is named in one
    warning, and a local of a frame on the path makes the commit impossible
    there (UnsavableIterator)."""

    def __init__(self, main_module: types.ModuleType, rebuildable=None):
        self.main = main_module
        # rebuildable(frame_key, name, value) -> "line N" or None; frame_key None: a global
        self.rebuildable = rebuildable or (lambda frame_key, name, value: None)
        # (frame_key, name) -> (id of the value, type name, reason, how rebuilt or None)
        self.skipped: dict[tuple, tuple[int, str, str, str | None]] = {}
        self.bad_statics: set[tuple[str, str]] = set()  # (statics key, attribute) that do not pickle

    def is_program_global(self, name: str) -> bool:
        return name not in SKIPPED_GLOBALS and not name.startswith("__dart_")

    def _known_bad(self, frame_key, name: str, value) -> bool:
        known = self.skipped.get((frame_key, name))
        # A tensor may pickle later (its graph spent): asked again each time.
        return (
            known is not None and known[0] == id(value) and known[1] == _type_name(value)
            and known[1] not in _STATE_DEPENDENT
        )

    def capture(
        self, namespace: dict, iterators: dict[str, object], frame_locals: list[tuple] = (),
        statics: dict[str, dict] | None = None,
    ) -> tuple[list[pods.Pod], list, dict]:
        """Pickle the roots: the module's globals, the loops' iterators and the
        locals of the function frames on the path (``frame_locals`` holds one
        (frame_key, locals) pair per frame), one pod each (see pods.py). Returns
        (pods, keep-alive list to hold until their buffers are copied, info);
        info["skipped"] maps each global left out to "type: reason" and
        info["rebuilt"] maps frame index (0: globals) to the names resume must rebuild.
        ``statics``: attributes of classes, functions and user modules (capture/statics.py);
        one that does not pickle is left out (said once), never the commit."""
        program = {n: v for n, v in namespace.items() if self.is_program_global(n) and not self._known_bad(None, n, v)}
        for name, value in program.items():
            if pickler.graph_in_use(value):  # not left out: the commit waits until its graph is spent
                raise UnsavableIterator({f"global variable '{name}'": f"torch.Tensor: {pickler.GRAPH_IN_USE}"})
        frames = []
        for key, local_vars in frame_locals:
            kept = {}
            for name, value in local_vars.items():
                if pickler.graph_in_use(value):  # cheap, and common in a loop: no pickling to find out
                    raise UnsavableIterator({f"local variable '{name}' of {key}()": f"torch.Tensor: {pickler.GRAPH_IN_USE}"})
                if not self._known_bad(key, name, value):
                    kept[name] = value
                elif self.skipped[(key, name)][3] is None:  # known, and nothing can rebuild it
                    known = self.skipped[(key, name)]
                    raise UnsavableIterator({f"local variable '{name}' of {key}()": f"{known[1]}: {known[2]}"})
            frames.append(kept)
        hidden = capture_hidden()
        statics = {key: {n: v for n, v in values.items() if (key, n) not in self.bad_statics}
                   for key, values in (statics or {}).items()}

        def roots():
            return pod_roots(program, iterators, frames, hidden, statics)

        try:
            cut, keep = pods.cut(roots(), main_module=self.main, fresh=FRESH_ROOTS)
        except Exception:
            self._diagnose_statics(statics)
            self._diagnose(program, iterators, frame_locals, frames)
            try:
                cut, keep = pods.cut(roots(), main_module=self.main)
            except Exception as exc:
                raise CaptureError(
                    f"dart could not save the program's state: {_reason(exc)}. "
                    "Report this with the types of your global variables."
                ) from exc
        skipped, rebuilt = {}, {}
        for index, (key, names) in enumerate([(None, namespace)] + list(frame_locals)):
            for name in names:
                known = self.skipped.get((key, name))
                if known is None or not self._known_bad(key, name, names[name]):
                    continue
                if known[3] is not None:
                    rebuilt.setdefault(index, []).append(name)
                elif index == 0:
                    skipped[name] = f"{known[1]}: {known[2]}"
        return cut, keep, {"skipped": skipped, "rebuilt": rebuilt}

    def _diagnose_statics(self, statics: dict[str, dict]) -> None:
        """Leave out (from now on, said once) the attributes of classes, functions and
        user modules that do not pickle."""
        for key, values in statics.items():
            for name, value in list(values.items()):
                if not _pickles(value, self.main):
                    self.bad_statics.add((key, name))
                    del values[name]
                    module, _, owner = key.partition(":")
                    where = f"{owner}.{name}" if owner else f"{module}.{name}"
                    warnings.warn(f"{where} ({_type_name(value)}) is not saved in commits: {_why(value, self.main)}",
                                  DartWarning, stacklevel=2)

    def _diagnose(self, program: dict, iterators: dict, frame_locals, frames: list[dict]) -> None:
        """Find which variables do not pickle (slow path, once per new value),
        and take them out of ``program`` and ``frames``."""
        bad = {}
        for key, value in iterators.items():
            if not _pickles(value, self.main):
                bad[f"loop iterator {key}"] = f"{_type_name(value)}: {_why(value, self.main)}"
        scopes = [(None, program)] + [(key, frame) for (key, _), frame in zip(frame_locals, frames)]
        for frame_key, scope in scopes:
            for name, value in list(scope.items()):
                if _pickles(value, self.main):
                    continue
                reason, type_name = _why(value, self.main), _type_name(value)
                how = self.rebuildable(frame_key, name, value)
                first_time = (frame_key, name) not in self.skipped
                self.skipped[(frame_key, name)] = (id(value), type_name, reason, how)
                del scope[name]
                owner = f"variable '{name}'" if frame_key is None else f"local variable '{name}' of {frame_key}()"
                if how is not None:
                    if first_time:
                        warnings.warn(
                            f"{owner} ({type_name}) cannot be saved ({reason}); "
                            f"on resume dart rebuilds it by running {how} again",
                            DartWarning,
                            stacklevel=2,
                        )
                elif frame_key is None:
                    if first_time:
                        warnings.warn(
                            f"variable '{name}' ({type_name}) is not saved in commits: {reason}. "
                            "If the program still needs it after a resume, dart will stop and say so.",
                            DartWarning,
                            stacklevel=2,
                        )
                else:
                    bad[owner] = f"{type_name}: {reason}"
        if bad:
            raise UnsavableIterator(bad)


def _pickles(value, main) -> bool:
    try:
        pickler.dumps(value, main_module=main)
    except Exception:
        return False
    return True


def _why(value, main) -> str:
    try:
        pickler.dumps(value, main_module=main)
    except Exception as exc:
        return _reason(exc)
    return "?"


#: Types whose objects may pickle at one commit and not at another.
_STATE_DEPENDENT = frozenset({"torch.Tensor", "torch.nn.parameter.Parameter"})


class UnsavableIterator(CaptureError):
    """A loop iterator or a local variable on the path cannot be saved."""

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


#: Roots whose objects the capture itself makes (no variable of the program holds them).
FRESH_ROOTS = frozenset({"frames", "hidden"})


def _root_name(pod: str | None) -> str:
    """A pod's name in the user's words."""
    if pod is None:
        return "a saved object"
    kind, _, key = pod.partition(":")
    if kind == "g":
        return f"global variable '{key}'"
    if kind == "i":
        return f"the iterator of the loop {key}"
    if kind == "s":
        return f"the saved attributes of {key.replace(':', '.').strip('.')}"
    if kind.startswith("f") and key:
        return f"local variable '{key}' (frame {kind[1:]} of the saved path)"
    return "the saved random state" if pod == "hidden" else f"saved object {pod!r}"


def pod_roots(program: dict, iterators: dict, frames: list[dict], hidden,
              statics: dict | None = None) -> list[tuple[str, object]]:
    """The roots of a commit as (pod name, value), in pickling order."""
    roots = [(f"g:{name}", value) for name, value in program.items()]
    for index, local_vars in enumerate(frames, start=1):
        roots.extend((f"f{index}:{name}", value) for name, value in local_vars.items())
    roots.extend((f"i:{key}", value) for key, value in iterators.items())
    roots.extend((f"s:{key}", values) for key, values in (statics or {}).items() if values)
    roots.append(("frames", len(frames)))
    roots.append(("hidden", hidden))
    return roots


def _roots_from_pods(values: dict) -> dict:
    roots = {"globals": {}, "iterators": {}, "frames": [{} for _ in range(values.get("frames", 0))], "statics": {}}
    for name, value in values.items():
        kind, _, key = name.partition(":")
        if kind == "g":
            roots["globals"][key] = value
        elif kind == "s":
            roots["statics"][key] = value
        elif kind == "i":
            roots["iterators"][key] = value
        elif kind.startswith("f") and key:
            roots["frames"][int(kind[1:]) - 1][key] = value
    roots["hidden"] = values.get("hidden")
    return roots


def snapshot(roots: Mapping[str, object], main_module: types.ModuleType | None = None) -> list:
    """Pickle a set of named roots into pods, with no Session and no store: the
    machinery of a commit, for a snapshot of live state (``dart.transaction()``).
    Objects shared between roots stay shared; buffers are copied now, so later
    changes to the live objects do not reach the snapshot. CaptureError if a root
    does not pickle."""
    try:
        cut, keep = pods.cut(list(roots.items()), main_module=main_module)
    except Exception as exc:
        raise CaptureError(f"the state could not be saved: {_reason(exc)}") from exc
    for pod in cut:
        pod.buffers = [bytearray(b.raw()) for b in pod.buffers]
    del keep
    return cut


def restore_snapshot(cut: list, main_namespace: dict | None = None) -> dict[str, object]:
    """The roots of :func:`snapshot` (or of pods still in memory), as new objects."""
    def copy(buffer) -> bytearray:
        return bytearray(buffer.raw() if isinstance(buffer, pickle.PickleBuffer) else buffer)

    return assemble([(p.name, p.stream, [copy(b) for b in p.buffers]) for p in cut], main_namespace)


def restore_pods(cut: list, main_namespace: dict | None = None) -> dict:
    """The roots dict from pods still in memory (their buffers copied): the
    in-memory inverse of :meth:`Capturer.capture`."""
    return _roots_from_pods(restore_snapshot(cut, main_namespace))


def load_roots(store, record: dict, main_namespace: dict | None = None, state=None) -> dict:
    """The roots dict of a commit: inverse of :meth:`Capturer.capture`. ``state``:
    the commit's ``CommitState`` if the caller wants it (it keeps the loaded buffers)."""
    from ..store.layout import CommitState

    state = CommitState(store, record) if state is None else state
    if state.legacy:  # a commit of dart 0.1: one stream, whole buffers
        return restore(
            store.get_object(record.state["pickle"]),
            [store.get_object(oid) for oid in record.state["buffers"]],
            main_namespace,
        )
    return _roots_from_pods(assemble(state.read(), main_namespace, commit=record.id))


def frame_names(record) -> list[str]:
    """The function of each frame on a commit's path, outermost first, without
    the module's frame: frame ``i`` of this list holds the locals saved as ``f{i+1}:``."""
    frames = (record.position or {}).get("frames") or []
    return [frame.get("qualname", "?") for frame in frames[1:]]


class SavedVariables(Mapping):
    """The global variables of a commit, each loaded on first access together with
    the objects it shares with others (``dart.load`` returns one). ``frames``
    maps each function on the commit's path (outermost first) to its locals,
    loaded the same way: ``v.frames["main"]["model"]``."""

    def __init__(self, store, record, main_namespace: dict | None = None, hint: str | None = None):
        from ..store.layout import CommitState

        self.commit = record.id
        self.record = record
        self._state = CommitState(store, record)
        self._namespace = main_namespace
        self._hint = hint  # added to a loading error: what the caller can do about it
        self._memos: dict = {}
        self._values: dict = {}
        if self._state.legacy:
            self._values = {f"g:{k}": v for k, v in load_roots(store, record, main_namespace)["globals"].items()}
            self._names = [k[2:] for k in self._values]
            pod_names: list[str] = []
        else:
            pod_names = self._state.names
            self._names = [n[2:] for n in pod_names if n.startswith("g:")]
        self.frames: dict[str, FrameVariables] = {}
        for index, qualname in enumerate(frame_names(record), start=1):
            prefix = f"f{index}:"
            self.frames[qualname] = FrameVariables(self, prefix, qualname, [n[len(prefix):] for n in pod_names if n.startswith(prefix)])

    def _load(self, key: str, label: str):
        if key not in self._values:
            try:
                self._values.update(assemble(self._state.read([key], self._memos), self._namespace, self._memos, self.commit))
            except CaptureError as exc:
                if self._hint is None:
                    raise
                raise CaptureError(f"variable {label!r} of commit {self.commit[:12]}: {exc.message}; {self._hint}") from exc
        return self._values[key]

    def __getitem__(self, name: str):
        if name not in self._names:
            raise KeyError(name)
        return self._load(f"g:{name}", name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return name in self._names

    def lookup(self, name: str):
        """A global (``"model"``) or a frame's local (``"main.model"``,
        ``"Trainer.fit.model"``: the function's qualified name, a dot, the local)."""
        if name in self._names:
            return self[name]
        function, _, local = name.rpartition(".")
        if function in self.frames and local in self.frames[function]:
            return self.frames[function][local]
        raise KeyError(name)

    def has(self, name: str) -> bool:
        """Whether :meth:`lookup` finds ``name``."""
        function, _, local = name.rpartition(".")
        return name in self._names or (function in self.frames and local in self.frames[function])

    def all_names(self) -> list[str]:
        """Every name :meth:`lookup` takes: globals, then ``function.local`` per frame."""
        return list(self._names) + [f"{f}.{n}" for f, frame in self.frames.items() for n in frame]

    def loaded(self) -> list[str]:
        """The names whose values have been loaded so far."""
        return [n for n in self._names if f"g:{n}" in self._values]

    def __repr__(self):
        frames = "".join(f"; {f}(): {', '.join(frame)}" for f, frame in self.frames.items())
        return f"<dart variables of commit {self.commit[:12]}: {', '.join(self._names)}{frames}>"


class FrameVariables(Mapping):
    """The locals of one frame on a commit's path, loaded on first access."""

    def __init__(self, owner: SavedVariables, prefix: str, qualname: str, names: list[str]):
        self._owner = owner
        self._prefix = prefix
        self.function = qualname
        self._names = names

    def __getitem__(self, name: str):
        if name not in self._names:
            raise KeyError(name)
        return self._owner._load(self._prefix + name, f"{self.function}.{name}")

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return name in self._names

    def __repr__(self):
        return f"<dart locals of {self.function}() in commit {self._owner.commit[:12]}: {', '.join(self._names)}>"


def assemble(parts, main_namespace: dict | None = None, memos: dict | None = None, commit: str | None = None) -> dict:
    """pods.assemble, with loading errors said in dart's words; ``commit``: the
    id of the commit the parts belong to."""
    token = loading_commit.set(commit)
    try:
        return pods.assemble(parts, main_namespace=main_namespace, memos=memos)
    except DartError:
        raise
    except Exception as exc:  # a library's __setstate__ can fail any way (RecursionError, TypeError, ...)
        what = _root_name(getattr(exc, "dart_pod", None))
        raise CaptureError(
            f"{what} could not be loaded: {type(exc).__name__}: {_reason(exc)}. Resume from an earlier "
            "commit (`dart log`, `dart run --at COMMIT`) or start over with --fresh; if the same type "
            "fails again, report it with the variable's type",
            variable=what,
        ) from exc
    finally:
        loading_commit.reset(token)


def restore(stream: bytes, buffers: list[bytes], main_namespace: dict | None = None) -> dict:
    """Roots of a dart 0.1 commit (one stream, whole buffers)."""
    try:
        return pickler.loads(stream, [bytearray(b) for b in buffers], main_namespace=main_namespace)
    except (pickle.UnpicklingError, AttributeError, ImportError, ModuleNotFoundError) as exc:
        raise CaptureError(f"a saved object could not be loaded: {_reason(exc)}") from exc
