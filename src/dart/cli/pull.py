"""``dart pull SRC [--store DIR|URL] [--run RUN]``: copy runs from SRC into the store."""

from __future__ import annotations

import argparse

from ..config import resolve
from . import add_store_option
from .copy import add_run_arguments, copy

HELP = "copy runs from another store into the store (--store), fetching only what it lacks"
DESCRIPTION = "`dart copy SRC STORE`: copy runs (default: all) from SRC, e.g. s3://bucket/team, into the store."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("src", metavar="SRC", help="the store to copy from (a directory or s3://BUCKET/PREFIX)")
    add_run_arguments(parser)


def main(args) -> int:
    return copy(args.src, resolve(store=args.store, s3_endpoint=args.s3_endpoint).store, args)
