"""``dart log [--store DIR] [--run RUN] [--json]``: commits, newest first."""

from __future__ import annotations

import json
import sys
import time

from ..config import resolve
from ..errors import StoreError
from ..capture.path import describe
from ..store import Store


def entries(store: Store, run: str | None = None, limit: int | None = None) -> list[dict]:
    """The commits as the JSON form shows them (stable keys for tools)."""
    out = []
    for record in store.log(run=run)[: limit if limit else None]:
        out.append(
            {
                "id": record["id"],
                "parent": record.get("parent"),
                "run": record.get("run"),
                "time": record.get("time"),
                "position": describe(record.get("position", {})),
                "location": record.get("position", {}),
                "message": record.get("message"),
                "bytes_written": record.get("bytes_written", 0),
                "durable": record.get("durable", True),
                "resumable": record.get("resumable", False),
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
    options = resolve(store=args.store)
    if not options.store.is_dir():
        raise StoreError(f"no dart store at {options.store}; run a script with `dart run` first or pass --store DIR")
    store = Store(options.store, create=False)
    rows = entries(store, args.run, args.limit)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print(f"no commits in {options.store}")
        return 0
    table = [("COMMIT", "TIME", "RUN", "POSITION", "WRITTEN", "MESSAGE")]
    for row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"])) if row["time"] else "?"
        table.append(
            (row["id"][:12], stamp, row["run"] or "?", row["position"], _size(row["bytes_written"]), row["message"] or "")
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0
