"""Progress bars for long loops (rich), silent when not attached to a terminal or under tests."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")


def enabled() -> bool:
    return sys.stderr.isatty() and not os.environ.get("AMMKD_NO_PROGRESS")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """Iterate `items` with a progress bar on stderr when a person is watching."""
    if not enabled():
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        yield from bar.track(items, total=total, description=description)
