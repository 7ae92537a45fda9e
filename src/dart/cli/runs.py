"""``dart runs``: every run in the store, its status and newest commit."""

from __future__ import annotations

import argparse
import sys

from ..config import resolve
from ..history.runs import run_summaries
from ..store import open_store
from . import add_store_option
from .tables import print_json, print_table, stamp

HELP = "list the runs: script, status (running/killed/failed/finished), newest commit"
DESCRIPTION = (
    "List every run in the store, oldest first: its script and arguments, its status (running, "
    "with the process that holds it; killed: it died without ending, run the same command again to "
    "resume; failed, with the exception; finished; abandoned: it had no commit to resume from), "
    "when it started, how many commits it made, and its newest commit and position. A run started "
    "from a past commit (`dart checkout`) names the commit it branched from."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON array (one object per run)")


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    damage: list[str] = []
    runs = run_summaries(store, damage)
    for problem in damage:
        print(f"dart: warning: store {store.location} is damaged: {problem}; `dart fsck` tells more", file=sys.stderr)
    if args.json:
        print_json(runs)
        return 0
    if not runs:
        print(f"no runs in {store.location}")
        return 0
    rows = []
    for run in runs:
        status = run["status"]
        if status == "running" and run["holder"]:
            status += f" ({run['holder']})"
        elif run["error"]:
            error = run["error"]
            status += f" ({error.get('type')}: {error.get('message', '')[:60]}" + (
                f" at {error['where']})" if error.get("where") else ")")
        command = " ".join([run["script"] or "?", *run["argv"]])
        if run["branched_from"]:
            command += f"  (from {run['branched_from'][:12]})"
        rows.append([run["id"], command, status, stamp(run["created"]), run["commits"],
                     (run["newest"] or "")[:12], run["position"] or ""])
    print_table(["RUN", "COMMAND", "STATUS", "STARTED", "COMMITS", "NEWEST", "POSITION"], rows)
    return 0
