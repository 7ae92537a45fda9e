"""Checking a commit's environment against this process before its objects are
loaded (``dart.load``, ``dart run --at``, ``dart show``): what breaks unpickling
stops with the module named; what does not, warns once."""

from __future__ import annotations

import warnings

from ..capture.hidden import environment_differences
from ..errors import DartWarning, ResumeError

_warned: set[str] = set()


def needed_modules(record, streams=None) -> set[str]:
    """The recorded packages whose names the commit's pickle streams mention
    (the objects need them to load). ``streams``: the pod streams if the caller
    has them; without them every recorded package counts as needed."""
    recorded = set((record.env or {}).get("modules") or {}) | {n for n in ("numpy", "torch") if (record.env or {}).get(n)}
    if streams is None:
        return recorded
    return {name for name in recorded if any(name.encode() in bytes(s) for s in streams)}


def state_streams(store, record) -> list | None:
    """The pickle streams of a commit (small: buffers are out of band), or None."""
    from ..store.layout import CommitState

    try:
        state = CommitState(store, record)
        if state.legacy:
            return None
        return [stream for _, stream in state._read_pod_streams(state.names).items()]
    except Exception:
        return None


def check_environment(record, action: str, store=None, warn: bool = True) -> list[str]:
    """Stop (ResumeError) if this process cannot load commit ``record``'s objects
    (a package they need missing, or at another major version); warn
    once per difference otherwise (unless ``warn`` is false: the caller words
    them). Returns the other differences."""
    streams = state_streams(store, record) if store is not None else None
    breaking, other = environment_differences(record.env or {}, needed_modules(record, streams))
    if breaking:
        raise ResumeError(
            f"cannot {action} commit {record.short} here: {'; '.join(breaking)}; install the version the "
            f"commit was made with (`dart show {record.short}` lists its environment) and try again"
        )
    fresh = [line for line in other if line not in _warned] if warn else []
    for line in fresh:
        _warned.add(line)
        warnings.warn(f"commit {record.short}: {line}", DartWarning, stacklevel=3)
    return other
