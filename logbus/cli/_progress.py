"""Progress on stderr for the commands that can run for seconds (``dlq replay``, ``query``).

Shown only when stderr is a terminal: piped or redirected, a command's stderr is
for its one-line errors and nothing else. The bar is transient (erased once the
work is done), so what stays on the screen is the command's own summary.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["Update", "progress", "shows_progress"]

#: ``update(done, total)``: how far the work is; ``total`` None while unknown.
Update = Callable[[int, "int | None"], None]


def shows_progress(stream: TextIO | None = None) -> bool:
    """Whether progress goes to ``stream`` (default stderr): only to a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False


@contextlib.contextmanager
def progress(what: str, *, stream: TextIO | None = None) -> Iterator[Update]:
    """A progress bar (a spinner and the time elapsed until a total is known) described
    by ``what`` on ``stream`` (default stderr) while the block runs, when that is a
    terminal; the block gets the :data:`Update` to call, a no-op otherwise."""
    stream = sys.stderr if stream is None else stream
    if not shows_progress(stream):
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=stream), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
