"""``dart log [--store DIR] [--run RUN] [--json]``: commits, newest first."""

from __future__ import annotations

import json
import sys
import time

import argparse

from ..capture.path import describe
from ..config import resolve
from ..store import Store, open_store
from . import add_store_option, positive_int

HELP = "list commits, newest first (a graph when runs branch)"
DESCRIPTION = (
    "List the commits in the store, newest first, with their tags. When a run was started from a past "
    "commit (dart checkout, dart run --at), a graph column shows one lane per run and where each branch "
    "started.")


def add_arguments(log: argparse.ArgumentParser) -> None:
    add_store_option(log)
    log.add_argument("--run", metavar="RUN", help="only the commits of this run")
    log.add_argument("--json", action="store_true", help="print a JSON array (one object per commit)")
    log.add_argument("-n", "--limit", type=positive_int, metavar="N", help="at most N commits")


def entries(store: Store, run: str | None = None, limit: int | None = None, damage: list | None = None) -> list[dict]:
    """The commits as the JSON form shows them (stable keys for tools)."""
    from ..history.address import tags_by_commit

    out = []
    tagged = tags_by_commit(store)
    records = store.log(run=run, damage=damage)
    run_of = {r.id: r.run for r in records}
    for record in records[: limit if limit else None]:
        parent_run = run_of.get(record.parent) if record.parent else None
        if record.parent and parent_run is None:
            try:
                parent_run = store.read_commit(record.parent).run
            except Exception:
                parent_run = None
        out.append(
            {
                "id": record.id,
                "parent": record.parent,
                "run": record.run,
                "time": record.time,
                "position": describe(record.position),
                "location": record.position,
                "message": record.message,
                "bytes_written": record.bytes_written,
                "durable": True,  # log lists only commits reachable from a ref
                "resumable": record.resumable,
                "tags": tagged.get(record.id, []),
                # the first commit of a run started from a past commit of another run
                "branched_from": record.parent if parent_run is not None and parent_run != record.run else None,
            }
        )
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    damage: list[str] = []
    rows = entries(store, args.run, args.limit, damage)
    for problem in damage:  # what is intact is listed; what is not is said, on stderr
        print(f"dart: warning: store {store.location} is damaged: {problem}; `dart fsck` tells more", file=sys.stderr)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print(f"no commits in {store.location}")
        return 0
    # The graph: one lane per run (a branch is a run started from a past commit).
    lanes = sorted({row["run"] for row in rows}, key=lambda r: min(x["time"] for x in rows if x["run"] == r))
    if not any(row["branched_from"] for row in rows):
        lanes = lanes[:1]  # runs side by side, none started from another: no graph to draw
    table = [("GRAPH" if len(lanes) > 1 else "", "COMMIT", "TIME", "RUN", "POSITION", "WRITTEN", "MESSAGE")]
    for row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"])) if row["time"] else "?"
        lane = lanes.index(row["run"]) if row["run"] in lanes else 0
        graph = " ".join("*" if i == lane else "|" for i in range(len(lanes))) if len(lanes) > 1 else ""
        notes = [row["message"] or ""]
        if row["tags"]:
            notes.append(f"[{', '.join(row['tags'])}]")
        if row["branched_from"]:
            graph = graph.replace("*", "*/")
            notes.append(f"(branched from {row['branched_from'][:12]})")
        table.append(
            (graph, row["id"][:12], stamp, row["run"] or "?", row["position"], _size(row["bytes_written"]),
             " ".join(n for n in notes if n))
        )
    if len(lanes) < 2:
        table = [r[1:] for r in table]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0
