"""Terminal rendering shared by the subcommands (rich tables and progress bars)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

T = TypeVar("T")

# Piped output (CI logs, files) gets a wide console instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=160)


def print_help(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Default action of a command group called without an action: show its help."""
    parser.print_help()
    return 2


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a table; numbers right-aligned."""
    view = Table(title=title, title_justify="left")
    materialized = [list(r) for r in rows]
    for index, name in enumerate(columns):
        numeric = bool(materialized) and all(
            isinstance(r[index], int | float) for r in materialized
        )
        view.add_column(name, justify="right" if numeric else "left")
    for row in materialized:
        view.add_row(*(_fmt(v) for v in row))
    console.print(view)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def progress(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate with a progress bar (on stderr, so piped output stays clean)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
