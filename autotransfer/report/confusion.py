"""The confusion matrix of a split in report.html: a shaded HTML table for a few classes; above
``TABLE_MAX_CLASSES`` an image (one pixel or more per cell, PNG) and a table of the top confusions,
so that a 1,000-class report stays a few megabytes instead of C² table cells."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TABLE_MAX_CLASSES = 30  # up to here every cell is readable as a table; above, an image
TOP_CONFUSIONS = 20


def confusion_counts(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """C x C counts, rows the true class, columns the predicted one, in ``classes`` order."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(predictions["label"].astype(str), predictions["predicted"].astype(str), labels=classes)


@dataclass(frozen=True)
class ConfusionCell:
    count: int
    diagonal: bool
    background: str  # blue for correct, red for confused; opacity by count
    ink: str


@dataclass(frozen=True)
class ConfusionView:
    """A split's confusion matrix for the report: every cell (few classes), or an image and the top
    confusions (many classes)."""

    title: str
    images: int
    classes: list[str]
    rows: list[list[ConfusionCell]]  # empty above TABLE_MAX_CLASSES
    image: str | None  # data: URL of the matrix drawn; None up to TABLE_MAX_CLASSES
    top: list[tuple[str, str, int, float]]  # (true, predicted, images, share of the true class)


def confusion_view(predictions: pd.DataFrame, classes: list[str], title: str) -> ConfusionView:
    """The split's confusion matrix: table cells, or (many classes) an image and the top confusions."""
    matrix = confusion_counts(predictions, classes)
    if len(classes) <= TABLE_MAX_CLASSES:
        return ConfusionView(title, len(predictions), classes, confusion_cells(matrix), None, [])
    return ConfusionView(title, len(predictions), classes, [], confusion_png(matrix), top_confusions(matrix, classes))


def confusion_cells(matrix: np.ndarray) -> list[list[ConfusionCell]]:
    """Every cell shaded by its count (blue: correct, red: confused)."""
    top = max(1, int(matrix.max()))
    rows = []
    for i, counts in enumerate(matrix):
        cells = []
        for j, n in enumerate(counts):
            alpha = int(n) / top
            colour = f"rgba(52,101,164,{alpha:.2f})" if i == j else f"rgba(204,0,0,{alpha:.2f})"
            cells.append(ConfusionCell(int(n), i == j, colour, "#fff" if alpha > 0.55 else "#222"))
        rows.append(cells)
    return rows


def confusion_png(matrix: np.ndarray) -> str:
    """A data: URL of the row-normalised matrix drawn with the report's matplotlib style; at least one
    screen pixel per cell, so no confusion is lost to downsampling."""
    from autotransfer.report.plots import png_data_url, pyplot

    plt = pyplot()
    n = len(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    dpi = 100
    side = max(5.0, n / dpi * 1.15)  # inches: the axes get at least n pixels
    figure, axis = plt.subplots(figsize=(side + 1.2, side), dpi=dpi)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="none")
    axis.set_xlabel("predicted class (index)")
    axis.set_ylabel("true class (index)")
    figure.colorbar(image, ax=axis, fraction=0.04, label="share of the true class")
    return png_data_url(figure)


def top_confusions(
    matrix: np.ndarray, classes: list[str], limit: int = TOP_CONFUSIONS
) -> list[tuple[str, str, int, float]]:
    """(true, predicted, images, share of the true class) of the largest off-diagonal cells."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:limit]
    totals = matrix.sum(axis=1)
    pairs = []
    for index in flat:
        i, j = divmod(int(index), len(classes))
        if off[i, j] == 0:
            break
        pairs.append((classes[i], classes[j], int(off[i, j]), float(off[i, j] / max(totals[i], 1))))
    return pairs
