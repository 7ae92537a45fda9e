"""Capture: turn the program's roots into one pickle stream plus buffers.

Roots are the main module's globals, the iterators of the loops on the path to
the safe point and hidden state (random generators). A variable that cannot be
pickled is left out and named in one warning; the commit goes on without it.
"""

from __future__ import annotations

import pickle
import types
import warnings

from ..errors import CaptureError, DartWarning
from . import pickler
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


def _type_name(value) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


class Capturer:
    """Captures the state of one main module, commit after commit."""

    def __init__(self, main_module: types.ModuleType):
        self.main = main_module
        # name -> (id of the value, type name, reason): values known not to pickle
        self.skipped: dict[str, tuple[int, str, str]] = {}

    def is_program_global(self, name: str, value) -> bool:
        if name in SKIPPED_GLOBALS or name.startswith("__dart_"):
            return False
        return True

    def capture(
        self, namespace: dict, iterators: dict[str, object], frame_locals: list[dict] = ()
    ) -> tuple[bytes, list[bytes], dict]:
        """Pickle the roots: the module's globals, the loops' iterators and the
        locals of the function frames on the path. Returns (stream, private
        copies of the buffers, info) where info["skipped"] maps each left-out
        global to "type: reason". A global that does not pickle is left out; an
        iterator or a local that does not pickle makes the commit impossible
        here (UnsavableIterator)."""
        program = {}
        for name, value in namespace.items():
            if not self.is_program_global(name, value):
                continue
            known = self.skipped.get(name)
            if known is not None and known[0] == id(value) and known[1] == _type_name(value):
                continue
            program[name] = value
        roots = {"globals": program, "iterators": iterators, "frames": list(frame_locals), "hidden": capture_hidden()}
        try:
            stream, buffers = pickler.dumps(roots, main_module=self.main)
        except Exception:
            self._diagnose(program, iterators, frame_locals)
            for name in list(program):
                if name in self.skipped:
                    del program[name]
            try:
                stream, buffers = pickler.dumps(roots, main_module=self.main)
            except Exception as exc:
                raise CaptureError(
                    f"dart could not save the program's state: {_reason(exc)}. "
                    "Report this with the types of your global variables."
                ) from exc
        copies = [bytes(buf.raw()) for buf in buffers]
        for buf in buffers:
            buf.release()
        skipped = {n: f"{t}: {r}" for n, (_, t, r) in self.skipped.items() if n in namespace}
        return stream, copies, {"skipped": skipped}

    def _diagnose(self, program: dict, iterators: dict, frame_locals) -> None:
        """Find which variables do not pickle (slow path, once per new value)."""
        for name, value in program.items():
            try:
                pickler.dumps(value, main_module=self.main)
            except Exception as exc:
                type_name = _type_name(value)
                first_time = name not in self.skipped
                self.skipped[name] = (id(value), type_name, _reason(exc))
                if first_time:
                    warnings.warn(
                        f"variable '{name}' ({type_name}) is not saved in commits: "
                        f"{_reason(exc)}. If the program still needs it after a resume, "
                        "dart will stop and say so.",
                        DartWarning,
                        stacklevel=2,
                    )
        bad = {}
        named = [(f"loop iterator {key}", value) for key, value in iterators.items()]
        for index, local_vars in enumerate(frame_locals, start=1):
            named += [(f"local variable '{name}'", value) for name, value in local_vars.items()]
        for label, value in named:
            try:
                pickler.dumps(value, main_module=self.main)
            except Exception as exc:
                bad[label] = f"{_type_name(value)}: {_reason(exc)}"
        if bad:
            raise UnsavableIterator(bad)


class UnsavableIterator(CaptureError):
    """A loop iterator or a local variable on the path cannot be saved."""

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


def restore(stream: bytes, buffers: list[bytes], main_namespace: dict | None = None) -> dict:
    """Inverse of :meth:`Capturer.capture`: returns the roots dict."""
    try:
        return pickler.loads(stream, [bytearray(b) for b in buffers], main_namespace=main_namespace)
    except (pickle.UnpicklingError, AttributeError, ImportError, ModuleNotFoundError) as exc:
        raise CaptureError(f"a saved object could not be loaded: {_reason(exc)}") from exc
