"""csv writers that can be saved.

The C ``_csv.writer`` does not pickle, and does not say which file it writes
to, so a training script that logs metrics through ``csv.writer(f)`` (or a
``csv.DictWriter``) held in a local could not be committed. While dart runs,
``csv.writer`` makes a thin wrapper with the same methods that remembers its
file and dialect and pickles as them (the file as dart saves open files:
reopened at its size at the commit). Writers made before dart started stay C
ones.
"""

from __future__ import annotations

import _csv
import csv


class SavableCsvWriter:
    """``csv.writer(target, dialect, **fmtparams)``, picklable."""

    __slots__ = ("_dialect", "_params", "_target", "_writer")

    def __init__(self, target, dialect="excel", **fmtparams):
        self._writer = _csv.writer(target, dialect, **fmtparams)
        self._target, self._dialect, self._params = target, dialect, fmtparams

    def writerow(self, row):
        return self._writer.writerow(row)

    def writerows(self, rows):
        return self._writer.writerows(rows)

    @property
    def dialect(self):
        return self._writer.dialect

    def __reduce__(self):
        return _remake, (self._target, self._dialect, self._params)


def _remake(target, dialect, params):
    return SavableCsvWriter(target, dialect, **params)


def install() -> None:
    """``csv.writer`` (and so ``csv.DictWriter``) makes savable writers from now on."""
    csv.writer = SavableCsvWriter


def uninstall() -> None:
    if csv.writer is SavableCsvWriter:
        csv.writer = _csv.writer
