"""The confusion matrix of a split in report.html: a shaded HTML table for a few classes; above
``TABLE_MAX_CLASSES`` an image (one pixel or more per cell, PNG) and a table of the top confusions,
so that a 1,000-class report stays a few megabytes instead of C² table cells."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

TABLE_MAX_CLASSES = 30  # up to here every cell is readable as a table; above, an image
TOP_CONFUSIONS = 20


def confusion_counts(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """C x C counts, rows the true class, columns the predicted one, in ``classes`` order."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(predictions["label"].astype(str), predictions["predicted"].astype(str), labels=classes)


def confusion_view(predictions: pd.DataFrame, classes: list[str], title: str) -> str:
    """The split's confusion matrix as HTML: a table, or (many classes) an image and the top confusions."""
    matrix = confusion_counts(predictions, classes)
    caption = (
        f"<figcaption><b>{html.escape(title)}</b> ({len(predictions)} images): rows are the true class, "
        "columns the predicted one"
    )
    if len(classes) <= TABLE_MAX_CLASSES:
        return f"<figure class=cmwrap>{caption}</figcaption>{confusion_table(matrix, classes)}</figure>"
    return (
        f"<figure class=cmwrap>{caption}, classes in the order of the per-class table; shade: share of the true "
        f"class's images</figcaption><img class=cmimage alt='confusion matrix, {len(classes)} classes' "
        f"src='{confusion_png(matrix)}'>{top_confusions_table(matrix, classes)}</figure>"
    )


def confusion_table(matrix: np.ndarray, classes: list[str]) -> str:
    """Every cell as a shaded table cell (blue: correct, red: confused)."""
    top = max(1, int(matrix.max()))
    head = "".join(f"<th class=rot><span>{html.escape(c)}</span></th>" for c in classes)
    rows = []
    for i, name in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            n = int(matrix[i, j])
            alpha = n / top
            colour = f"rgba(52,101,164,{alpha:.2f})" if i == j else f"rgba(204,0,0,{alpha:.2f})"
            ink = "#fff" if alpha > 0.55 else "#222"
            style = f' style="background:{colour};color:{ink}"' if n else ""
            cells.append(f'<td class="cm{" diag" if i == j else ""}"{style}>{n if n else ""}</td>')
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return (
        f"<table class=confusion><thead><tr><th class=corner>true \\ predicted</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def confusion_png(matrix: np.ndarray) -> str:
    """A data: URL of the row-normalised matrix drawn with the report's matplotlib style; at least one
    screen pixel per cell, so no confusion is lost to downsampling."""
    from autotransfer.report.outputs import _matplotlib

    plt = _matplotlib()
    n = len(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    dpi = 100
    side = max(5.0, n / dpi * 1.15)  # inches: the axes get at least n pixels
    figure, axis = plt.subplots(figsize=(side + 1.2, side), dpi=dpi)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="none")
    axis.set_xlabel("predicted class (index)")
    axis.set_ylabel("true class (index)")
    figure.colorbar(image, ax=axis, fraction=0.04, label="share of the true class")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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


def top_confusions_table(matrix: np.ndarray, classes: list[str]) -> str:
    pairs = top_confusions(matrix, classes)
    if not pairs:
        return "<p class=good>No image of this split is confused with another class.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(true)}</td><td>{html.escape(guess)}</td><td class=num>{count}</td>"
        f"<td class=num>{share:.0%}</td></tr>"
        for true, guess, count, share in pairs
    )
    return (
        f"<table class=topconf><caption>the {len(pairs)} most frequent confusions</caption><thead><tr>"
        f"<th>true class</th><th>predicted as</th><th>images</th><th>of the true class</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
