"""Resume: continue a program from a commit (see ``dart.resume.continuation``)."""
