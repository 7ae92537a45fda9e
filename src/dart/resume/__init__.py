"""Resume: continue a program from a commit (see ``dart.resume.continuation``)."""

from . import generators  # noqa: F401  (registers how the pickler saves generators of the user's code)
