"""``dart export COMMIT FILE [--with-history]``: one commit as one self-contained file."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import resolve
from ..store import open_store
from ..store.transfer import export_archive
from . import add_store_option

HELP = "write a commit (and, by option, its history) to one archive file"
DESCRIPTION = (
    "Write COMMIT (an id, a unique prefix or a run id: its newest commit) and every object it needs to "
    "FILE, one self-contained archive that `dart import` adds to any store, on any machine. "
    "Only that commit by default; --with-history adds its ancestors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("commit", metavar="COMMIT", help="commit id, unique prefix (4+ hex digits) or run id")
    parser.add_argument("file", metavar="FILE", help="the archive to write (replaced if it exists)")
    parser.add_argument("--with-history", action="store_true", help="also the commit's ancestors")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    done = export_archive(store, args.commit, args.file, with_history=args.with_history)
    if args.json:
        json.dump(dict(done.as_json(), file=args.file), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"exported {len(done.commits)} commit(s), {done.objects_sent} object(s), "
              f"{done.bytes_sent} bytes to {args.file}")
    return 0
