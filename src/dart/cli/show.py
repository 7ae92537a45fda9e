"""``dart show COMMIT``: where a commit was taken, its environment and every
variable in it, frame by frame."""

from __future__ import annotations

import argparse

from ..capture.path import describe
from ..config import resolve
from ..history.address import resolve_commit, tags_by_commit
from ..history.contents import commit_variables
from ..store import open_store
from . import add_store_option
from .tables import console, print_json, print_table, progress_on_terminal, size, stamp

HELP = "show a commit: position, environment, every variable per frame"
DESCRIPTION = (
    "Show one commit: where the program was (file:line, the functions on the call path and the "
    "iteration of each loop), when, its message and tags, the environment it was made in, and "
    "every saved variable (module globals, then the locals of each frame on the path) with its "
    "type, shape or length, size and whether it changed since the parent commit. COMMIT is an id "
    "or unique prefix, a tag, a run id, RUN@N (N-th commit of the run, -1 the newest), HEAD, or "
    "any of these followed by ~N (N commits back)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("commit", metavar="COMMIT", nargs="?", default="HEAD", help="the commit (default: HEAD)")
    parser.add_argument("--json", action="store_true", help="print one JSON object, for tools")
    parser.add_argument(
        "--no-load", action="store_true",
        help="do not load the values (faster; no type or shape, no code from the store's pickles is run)")
    parser.add_argument(
        "--run-source", action="store_true",
        help="run the committed script's imports and definitions first, so objects of its own classes "
        "load (this runs code from the script, as dart.load(run_source=True) does)")


def show(store, record, load: bool = True, run_source: bool = False) -> dict:
    """The JSON form of ``dart show`` (stable keys for tools)."""
    frames = []
    for frame in (record.position or {}).get("frames") or []:
        frames.append({
            "function": frame.get("qualname"),
            "line": frame.get("line"),
            "module": frame.get("module"),
            "loops": [{k: loop.get(k) for k in ("kind", "line", "iteration", "target")} for loop in frame.get("loops", [])],
        })
    namespace = None
    if run_source and load:
        import dart  # its _definitions is what dart.load(run_source=True) runs

        namespace = dart._definitions(record.source.get("file"))
    with progress_on_terminal(f"loading commit {record.short}") as tick:
        variables = commit_variables(store, record, load=load, main_namespace=namespace, progress=tick)
    grouped: dict[str, list] = {}
    for row in variables:
        grouped.setdefault(row["frame"], []).append({k: v for k, v in row.items() if k != "frame"})
    return {
        "id": record.id,
        "run": record.run,
        "parent": record.parent,
        "time": record.time,
        "message": record.message,
        "position": describe(record.position),
        "file": (record.position or {}).get("file"),
        "line": (record.position or {}).get("line"),
        "frames": frames,
        "resumable": record.resumable,
        "tags": tags_by_commit(store).get(record.id, []),
        "environment": record.env,
        "script": record.source.get("file"),
        "argv": record.command.get("argv"),
        "bytes_written": record.bytes_written,
        "variables": grouped,
    }


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    record = resolve_commit(store, args.commit)
    info = show(store, record, load=not args.no_load, run_source=args.run_source)
    if args.json:
        print_json(info)
        return 0
    out = console()
    tags = f"  (tags: {', '.join(info['tags'])})" if info["tags"] else ""
    out.print(f"[bold]commit {record.id}[/bold]{tags}", markup=True)
    out.print(f"run       {record.run}" + (f"   parent {record.parent}" if record.parent else "   (first commit)"))
    out.print(f"time      {stamp(record.time)}")
    out.print(f"position  {info['position']}" + ("" if record.resumable else "   (not resumable)"))
    for frame in info["frames"]:
        loops = ", ".join(f"{l['kind']} at line {l['line']}" + (f" [{l['target']}]" if l.get("target") else
                          f" #{l['iteration']}" if l.get("iteration") is not None else "") for l in frame["loops"])
        out.print(f"            {frame['function']}() line {frame['line']}" + (f": {loops}" if loops else ""))
    if record.message:
        out.print(f"message   {record.message}")
    if info["script"]:
        out.print(f"script    {info['script']} {' '.join(info['argv'] or [])}".rstrip())
    env = dict(record.env or {})
    modules = env.pop("modules", {}) or {}
    out.print("env       " + ", ".join(f"{k} {v}" for k, v in env.items()))
    if modules:
        out.print("modules   " + ", ".join(f"{k} {v}" for k, v in sorted(modules.items())))
    for frame, rows in info["variables"].items():
        table = []
        for row in rows:
            shape = ("×".join(map(str, row["shape"])) + f" {row.get('dtype', '')}") if "shape" in row else (
                f"len {row['length']}" if "length" in row else "")
            if "value" in row:
                shape = (shape + " " if shape else "") + f"= {row['value']!r}"
            table.append([row["name"], row.get("type", ""), shape or row.get("error", ""), size(row["bytes"]),
                          row["changed"] or ""])
        title = "module globals" if frame == "<module>" else f"locals of {frame}()"
        out.print()
        print_table(["NAME", "TYPE", "SHAPE / VALUE", "SIZE", "CHANGED"], table, title=title)
    return 0
