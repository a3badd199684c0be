"""Printing: rich tables on stdout, JSON for --json, progress bars on stderr."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime

import click
import orjson
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

Advance = Callable[[int], None]


def print_json(value: object) -> None:
    # pydantic models, dataclasses, paths and datetimes as plain JSON types.
    click.echo(orjson.dumps(to_jsonable_python(value), option=orjson.OPT_INDENT_2).decode())


PIPE_WIDTH = 200  # rich assumes 80 columns off a terminal; ids must not be cut in a pipe


def console() -> Console:
    # Made per call: click's test runner swaps sys.stdout between invocations.
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def when(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") + "Z" if dt is not None else "-"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@contextlib.contextmanager
def progress(
    description: str, total: int | None = None, *, in_bytes: bool = False
) -> Iterator[Advance]:
    """Yield ``advance(n)``; a bar on stderr when it is a terminal, nothing otherwise."""
    out = err_console()
    if not out.is_terminal:
        yield lambda n: None
        return
    count: ProgressColumn = DownloadColumn() if in_bytes else MofNCompleteColumn()
    if total is None and not in_bytes:
        count = TextColumn("{task.completed} done")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), count,
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
