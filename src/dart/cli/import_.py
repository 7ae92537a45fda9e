"""``dart import FILE [--store DIR|URL]``: add an archive written by `dart export` to a store."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import resolve
from ..store import open_store
from ..store.transfer import import_archive
from . import add_store_option

HELP = "add an archive written by `dart export` to a store (every checksum verified)"
DESCRIPTION = (
    "Add the commits of FILE (written by `dart export`) to the store, and move their run's ref to the "
    "exported commit. Every member is checked first (names, sizes, checksums): an archive with a "
    "damaged member or a name outside the store is refused and nothing is written. Running the same "
    "command afterwards resumes from the imported commit."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("file", metavar="FILE", help="the archive")
    parser.add_argument("--json", action="store_true", help="print what was imported as JSON")


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, mode=options.store_mode, s3_endpoint=options.s3_endpoint)
    done = import_archive(args.file, store)
    if args.json:
        json.dump(done.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        heads = ", ".join(f"run {run} at {cid[:12]}" for run, cid in done.refs.items())
        print(f"imported {len(done.commits)} new commit(s), {done.objects_sent} object(s) "
              f"({done.objects_present} already there) into {store.location}; {heads}")
    return 0
