"""``dart run [--store DIR] [--every S|never] [--fresh] [--staging SIZE] SCRIPT [ARGS...]``"""

from __future__ import annotations

import argparse
import os

from ..config import resolve
from ..runner import run_script
from . import add_store_option

HELP = "run a script under dart (resumes an unfinished run of the same command)"
DESCRIPTION = (
    "Run SCRIPT as `python SCRIPT ARGS` would, committing its state at safe points. "
    "If the same command (script and arguments) ran before with this store and did not "
    "finish, continue from its newest commit."
)


def add_arguments(run: argparse.ArgumentParser) -> None:
    add_store_option(run)
    run.add_argument(
        "--every",
        metavar="SECONDS|never",
        help="commit interval: 0 commits at every safe point, 30 at the first safe point 30 s after "
        "the previous commit, 'never' only on dart.commit() (default: $DART_EVERY or 30, "
        "stretched so commits cost under 2%% of the run time)",
    )
    run.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    run.add_argument(
        "--user-code",
        metavar="PACKAGE",
        action="append",
        help="also treat this installed package as user code, so commits can happen inside its "
        "functions (repeatable; default: $DART_USER_CODE; modules in the script's folder always are, "
        "unless DART_LOCAL_MODULES=0)",
    )
    run.add_argument(
        "--staging",
        metavar="SIZE",
        help="memory a commit copies changed bytes into before they are written, e.g. 512M or 8G; a "
        "commit with more changed bytes waits for the disk (default: $DART_STAGING or a quarter of "
        "the machine's memory, at most 4G; touched only as commits need it)",
    )
    run.add_argument(
        "--on-store-error",
        metavar="warn|stop",
        help="when commits cannot be written (disk full, store deleted or read-only): 'warn' once and let "
        "the program go on while dart retries, or 'stop' the program with a message "
        "(default: $DART_ON_STORE_ERROR or warn)",
    )
    run.add_argument(
        "--at",
        metavar="COMMIT",
        help="continue from this past commit (id, tag, RUN@N, HEAD~N, ...) as a new run, a branch: the "
        "commits after it stay; the script may be edited and its arguments changed where the saved "
        "position is still valid",
    )
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no line on stderr when the run starts or resumes (also: DART_QUIET=1)")
    run.add_argument(
        "--atomic-steps",
        action="store_true",
        default=None,
        help="each iteration of a loop in the script's top-level code runs as a dart.transaction: when an "
        "exception raised in an iteration is caught (by a try inside the loop or around it), the live "
        "state is first rolled back to the start of that iteration (default: $DART_ATOMIC_STEPS)",
    )
    run.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for the script")


def main(args) -> int:
    options = resolve(
        store=args.store, every=args.every, fresh=args.fresh, user_code=args.user_code, staging=args.staging,
        on_store_error=args.on_store_error, s3_endpoint=args.s3_endpoint, atomic_steps=args.atomic_steps,
    )
    if args.quiet:
        os.environ["DART_QUIET"] = "1"
    return run_script(args.script, args.args, options, at=args.at)
