"""A run directory whose search finished is reported, not searched again.

``fit`` on an ``--out`` (or ``--resume``) whose pipeline and report are saved loads what is there and
says so: running the same command twice must not spend a second budget without a word. A new search
takes a new ``--out``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autotransfer.deploy.pipeline import Pipeline
from autotransfer.search.records import TrialRecord
from autotransfer.search.run_profile import RunProfile

log = logging.getLogger(__name__)


@dataclass
class FinishedRun:
    """What a finished run saved: its pipeline, leaderboard, profile and the chosen trial's row."""

    pipeline: Pipeline
    leaderboard: pd.DataFrame
    profile: RunProfile
    best: TrialRecord
    records: list[TrialRecord]


def is_finished(out: Path) -> bool:
    """The pipeline is saved and the report (written last, report/outputs.py) is there."""
    return (out / "pipeline" / "pipeline.json").is_file() and (out / "report.html").is_file()


def finished_note(out: Path) -> str:
    return (
        f"The run directory {out} holds a finished run (its pipeline is saved): nothing was searched again. "
        "To search anew, with a larger --time-budget for example, give another --out."
    )


def load_finished(out: Path, device: str | None) -> FinishedRun:
    """The saved outputs of the finished run in ``out`` (``is_finished(out)``)."""
    board = pd.read_csv(out / "leaderboard.csv")
    rows = board.to_dict("records")
    chosen = [TrialRecord.from_row(row) for row in rows if row["chosen"]]
    profile = RunProfile.load(out)
    log.warning(finished_note(out))
    records = [TrialRecord.from_row(row) for row in rows]
    return FinishedRun(Pipeline.load(out, device=device), board, profile, chosen[0], records)
