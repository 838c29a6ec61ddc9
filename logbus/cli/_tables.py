"""Tables on a terminal, through rich: the one way a command lines up columns.

Commands build a :func:`table`, add rows with :func:`add_row` and print it with
:func:`print_table`. Only what a person reads on a terminal goes through here; JSON
output (``--json``, or stdout not a terminal) never does. rich comes with
typer, and is imported only when a table is printed.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["add_row", "print_table", "table"]


def table(
    *columns: str,
    numbers: Collection[str] = (),
    whole: Collection[str] = (),
    header: bool = True,
) -> Table:
    """A borderless table of ``columns`` with a bold header row (unless ``header`` is false).

    Columns named in ``numbers`` are right-aligned; they and those named in
    ``whole`` (short fixed-width text: a time) stay on one line. On a terminal
    too narrow for a row, other text folds onto more lines within its column:
    a name is never cut short.
    """
    from rich.table import Table

    made = Table(box=None, pad_edge=False, show_header=header, header_style="bold")
    for name in columns:
        made.add_column(
            name,
            justify="right" if name in numbers else "left",
            no_wrap=name in numbers or name in whole,
            overflow="fold",
        )
    return made


def add_row(made: Table, *cells: str, style: str | None = None) -> None:
    """Add ``cells`` as plain text: a name with ``[...]`` in it is not rich markup."""
    from rich.text import Text

    made.add_row(*(Text(cell) for cell in cells), style=style)


def print_table(made: Table, indent: int = 0) -> None:
    """Print ``made`` on stdout, ``indent`` columns in."""
    from rich.console import Console
    from rich.padding import Padding

    Console(highlight=False).print(Padding(made, (0, 0, 0, indent), expand=False))
