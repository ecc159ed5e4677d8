"""The leaderboard's top rows as a terminal table that reads at the console's width, 80 columns included.

Every column is kept on one line (a name cut in two is harder to read than one left out); when the
full table is wider than the console, the least needed columns are left out, in ``DROP_ORDER``, and
the caption says which (all of them are in leaderboard.csv). What still does not fit is cut with an
ellipsis by rich. rich has no "drop a column" overflow mode, hence the measuring below.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from autotransfer.report.terminal import cell_text, is_missing

ROWS = 8
COLUMNS = {  # name in leaderboard.csv: heading (the strategy names the stage; seconds to 0.1)
    "strategy": "  strategy",  # the chosen row's starts with ★ (a column of its own is the first rich shrinks)
    "backbone": "backbone",
    "resolution": "px",
    "tap": "tap",
    "val_score": "score",
    "seconds": "s",
    "status": "status",
}
RIGHT = ("resolution", "val_score", "seconds")
# first left out when the table is too wide; the tap stays (rows of one backbone differ by it), cut with an
# ellipsis if need be
DROP_ORDER = ("seconds", "resolution", "status")
TAP_WIDTH = 20  # a combined tap ("blocks.2+blocks.4+blocks.6+head") is cut here, its start kept


def _cells(row: dict) -> dict[str, str]:
    seconds = "" if is_missing(row.get("seconds")) else f"{float(row['seconds']):.1f}"
    status = {"complete": "done"}.get(str(row.get("status")), cell_text(row.get("status")))
    chosen = "★ " if not is_missing(row.get("chosen")) and bool(row["chosen"]) else "  "
    cells = {k: cell_text(row.get(k)) for k in COLUMNS}
    return cells | {"seconds": seconds, "status": status, "strategy": chosen + cells["strategy"]}


def _table(headings: dict[str, str], rows: list[dict[str, str]], kept: list[str]) -> Table:
    left_out = [headings[k] for k in headings if k not in kept]
    table = Table(
        title=f"leaderboard (top {ROWS} of the trials that ran; all in leaderboard.csv)",
        caption=f"left out at this width: {', '.join(left_out)}" if left_out else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in kept:
        overflow = "ellipsis" if name in ("strategy", "backbone", "tap") else "fold"
        table.add_column(headings[name], no_wrap=True, overflow=overflow, justify="right" if name in RIGHT else "left",
                         max_width=TAP_WIDTH if name == "tap" else None)  # fmt: skip
    for row in rows:
        table.add_row(*(escape(row[k]) for k in kept))
    return table


def leaderboard_table(board, metric: str, width: int | None = None) -> Table:
    """The top ``ROWS`` trials that ran (``board``: the leaderboard frame, best first) as a rich Table of
    at most ``width`` columns (None: every column)."""
    if "status" in board:
        board = board[board["status"].isin(("complete", "pruned"))]
    headings = COLUMNS | {"val_score": metric.replace("balanced_accuracy", "bal. acc")}
    rows = [_cells(row) for row in board.head(ROWS).to_dict("records")]
    kept = list(headings)
    table = _table(headings, rows, kept)
    for name in DROP_ORDER if width else ():  # rich measures the table as it would print it
        if _natural_width(table) <= width:
            break
        kept.remove(name)
        table = _table(headings, rows, kept)
    return table


def _natural_width(table: Table) -> int:
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum
