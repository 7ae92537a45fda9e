"""``dart copy SRC DST [--run RUN]``: copy runs between stores, sending only what DST lacks."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import resolve
from ..store import open_store
from ..store.transfer import copy_runs
from . import add_s3_endpoint_option

HELP = "copy runs from one store to another (local or s3://), sending only what is missing"
DESCRIPTION = (
    "Copy runs (default: all) with their history from store SRC to store DST: the objects and commit "
    "records DST lacks, checked against their checksums, then each run's ref (by compare-and-swap; a run "
    "whose history diverged in DST is refused). `dart push` and `dart pull` are the same with --store "
    "as one side."
)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", metavar="RUN", action="append", help="copy only this run (repeatable)")
    parser.add_argument("--json", action="store_true", help="print what was copied as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="the store to copy from (a directory or s3://BUCKET/PREFIX)")
    parser.add_argument("dst", metavar="DST", help="the store to copy into (created if it does not exist)")
    add_s3_endpoint_option(parser)
    add_run_arguments(parser)


def copy(src_location: str, dst_location: str, args) -> int:
    options = resolve(store=src_location, s3_endpoint=args.s3_endpoint)
    src = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    dst = open_store(dst_location, mode=options.store_mode, s3_endpoint=options.s3_endpoint)
    done = copy_runs(src, dst, args.run)
    if args.json:
        json.dump(done.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"copied {len(done.refs)} run(s) from {src.location} to {dst.location}: {len(done.commits)} new "
              f"commit(s), {done.objects_sent} object(s) sent ({done.bytes_sent} bytes), "
              f"{done.objects_present} already there")
    return 0


def main(args) -> int:
    return copy(args.src, args.dst, args)
