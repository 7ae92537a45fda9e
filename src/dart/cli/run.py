"""``dart run [--store DIR] [--every S|never] [--fresh] [--staging SIZE] SCRIPT [ARGS...]``"""

from __future__ import annotations

from ..config import resolve
from ..runner import run_script


def main(args) -> int:
    options = resolve(
        store=args.store, every=args.every, fresh=args.fresh, user_code=args.user_code, staging=args.staging
    )
    return run_script(args.script, args.args, options)
