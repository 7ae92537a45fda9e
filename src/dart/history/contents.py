"""What a commit holds, frame by frame: each saved variable with its type,
shape, size and whether it changed since the parent commit."""

from __future__ import annotations

from ..capture import SavedVariables, frame_names
from ..errors import DartError
from ..store.layout import CommitState

MODULE_FRAME = "<module>"


def _pod_fingerprints(state: CommitState) -> dict[str, tuple]:
    """Pod name -> what identifies its saved bytes (stream hash, buffers' extents)."""
    out = {}
    for name, row in state.pods.items():
        buffers = []
        for number in row[5]:
            nbytes, spec = state.index["buffers"][number]
            if isinstance(spec, str):
                buffers.append((nbytes, spec))  # a manifest object, named by its content
            else:
                buffers.append((nbytes, tuple((s, n, state.objects[o], off, h) for s, n, o, off, h in spec)))
        out[name] = (row[6], tuple(buffers))
    return out


def _label(record, pod: str) -> tuple[str, str] | None:
    """(frame, variable) of a pod name, None for pods that are no variable."""
    kind, _, name = pod.partition(":")
    if kind == "g":
        return MODULE_FRAME, name
    if kind.startswith("f") and kind[1:].isdigit():
        names = frame_names(record)
        index = int(kind[1:]) - 1
        return (names[index] if index < len(names) else kind), name
    return None


def describe_value(value) -> dict:
    """Type, and shape/dtype or length, of a loaded value (JSON-ready)."""
    cls = type(value)
    module = "__main__" if cls.__module__ == "__dart_load__" else cls.__module__  # the script, loaded by run_source
    info: dict = {"type": cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"}
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "dtype", None) is not None:
        try:
            info["shape"] = [int(n) for n in shape]
            info["dtype"] = str(value.dtype)
        except (TypeError, ValueError):
            pass
    elif isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        info["length"] = len(value)
    elif hasattr(value, "state_dict") and callable(value.state_dict):
        try:
            state = value.state_dict()
            info["parameters"] = len(state.get("state", state)) if isinstance(state, dict) else None
        except Exception:
            pass
    if isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 40):
        info["value"] = value
    return info


def commit_variables(store, record, load: bool = True, main_namespace: dict | None = None,
                     progress=None) -> list[dict]:
    """Every variable of ``record``: [{"frame", "name", "bytes", "changed",
    "type", ...}] in path order (globals first). ``changed``: "new", "changed" or
    "same" against the parent commit (None without a parent to compare).
    With ``load``, each value is loaded for its type and shape; one that cannot
    be loaded here says why in "error". ``main_namespace``: the script's
    definitions, for objects of its classes (see dart.load's run_source).
    ``progress(done, total)`` is called as values are loaded."""
    state = CommitState(store, record)
    if state.legacy:
        raise DartError(f"commit {record.short} was written by dart 0.1; `dart show` cannot list its variables")
    mine = _pod_fingerprints(state)
    before = None
    if record.parent:
        try:
            parent = store.read_commit(record.parent)
            parent_state = CommitState(store, parent)
            if not parent_state.legacy:
                before = {_label(parent, p): f for p, f in _pod_fingerprints(parent_state).items()}
        except Exception:
            before = None  # the parent was collected or cannot be read: nothing to compare with
    values = SavedVariables(store, record, main_namespace=main_namespace) if load else None
    rows = []
    total = len(mine)
    for done, (pod, fingerprint) in enumerate(mine.items(), start=1):
        if progress is not None:
            progress(done, total)
        label = _label(record, pod)
        if label is None:
            continue
        frame, name = label
        row = {
            "frame": frame,
            "name": name,
            "bytes": state.pods[pod][3] + sum(b[0] for b in fingerprint[1]),
            "changed": None if before is None else ("new" if label not in before else
                                                  "same" if before[label] == fingerprint else "changed"),
        }
        if values is not None:
            try:
                value = values[name] if frame == MODULE_FRAME else values.frames[frame][name]
                row.update(describe_value(value))
            except Exception as exc:  # a class of the script, a module missing here: say so, go on
                row["type"] = "?"
                text = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).splitlines()[0][:200]
                if "Can't get attribute" in text:
                    text = "an object of a class of the script: --run-source loads it (" + text + ")"
                row["error"] = text
        rows.append(row)
    return rows
