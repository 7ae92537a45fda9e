"""``dart checkout COMMIT [-- ARGS...]``: continue the program from a past commit."""

from __future__ import annotations

import argparse
import os

from ..config import resolve
from ..errors import ScriptError
from ..history.address import resolve_commit
from ..runner import run_script
from ..store import open_store
from . import add_store_option

HELP = "continue the program from a past commit, as a new run (a branch)"
DESCRIPTION = (
    "Run the script of COMMIT again from that commit, not from its newest: a new run starts there "
    "(a branch, shown by `dart log` and `dart runs`), and the commits made after COMMIT stay. The "
    "script is the one the commit was made by (edit it first to fix and resume), run with the "
    "commit's arguments unless ARGS are given after `--`. Same as `dart run --at COMMIT SCRIPT ARGS`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("commit", metavar="COMMIT", help="the commit to continue from (id, tag, RUN@N, HEAD~N, ...)")
    parser.add_argument("--script", metavar="SCRIPT", help="run this script instead of the commit's")
    parser.add_argument("--every", metavar="SECONDS|never", help="commit interval, as for `dart run`")
    parser.add_argument("-q", "--quiet", action="store_true", help="no line on stderr when the run resumes")
    parser.add_argument("args", nargs="*", metavar="ARGS",
                        help="arguments for the script, after -- (default: the commit's)")


def main(args) -> int:
    options = resolve(store=args.store, every=args.every, s3_endpoint=args.s3_endpoint)
    record = resolve_commit(open_store(options.store, create=False, s3_endpoint=options.s3_endpoint), args.commit)
    script = args.script or record.source.get("file") or record.command.get("script")
    if not script:
        raise ScriptError(f"commit {record.short} does not say which script made it; pass --script SCRIPT")
    argv = args.args if args.args else list(record.command.get("argv") or [])
    if args.quiet:
        os.environ["DART_QUIET"] = "1"
    return run_script(script, argv, options, at=record.id)
