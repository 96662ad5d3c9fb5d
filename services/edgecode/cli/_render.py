"""Terminal rendering shared by the subcommands (rich tables and progress bars).

rich is imported on first use, so that ``edgecode --help`` does not pay for it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")

#: Cells that read as numbers (right-aligned): 1.5, -3, 2.5e-05, 1.38x, 99%, or "-" for none.
NUMERIC = re.compile(r"^(-|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?[x%]?)$")

#: Width of piped output (CI logs, files) instead of rich's 80-column default.
PIPED_WIDTH = 160


@cache
def console() -> Console:
    """The shared stdout console."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


@cache
def err_console() -> Console:
    """A console on stderr (progress and status, so that piped output stays clean)."""
    from rich.console import Console

    return Console(stderr=True)


def print_help(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Default action of a command group called without an action: show its help."""
    parser.print_help()
    return 2


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    out: Console | None = None,
    caption: str | None = None,
) -> None:
    """Print a table; numbers right-aligned."""
    from rich.table import Table

    view = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    materialized = [list(r) for r in rows]
    for index, name in enumerate(columns):
        numeric = bool(materialized) and all(_numeric(r[index]) for r in materialized)
        view.add_column(name, justify="right" if numeric else "left")
    for row in materialized:
        view.add_row(*(_fmt(v) for v in row))
    (out or console()).print(view)


def _numeric(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (isinstance(value, str) and bool(NUMERIC.match(value)))


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def progress(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate with a progress bar (on stderr, so piped output stays clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
