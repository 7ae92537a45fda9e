"""The command line (``dart ...`` / ``python -m dart ...``).

Each subcommand is a module of this package with ``HELP`` (one line for the
list of commands), ``DESCRIPTION``, ``add_arguments(parser)`` and
``main(args) -> exit code``, registered in ``COMMANDS``: adding a command is
adding a module and a line here. Errors are presented once, here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import DartError

DESCRIPTION = """\
dart commits the state of a running Python program at safe points so that a
crash, a kill -9 or an exception loses almost nothing: run the same command
again and the program continues where it was."""

#: command name -> module (in the order `dart --help` lists them)
COMMANDS = {
    "run": "dart.cli.run",
    "log": "dart.cli.log",
    "fsck": "dart.cli.fsck",
    "runs": "dart.cli.runs",
    "show": "dart.cli.show",
    "diff": "dart.cli.diff",
    "tag": "dart.cli.tag",
    "checkout": "dart.cli.checkout",
    "gc": "dart.cli.gc",
    "export": "dart.cli.export",
    "import": "dart.cli.import_",
    "copy": "dart.cli.copy",
    "push": "dart.cli.push",
    "pull": "dart.cli.pull",
}


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="DIR|URL",
        help="the store: a directory or s3://BUCKET/PREFIX (default: $DART_STORE or ./.dart)",
    )
    add_s3_endpoint_option(parser)


def add_s3_endpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--s3-endpoint", metavar="URL",
        help="the S3-compatible server of s3:// stores, e.g. http://127.0.0.1:9000 (default: "
        "$DART_S3_ENDPOINT, [tool.dart] s3_endpoint, else AWS's own: $AWS_ENDPOINT_URL or AWS S3)",
    )


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="dart",
        description=DESCRIPTION,
        epilog="examples:\n"
        "  dart run train.py --lr 0.1      run (or resume) train.py with its arguments\n"
        "  dart run --every 0 train.py     commit at every safe point\n"
        "  dart run --fresh train.py       start over\n"
        "  dart log --json                 the commits, for tools\n"
        "  dart fsck --repair              check the store and mend it\n"
        "  dart runs                       every run: status, commits, newest position\n"
        "  dart show HEAD~2                a commit's position and variables, per frame\n"
        "  dart diff RUN@2 HEAD            what changed between two commits\n"
        "  dart tag best HEAD              name a commit\n"
        "  dart checkout best              continue from a past commit, as a new run\n"
        "  dart gc --keep-last 3 --dry-run what deleting old commits would free",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dart {__version__} (Python {sys.version.split()[0]})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(command)
        command.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .. import present

    present.setup()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except DartError as exc:
        present.report_error(exc, "cli")
        return 2
    except BrokenPipeError:  # `dart log | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
