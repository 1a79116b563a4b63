"""The single output object of the CLI: every command reports through it.

Text goes to stdout, errors and progress to stderr. ``--output json`` turns every report
into one JSON document on stdout. rich is imported only when a table or a progress bar is
actually drawn, so that commands which print a line stay fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

import click

FORMATS = ("text", "json")


def _to_jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    return value


def local_time(epoch: float | None) -> str:
    """An epoch time as a person reads it here ("-" for none)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def human_size(n: float) -> str:
    """A byte count as a person reads it: binary units, one decimal ("1023 B", "5.0 GiB")."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Output:
    def __init__(self, fmt: str = "text", verbose: int = 0) -> None:
        self.format = fmt
        self.verbose = verbose

    @property
    def is_json(self) -> bool:
        return self.format == "json"

    @property
    def job_output(self) -> BinaryIO:
        """Where a followed job's own output goes, as bytes: stdout, but stderr under
        ``--output json``, where stdout holds only the JSON report."""
        return sys.stderr.buffer if self.is_json else sys.stdout.buffer

    def report(self, data: Any, render_text: Callable[[], None]) -> None:
        """Emit ``data`` as JSON, or call ``render_text`` to draw it for a person."""
        if self.is_json:
            click.echo(json.dumps(_to_jsonable(data), indent=2, sort_keys=True, default=str))
        else:
            render_text()

    def line(self, message: str = "") -> None:
        click.echo(message)

    def note(self, message: str) -> None:
        """A remark for a person (stderr), never part of machine output."""
        click.echo(message, err=True)

    def error(self, message: str) -> None:
        click.echo(f"runctl: error: {message}", err=True)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 120)  # pipes and CI logs: do not squeeze columns
        console.print(table)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
        """Yield a callback taking byte counts, drawing a bar on a terminal; else ``None``."""
        if self.is_json or not sys.stderr.isatty():
            yield None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
