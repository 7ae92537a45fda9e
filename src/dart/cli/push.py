"""``dart push DST [--store DIR|URL] [--run RUN]``: copy runs from the store to DST."""

from __future__ import annotations

import argparse

from ..config import resolve
from . import add_store_option
from .copy import add_run_arguments, copy

HELP = "copy runs from the store (--store) to another store, sending only what it lacks"
DESCRIPTION = "`dart copy STORE DST`: copy runs (default: all) from the store to DST, e.g. s3://bucket/team."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("dst", metavar="DST", help="the store to copy into (a directory or s3://BUCKET/PREFIX)")
    add_run_arguments(parser)


def main(args) -> int:
    return copy(resolve(store=args.store, s3_endpoint=args.s3_endpoint).store, args.dst, args)
