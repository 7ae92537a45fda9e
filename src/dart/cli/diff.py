"""``dart diff A B``: variables added, removed and changed between two commits."""

from __future__ import annotations

import argparse

from ..config import resolve
from ..history.address import resolve_commit
from ..history.diff import diff_commits
from ..store import open_store
from . import add_store_option
from .tables import console, print_json, print_table

HELP = "compare two commits: variables added, removed, changed (per frame)"
DESCRIPTION = (
    "Compare the variables of commit A with those of commit B (default: HEAD), frame by frame: "
    "for arrays and tensors how many "
    "elements differ and the largest absolute difference, for models and optimizers each "
    "parameter, for small objects a text diff. Commits are named as for `dart show`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("a", metavar="A", help="the older commit")
    parser.add_argument("b", metavar="B", nargs="?", default="HEAD", help="the newer commit (default: HEAD)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _summary(change: dict | None) -> str:
    if change is None:
        return ""
    kind = change["kind"]
    if kind == "array":
        if "differing" not in change:
            return f"shape {change['shape'][0]} -> {change['shape'][1]}, dtype {change['dtype'][0]} -> {change['dtype'][1]}"
        text = f"{change['differing']} of {change['elements']} elements differ"
        return text + (f", max |diff| {change['max_abs_diff']:.6g}" if change.get("max_abs_diff") is not None else "")
    if kind == "parameters":
        parts = [f"{k}: {_summary(v) if v.get('kind') not in ('added', 'removed') else v['kind']}"
                 for k, v in change["parameters"].items()]
        return "; ".join(parts[:6]) + (f"; ... {len(parts) - 6} more" if len(parts) > 6 else "")
    if kind == "text":
        if change["before"] is not None and change["after"] is not None:
            return f"{change['before'][:60]} -> {change['after'][:60]}"
        return " ".join(line for line in change["diff"] if line[:1] in "+-")[:120]
    if kind == "error":
        return f"cannot load: {change['error']}"
    return f"{kind} changed"


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    a, b = resolve_commit(store, args.a), resolve_commit(store, args.b)
    changes = diff_commits(store, a, b)
    if args.json:
        print_json({"a": a.id, "b": b.id, "changes": changes})
        return 0
    console().print(f"{a.short} ({a.where}) -> {b.short} ({b.where})")
    if not changes:
        print("no variable differs")
        return 0
    rows = [[c["frame"], c["name"], c["status"], _summary(c.get("change"))] for c in changes]
    print_table(["FRAME", "NAME", "STATUS", "WHAT CHANGED"], rows)
    return 0
