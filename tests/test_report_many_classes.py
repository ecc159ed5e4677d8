"""Many classes (issue 27.7): report.html draws confusion matrices above 30 classes as images with the
top confusions as a table (a 1,000-class report was 20 MB of table cells), and the terminal lists
the lowest recalls rather than every class."""

import re

import numpy as np
import pandas as pd
from sample_run import make_run

from autotransfer.report.confusion import TABLE_MAX_CLASSES, confusion_counts, confusion_view, top_confusions
from autotransfer.report.outputs import write_outputs
from autotransfer.report.terminal import recall_summary


def _predictions(n_classes: int, per_class: int, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Each class right most of the time; mistakes go mostly to the next class (a known top confusion)."""
    rng = np.random.default_rng(seed)
    classes = [f"class_{i:04d}" for i in range(n_classes)]
    rows = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            guess = c if rng.random() < 0.7 else (c + 1) % n_classes if rng.random() < 0.8 else rng.integers(n_classes)
            rows.append({"path": f"{name}/{i}.png", "label": name, "predicted": classes[guess],
                         "confidence": float(rng.random())})  # fmt: skip
    return pd.DataFrame(rows), classes


def test_up_to_30_classes_the_matrix_stays_a_table_and_above_it_becomes_an_image():
    few, few_classes = _predictions(TABLE_MAX_CLASSES, 4)
    view = confusion_view(few, few_classes, "validation")
    assert len(view.rows) == TABLE_MAX_CLASSES and view.image is None and not view.top
    assert sum(c.count for row in view.rows for c in row) == len(few)
    many, classes = _predictions(40, 4)
    view = confusion_view(many, classes, "validation")
    assert not view.rows and view.image.startswith("data:image/png;base64,")
    assert len(view.top) == 20
    counts = [n for _, _, n, _ in view.top]
    assert counts == sorted(counts, reverse=True) and all(t != p for t, p, _, _ in view.top)


def test_top_confusions_are_the_largest_off_diagonal_cells():
    frame = pd.DataFrame(
        {"label": ["a"] * 5 + ["b"] * 4 + ["c"] * 2, "predicted": list("abbbb") + list("bbca") + list("cc")}
    )
    matrix = confusion_counts(frame, ["a", "b", "c"])
    assert top_confusions(matrix, ["a", "b", "c"]) == [("a", "b", 4, 0.8), ("b", "a", 1, 0.25), ("b", "c", 1, 0.25)]


def test_a_thousand_class_report_is_under_5_megabytes(tmp_path):
    arguments = make_run(tmp_path / "run")
    for split, seed in (("val", 1), ("test", 2)):
        frame, classes = _predictions(1000, 4 if split == "val" else 2, seed)
        frame.to_csv(tmp_path / "run" / f"predictions-{split}.csv", index=False)
    arguments["pipeline"].spec["classes"] = classes
    write_outputs(**arguments)
    report = (tmp_path / "run" / "report.html").read_text()
    assert len(report.encode()) < 5_000_000, len(report.encode())
    assert report.count("<img class=cmimage") == 2 and "<table class=confusion>" not in report
    rows = re.findall(r"<tr><td>(class_\d+)</td><td>(class_\d+)</td><td class=num>(\d+)</td>", report)
    assert len(rows) == 2 * 20 and all(t != p for t, p, _ in rows)  # the top confusions of both splits


def test_the_terminal_lists_every_recall_for_few_classes_and_the_lowest_ten_for_many():
    few = {name: {"recall": r} for name, r in (("cat", 0.9), ("dog", 0.5))}
    assert recall_summary(few) == "recall per class cat 0.90, dog 0.50"
    many = {f"c{i:03d}": {"recall": 1.0 - i / 1000} for i in range(1000)}
    text = recall_summary(many)
    assert text.startswith("lowest recall (10 of 1000 classes; all in report.html): c999 0.00")
    assert text.count(",") == 9 and "c000" not in text and "c990 0.01" in text
