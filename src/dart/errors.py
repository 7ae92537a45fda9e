"""One error hierarchy and one warning class for everything a user can see.

Every message says what happened, to which variable or file, and what to do next.
"""


class DartError(Exception):
    """Base class of every error dart raises on purpose."""


class NativeLoadError(DartError, ImportError):
    """The compiled extension could not be loaded."""


class ConfigError(DartError, ValueError):
    """An option, environment variable or pyproject setting has a bad value."""


class StoreError(DartError):
    """The store cannot be opened, read or written."""


class CorruptObjectError(StoreError):
    """An object or record in the store failed its checksum or could not be parsed."""


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


class DartWarning(UserWarning):
    """Something was not captured or not resumed, named with its variable and reason."""
