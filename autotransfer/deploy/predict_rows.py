"""What the ``predict`` command writes per input: a row (path, label, probability, the other top-k
classes, or the error), as a JSON Lines line or a CSV row, each written as soon as its batch is done."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from autotransfer.deploy.predict_stream import Prediction

if TYPE_CHECKING:
    from autotransfer.deploy.pipeline import Pipeline


@dataclass
class PredictionRow:
    path: str
    label: str | None = None
    probability: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)  # best first, the first is (label, probability)
    error: str | None = None

    def as_json(self) -> dict:
        """The object of one ``--json`` line (``top_k`` only when more than one class is asked for)."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        row: dict = {"path": self.path, "label": self.label, "probability": self.probability}
        if len(self.top_k) > 1:
            row["top_k"] = [{"label": name, "probability": p} for name, p in self.top_k]
        return row


def prediction_row(result: Prediction, pipeline: Pipeline, k: int) -> PredictionRow:
    """The row of one prediction with its ``k`` most probable classes (Pipeline.top_k)."""
    if result.error:
        return PredictionRow(result.name, error=result.error)
    top = [(name, round(p, 6)) for name, p in pipeline.top_k(result.probabilities, k)]
    return PredictionRow(result.name, top[0][0], top[0][1], top)


def csv_header(k: int) -> list[str]:
    """path, label, probability (the top class), label_2, probability_2 ... label_k, probability_k, error."""
    extra = [name for rank in range(2, k + 1) for name in (f"label_{rank}", f"probability_{rank}")]
    return ["path", "label", "probability", *extra, "error"]


class CsvRows:
    """Writes rows to an open text file, flushed per batch, so that an interrupted run keeps its rows."""

    def __init__(self, handle: IO[str], k: int) -> None:
        self.handle, self.k = handle, k
        self.writer = csv.writer(handle)
        self.writer.writerow(csv_header(k))

    def write(self, row: PredictionRow) -> None:
        if row.error is not None:
            self.writer.writerow([row.path, "", "", *[""] * (2 * (self.k - 1)), row.error])
            return
        extra = [value for name, p in row.top_k[1:] for value in (name, p)]
        extra += [""] * (2 * (self.k - 1) - len(extra))
        self.writer.writerow([row.path, row.label, row.probability, *extra, ""])

    def flush(self) -> None:
        self.handle.flush()


def json_line(row: PredictionRow) -> str:
    return json.dumps(row.as_json())
