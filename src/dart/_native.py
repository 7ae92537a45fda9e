"""The compiled extensions, loaded in one place with a clear error if they cannot be.

``monitor`` is ``dart._monitor`` (the sys.monitoring callbacks, the frame value
stack, the counting iterator); ``delta`` is ``dart._delta`` (change detection per
chunk). Only ``dart.monitor`` and ``dart.delta`` use them; everything else goes
through those packages.
"""

from __future__ import annotations

import importlib
import pathlib
import types

from .errors import NativeLoadError


def _load(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(f"dart.{name}")
    except ImportError as exc:  # pragma: no cover - depends on the installation
        here = pathlib.Path(__file__).parent
        found = sorted(p.name for p in here.glob(f"{name}*") if not p.name.endswith(".pyi"))
        raise NativeLoadError(
            f"dart's native extension 'dart.{name}' could not be loaded from {here}: {exc}. "
            + (f"Files found: {', '.join(found)}. " if found else "No built extension is there. ")
            + "Reinstall dart with `pip install .` from a source checkout (it builds with CMake and "
            "Cython), using the same Python that runs your program."
        ) from exc


monitor = _load("_monitor")
delta = _load("_delta")
