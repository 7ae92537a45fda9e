"""``dart tag [NAME [COMMIT]]``, ``dart tag -d NAME``: name commits."""

from __future__ import annotations

import argparse

from ..config import resolve
from ..history.address import delete_tag, resolve_commit, set_tag, tags
from ..store import open_store
from . import add_store_option
from .tables import print_json, print_table

HELP = "name a commit (dart tag NAME COMMIT), list tags, delete one (-d)"
DESCRIPTION = (
    "Give commit COMMIT (default HEAD, the newest) the name NAME, usable wherever a commit is "
    "named (dart show NAME, dart.load('NAME'), dart checkout NAME) and kept by dart gc. Without "
    "NAME, list the tags. A tag that exists is not moved unless -f is given."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("name", metavar="NAME", nargs="?", help="the tag")
    parser.add_argument("commit", metavar="COMMIT", nargs="?", default="HEAD", help="the commit (default: HEAD)")
    parser.add_argument("-d", "--delete", action="store_true", help="delete tag NAME")
    parser.add_argument("-f", "--force", action="store_true", help="move tag NAME if it exists")
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(args) -> int:
    options = resolve(store=args.store, s3_endpoint=args.s3_endpoint)
    store = open_store(options.store, create=False, s3_endpoint=options.s3_endpoint)
    if args.name is None:
        if args.delete:
            from ..errors import DartError

            raise DartError("dart tag -d needs the NAME of the tag to delete")
        listed = tags(store)
        if args.json:
            print_json([{"name": n, "commit": c} for n, c in sorted(listed.items())])
        elif not listed:
            print(f"no tags in {store.location}")
        else:
            rows = []
            for name, cid in sorted(listed.items()):
                try:
                    where = store.read_commit(cid).where
                except Exception:
                    where = "(commit missing)"
                rows.append([name, cid[:12], where])
            print_table(["TAG", "COMMIT", "POSITION"], rows)
        return 0
    if args.delete:
        cid = delete_tag(store, args.name)
        if args.json:
            print_json({"deleted": args.name, "commit": cid})
        else:
            print(f"deleted tag {args.name} (was {cid[:12]})")
        return 0
    record = resolve_commit(store, args.commit)
    before = set_tag(store, args.name, record.id, force=args.force)
    if args.json:
        print_json({"name": args.name, "commit": record.id, "previous": before})
    else:
        moved = f" (was {before[:12]})" if before and before != record.id else ""
        print(f"tagged {record.short} as {args.name}{moved}: {record.where}")
    return 0
