"""Tables and trees for people (rich): colours only on a terminal, and no
wrapping or cut cells when the output goes to a file or a pipe."""

from __future__ import annotations

import json
import sys
import time

from ..present import progress_on_terminal  # noqa: F401  (the commands' progress bar)


def console():
    from rich.console import Console

    terminal = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=not terminal, width=None if terminal else 10_000)


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    from rich import box
    from rich.table import Table

    table = Table(*headers, title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(table)


def print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def stamp(when: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"


def size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
