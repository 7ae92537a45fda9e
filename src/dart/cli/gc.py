"""``dart gc [--keep-last N] [--thin SECONDS] [--dry-run]``: free space."""

from __future__ import annotations

import argparse

from ..config import resolve
from ..history.gc import Policy, collect, plan
from ..store import open_store
from . import add_store_option, positive_int
from .tables import print_json, progress_on_terminal, size

HELP = "delete old commits by a retention policy, and the objects only they needed"
DESCRIPTION = (
    "Free space: keep every tagged commit, the newest N commits of every run, what every "
    "unfinished run resumes from and the commits branches started from (optionally one per "
    "--thin SECONDS of older commits); delete the other commits and every object no kept commit "
    "needs. Never runs alongside a run that is writing: it waits up to --wait seconds for it, "
    "else stops without deleting anything. --dry-run says what would go."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("--keep-last", type=positive_int, default=5, metavar="N",
                        help="newest commits kept per run (default 5)")
    parser.add_argument("--thin", type=float, metavar="SECONDS",
                        help="of the older commits, keep one per SECONDS of each run (e.g. 3600: one per hour)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for writing runs to end (default: do not wait)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    policy = Policy(keep_last=args.keep_last, thin=args.thin)
    if args.dry_run:
        result = plan(store, policy)
    else:
        with progress_on_terminal("collecting") as tick:
            result = collect(store, policy, wait=args.wait, progress=tick)
    if args.json:
        print_json(dict(result.to_json(done=not args.dry_run), dry_run=args.dry_run))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(result.delete_commits)} commit(s) and {len(result.delete_objects)} object(s), "
          f"{size(result.freed_bytes)}; kept {len(result.keep)} commit(s)")
    return 0
