"""``dart fsck [--store DIR] [--repair] [--json] [--quick]``: check a store, and mend it."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import resolve
from ..store import open_store
from ..store.check import check, repair
from . import add_store_option

HELP = "check every object, record, ref and run file of a store (and repair it)"
DESCRIPTION = (
    "Verify every object's checksum, every commit record against its id, every ref and run file, "
    "and list what is damaged and what is only garbage (objects no intact commit names, files a "
    "crash left). Exit status 0 when nothing is damaged, 1 when something is. With --repair, move "
    "each run's ref back to its newest intact commit, rebuild lost run files from the commit "
    "records, and remove damaged records and objects and the garbage; an intact commit is never removed. "
    "Repair a store while no run is writing to it (its temporary files would be taken for garbage)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("--repair", action="store_true", help="mend what is found (see above)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON, for tools")
    parser.add_argument(
        "--quick", action="store_true", help="do not read every object (records, refs and run files only)"
    )


def _progress():
    """A progress bar on stderr when it is a terminal, else nothing."""
    if not sys.stderr.isatty():
        return None, None
    from rich.progress import Progress

    bar = Progress(transient=True, console=None)
    task = bar.add_task("checking objects", total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    bar, update = _progress()
    if bar is not None:
        with bar:
            report = check(store, objects=not args.quick, progress=update)
    else:
        report = check(store, objects=not args.quick)
    actions = []
    if args.repair and (report.problems or report.garbage or report.notes):
        actions = repair(store, report)
        report = check(store, objects=not args.quick)
    if args.json:
        json.dump(dict(report.to_json(), repaired=actions), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if report.clean else 1
    for action in actions:
        print(f"repaired: {action}")
    for problem in report.problems:
        print(f"damaged: {problem}")
    for item in report.garbage:
        print(f"garbage: {item}")
    for item in report.notes:
        print(f"note: {item}")
    runs = sum(1 for head in report.heads.values() if head)
    verdict = "no damage" if report.clean else f"{len(report.problems)} damaged part(s)"
    print(
        f"store {store.location}: {len(report.intact)} intact commit(s) in {runs} run(s), "
        f"{report.objects_checked} object(s) verified; {verdict}, {len(report.garbage)} garbage item(s)"
        + ("" if report.clean or args.repair else "; `dart fsck --repair` mends it")
    )
    return 0 if report.clean else 1
