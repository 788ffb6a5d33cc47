"""Console tables that are never cut: fitted to a terminal's width, printed at their own width when piped.

On a terminal narrower than a table, :func:`print_table` leaves out the columns the caller marks as
optional (in the caller's order) until the table fits, says which under the table, and folds what
still does not fit (text wraps inside its cell; rich's ``…`` never replaces a cell's end). Piped
output (CI logs, files, ``| grep``) has no width: :func:`console` then renders each table at the width
it needs, so no cell is wrapped or cut at 80, 120 or 200 columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: the width of a console that is not a terminal: wide enough that nothing wraps
UNLIMITED = 100_000


def console(stderr: bool = False, **kwargs: Any) -> Any:  # -> rich.console.Console
    """A rich console for stdout (or stderr): the terminal's width, or no width limit when not a terminal.

    Args:
        stderr: Write to stderr.
        **kwargs: Further :class:`rich.console.Console` arguments (``soft_wrap``, ``highlight``).
    """
    from rich.console import Console

    c = Console(stderr=stderr, **kwargs)
    return c if c.is_terminal else Console(stderr=stderr, width=UNLIMITED, **kwargs)


def _width(con: Any, table: Any) -> int:
    """Columns ``table`` needs to show every cell on one line."""
    return con.measure(table, options=con.options.update_width(UNLIMITED)).maximum


def print_table(con: Any, table: Any, optional: Sequence[str] = ()) -> list[str]:
    """Print a rich table without cutting a cell.

    Args:
        con: The console (a terminal's width is its width; see :func:`console` for piped output).
        table: A :class:`rich.table.Table`; its columns may be removed and set to fold.
        optional: Headers of columns that may be left out on a narrow terminal, first to go first.

    Returns:
        The headers left out (empty when the table fitted).
    """
    left_out: list[str] = []
    if _width(con, table) > con.width:
        for header in optional:
            col = next((c for c in table.columns if str(c.header) == header), None)
            if col is None:
                continue
            table.columns.remove(col)
            left_out.append(header)
            if _width(con, table) <= con.width:
                break
        for col in table.columns:  # what still does not fit wraps inside its cell instead of ending in "…"
            col.overflow = "fold"
    con.print(table)
    if left_out:
        con.print(f"(left out to fit {con.width} columns: {', '.join(left_out)}; a wider terminal shows them)",
                  style="dim", markup=False, highlight=False)
    return left_out
