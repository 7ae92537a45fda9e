"""How two commits differ, variable by variable and frame by frame."""

from __future__ import annotations

import difflib
import pprint

from ..capture import SavedVariables
from ..store.layout import CommitState
from .contents import MODULE_FRAME, _label, _pod_fingerprints

SMALL_TEXT = 2000  #: a value whose repr is shorter is shown as a text diff


def _numeric(value):
    """A NumPy array for arrays and tensors, else None."""
    module = type(value).__module__ or ""
    if module.startswith("torch") and hasattr(value, "detach") and hasattr(value, "numpy"):
        try:
            return value.detach().cpu().numpy()
        except Exception:
            return None
    if module == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
        import numpy as np

        return np.asarray(value)
    return None


def _array_change(a, b) -> dict:
    import numpy as np

    if a.shape != b.shape or a.dtype != b.dtype:
        return {"kind": "array", "shape": [list(a.shape), list(b.shape)], "dtype": [str(a.dtype), str(b.dtype)]}
    if a.dtype.kind in "biufc":
        different = a != b
        if a.dtype.kind in "fc":
            different &= ~(np.isnan(a) & np.isnan(b))
        count = int(np.count_nonzero(different))
        max_abs = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))[different])) if count else 0.0
    else:
        count, max_abs = int(np.count_nonzero(a != b)), None
    return {"kind": "array", "shape": list(a.shape), "dtype": str(a.dtype), "elements": int(a.size),
            "differing": count, "max_abs_diff": max_abs}


def _state_dict(value):
    method = getattr(value, "state_dict", None)
    if not callable(method):
        return None
    try:
        state = method()
    except Exception:
        return None
    return state if isinstance(state, dict) else None


def _flatten(state: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def value_change(a, b) -> dict:
    """What changed between two values of one variable (JSON-ready)."""
    left, right = _numeric(a), _numeric(b)
    if left is not None and right is not None:
        return _array_change(left, right)
    sa, sb = _state_dict(a), _state_dict(b)
    if sa is not None and sb is not None:  # a model or an optimizer: per parameter
        fa, fb = _flatten(sa), _flatten(sb)
        parameters = {}
        for key in sorted(set(fa) | set(fb), key=str):
            if key not in fa or key not in fb:
                parameters[key] = {"kind": "added" if key not in fa else "removed"}
                continue
            change = value_change(fa[key], fb[key])
            if change.get("differing", 1) or change["kind"] != "array":
                if change["kind"] == "equal":
                    continue
                parameters[key] = change
        return {"kind": "parameters", "parameters": parameters}
    try:
        if type(a) is type(b) and a == b:
            return {"kind": "equal"}
    except Exception:
        pass
    ta, tb = pprint.pformat(a, width=100), pprint.pformat(b, width=100)
    if len(ta) + len(tb) <= 2 * SMALL_TEXT and ta != tb and " at 0x" not in ta:
        lines = list(difflib.unified_diff(ta.splitlines(), tb.splitlines(), "before", "after", lineterm="", n=1))
        return {"kind": "text", "before": ta if "\n" not in ta else None, "after": tb if "\n" not in tb else None,
                "diff": lines[2:]}
    return {"kind": "object", "type": [type(a).__qualname__, type(b).__qualname__]}


def diff_commits(store, a, b) -> list[dict]:
    """[{"frame", "name", "status": added/removed/changed, "change"}], globals
    first then frame by frame. Variables whose saved bytes are the same in both
    commits are not loaded."""
    sa, sb = CommitState(store, a), CommitState(store, b)
    fa = {_label(a, p): (p, f) for p, f in _pod_fingerprints(sa).items() if _label(a, p)}
    fb = {_label(b, p): (p, f) for p, f in _pod_fingerprints(sb).items() if _label(b, p)}
    va, vb = SavedVariables(store, a), SavedVariables(store, b)

    def get(values, label):
        frame, name = label
        return values[name] if frame == MODULE_FRAME else values.frames[frame][name]

    out = []
    order = list(fa) + [label for label in fb if label not in fa]
    for label in order:
        frame, name = label
        if label not in fb:
            out.append({"frame": frame, "name": name, "status": "removed"})
        elif label not in fa:
            out.append({"frame": frame, "name": name, "status": "added"})
        elif fa[label][1] != fb[label][1]:
            try:
                change = value_change(get(va, label), get(vb, label))
            except Exception as exc:
                change = {"kind": "error", "error": (getattr(exc, "message", None) or str(exc))[:200]}
            if change["kind"] == "equal" or (change["kind"] == "parameters" and not change["parameters"]):
                continue  # saved differently (a reference moved), same value
            out.append({"frame": frame, "name": name, "status": "changed", "change": change})
    return out
