"""The leaderboard's top rows as a terminal table that reads at the console's width, 80 columns included.

Every column is kept on one line (a name cut in two is harder to read than one left out); when the
full table is wider than the console, the least needed columns are left out, in ``DROP_ORDER``, and
the caption says which (all of them are in leaderboard.csv). What still does not fit is cut with an
ellipsis by rich. rich has no "drop a column" overflow mode, hence the measuring below.

The score column is the search score, each marked with where it was measured (``score_source``:
probes on small data by cross-validation, the rest on the validation split); the caption says what
the marks mean, so a CV mean and a validation score in one column are not read as the same thing.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from autotransfer.report.terminal import cell_text, is_missing
from autotransfer.trial_status import RAN

ROWS = 8
COLUMNS = {  # name in leaderboard.csv: heading (the strategy names the stage; seconds to 0.1)
    "strategy": "  strategy",  # the chosen row's starts with ★ (a column of its own is the first rich shrinks)
    "backbone": "backbone",
    "resolution": "px",
    "tap": "tap",
    "val_score": "search score",
    "seconds": "s",
    "status": "status",
}
RIGHT = ("resolution", "seconds")  # the scores are left-aligned: their marks (CV, val) differ in width
# first left out when the table is too wide; the tap stays (rows of one backbone differ by it), cut with an
# ellipsis if need be
DROP_ORDER = ("seconds", "resolution", "status")
SOURCES = {"cv": ("CV", "mean over cross-validation folds of train+val"), "val": ("val", "validation split")}
TAP_WIDTH = 20  # a combined tap ("blocks.2+blocks.4+blocks.6+head") is cut here, its start kept


def _cells(row: dict) -> dict[str, str]:
    seconds = "" if is_missing(row.get("seconds")) else f"{float(row['seconds']):.1f}"
    status = {"complete": "done"}.get(str(row.get("status")), cell_text(row.get("status")))
    chosen = "★ " if not is_missing(row.get("chosen")) and bool(row["chosen"]) else "  "
    cells = {k: cell_text(row.get(k)) for k in COLUMNS}
    mark = SOURCES.get(str(row.get("score_source")), ("", ""))[0]
    score = f"{cells['val_score']} {mark}".strip()
    return cells | {"seconds": seconds, "status": status, "strategy": chosen + cells["strategy"], "val_score": score}


def _caption(metric: str, sources: list[str], left_out: list[str]) -> str:
    """What the score column holds and what its marks mean; the columns left out at this width."""
    marks = ", ".join(f"{SOURCES[s][0]} = {SOURCES[s][1]}" for s in SOURCES if s in sources)
    lines = [f"search score: {metric.replace('_', ' ')}" + (f" ({marks})" if marks else "")]
    if left_out:
        lines.append(f"left out at this width: {', '.join(left_out)}")
    return "\n".join(lines)


def _table(headings: dict[str, str], rows: list[dict[str, str]], kept: list[str], caption: str) -> Table:
    table = Table(
        title=f"leaderboard (top {ROWS} of the trials that ran; all in leaderboard.csv)",
        caption=caption,
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
        board = board[board["status"].isin(RAN)]
    records = board.head(ROWS).to_dict("records")
    rows = [_cells(row) for row in records]
    sources = [str(row.get("score_source")) for row in records]
    kept = list(COLUMNS)
    table = _table(COLUMNS, rows, kept, _caption(metric, sources, []))
    for name in DROP_ORDER if width else ():  # rich measures the table as it would print it
        if _natural_width(table) <= width:
            break
        kept.remove(name)
        table = _table(COLUMNS, rows, kept, _caption(metric, sources, [COLUMNS[k] for k in COLUMNS if k not in kept]))
    return table


def _natural_width(table: Table) -> int:
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum
