"""History: the commits of a store as a user browses them.

Naming commits (``address``: ids, tags, ``RUN@N``, ``HEAD~N``), what a commit
holds frame by frame (``contents``), how two commits differ (``diff``), which
commits a retention policy keeps and collecting the rest (``gc``), and whether
this process can load a commit's objects (``environment``). Commands in
``dart.cli`` and ``dart.load`` are the front ends; this layer only reads and
returns facts (and ``gc`` deletes what its plan says).
"""
