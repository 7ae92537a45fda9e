"""The command line: ``dart run`` and ``dart log`` (``python -m dart ...``)."""

from __future__ import annotations

import argparse
import sys

from ..errors import DartError

DESCRIPTION = """\
dart commits the state of a running Python program at safe points so that a
crash, a kill -9 or an exception loses almost nothing: run the same command
again and the program continues where it was."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dart",
        description=DESCRIPTION,
        epilog="examples:\n"
        "  dart run train.py --lr 0.1      run (or resume) train.py with its arguments\n"
        "  dart run --every 0 train.py     commit at every safe point\n"
        "  dart run --fresh train.py       start over\n"
        "  dart log --json                 the commits, for tools",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a script under dart (resumes an unfinished run of the same command)",
        description="Run SCRIPT as `python SCRIPT ARGS` would, committing its state at safe points. "
        "If the same command (script and arguments) ran before with this store and did not "
        "finish, continue from its newest commit.",
    )
    _store_option(run)
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
    run.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for the script")

    log = sub.add_parser("log", help="list commits, newest first", description="List the commits in the store, newest first.")
    _store_option(log)
    log.add_argument("--run", metavar="RUN", help="only the commits of this run")
    log.add_argument("--json", action="store_true", help="print a JSON array (one object per commit)")
    log.add_argument("-n", "--limit", type=int, metavar="N", help="at most N commits")
    return parser


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR", help="the store directory (default: $DART_STORE or ./.dart)")


def main(argv: list[str] | None = None) -> int:
    from .. import messages

    messages.setup()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "run":
            from . import run as command
        else:
            from . import log as command
        return command.main(args)
    except DartError as exc:
        print(f"dart: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dart log | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
