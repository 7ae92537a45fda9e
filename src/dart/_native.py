"""The compiled extension, loaded in one place with a clear error if it cannot be."""

from __future__ import annotations

import importlib
import pathlib

from .errors import NativeLoadError

try:
    _ext = importlib.import_module("dart._monitor")
except ImportError as exc:  # pragma: no cover - depends on the installation
    here = pathlib.Path(__file__).parent
    found = sorted(p.name for p in here.glob("_monitor*"))
    raise NativeLoadError(
        f"dart's native extension 'dart._monitor' could not be loaded from {here}: {exc}. "
        + (f"Files found: {', '.join(found)}. " if found else "No built extension is there. ")
        + "Reinstall dart with `pip install .` from a source checkout (it builds with CMake and "
        "Cython), using the same Python that runs your program."
    ) from exc

set_due = _ext.set_due
is_due = _ext.is_due
set_handlers = _ext.set_handlers
line_event = _ext.line_event
jump_event = _ext.jump_event
frame_stack = _ext.frame_stack
replace_stack_item = _ext.replace_stack_item
branch_event = _ext.branch_event
track_loop = _ext.track_loop
set_loop_handlers = _ext.set_loop_handlers
CountingIterator = _ext.CountingIterator
