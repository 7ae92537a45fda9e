"""One error hierarchy and one warning class for everything a user can see.

An error states a fact: what happened, to which variable, file or commit
(``message``), and which next step helps (``next_step``, a key of NEXT_STEPS,
or none). Facts a tool may want are attributes too (``RunBusyError.holder``).
How the next step is worded depends on where the user is (``dart run`` on the
command line, ``dart.enable()`` in a script, Python code calling dart): the
presenter (``dart.present``) picks the wording; ``str(error)`` uses the generic one.
"""

from __future__ import annotations

#: next step -> wording per front end ("cli": dart's commands, "enable": a script
#: that calls dart.enable(), "api": any other Python caller).
NEXT_STEPS: dict[str, dict[str, str]] = {
    "fresh": {
        "cli": "run again with --fresh to start over",
        "enable": "start over with dart.enable(fresh=True) (or `dart run --fresh SCRIPT`)",
        "api": "start over with --fresh (dart.enable(fresh=True))",
    },
    "damaged": {
        "cli": "the store is damaged: restore it from a copy, or run again with --fresh to start over",
        "enable": "the store is damaged: restore it from a copy, or start over with dart.enable(fresh=True)",
        "api": "the store is damaged: restore it from a copy or start over with --fresh",
    },
    "store": {
        "cli": "pass the right --store",
        "enable": "pass store= to dart.enable() or set DART_STORE",
        "api": "pass store= or set DART_STORE",
    },
    "log": {
        "cli": "`dart log` lists them",
        "enable": "`dart log` lists them",
        "api": "`dart log` lists them",
    },
}


def with_step(message: str, next_step: str | None, front_end: str = "api") -> str:
    """``message`` followed by the next step worded for ``front_end``."""
    if next_step is None:
        return message
    words = NEXT_STEPS[next_step][front_end]
    return f"{message.rstrip('. ')}. {words[0].upper()}{words[1:]}."


class DartError(Exception):
    """Base class of every error dart raises on purpose."""

    def __init__(self, message: str = "", *, next_step: str | None = None, **facts: object) -> None:
        super().__init__(message)
        self.message = message
        self.next_step = next_step
        self.facts = facts
        for name, value in facts.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return with_step(self.message, self.next_step)


class NativeLoadError(DartError, ImportError):
    """The compiled extension could not be loaded."""


class ConfigError(DartError, ValueError):
    """An option, environment variable or pyproject setting has a bad value."""


class StoreError(DartError):
    """The store cannot be opened, read or written."""


class CorruptObjectError(StoreError):
    """An object or record in the store failed its checksum or could not be parsed."""


class CommitFailedError(StoreError):
    """Commits cannot be written and on_store_error=stop says to stop the program."""


class RunBusyError(StoreError):
    """Another process holds the run's lease (``holder``)."""


class DeltaError(DartError, ValueError):
    """A buffer could not be tracked or compared (raised by the native delta engine)."""


class BufferMovedError(DeltaError):
    """A tracked buffer was resized or re-allocated since it was last seen: its
    tracker no longer describes it."""


class CaptureError(DartError):
    """The program's state could not be captured at all."""


class ResumeError(DartError):
    """A run cannot be resumed from its commit (and what to do instead)."""


class ScriptError(DartError):
    """The script to run is missing or does not compile."""


class TransactionError(DartError):
    """A transaction could not start (strict=True and something cannot be snapshot),
    was used wrongly (ended out of order), or a commit was asked for inside one."""


class DartWarning(UserWarning):
    """Something was not captured or not resumed, named with its variable and reason."""
