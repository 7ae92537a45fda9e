"""How dart talks to people: one line per message on stderr, never stdout."""

from __future__ import annotations

import logging
import sys
import warnings

from .errors import DartWarning

_installed = False


def setup() -> None:
    """Route the "dart" logger and DartWarning to stderr as ``dart: ...`` lines."""
    global _installed
    if _installed:
        return
    _installed = True
    logger = logging.getLogger("dart")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DartWarning):
            print(f"dart: warning: {message}", file=sys.stderr if file is None else file)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
