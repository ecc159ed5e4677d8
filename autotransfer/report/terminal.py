"""Terminal renderings (rich) of what the engine measured: readable at a glance."""

from __future__ import annotations

import math
import numbers

from rich.console import Console
from rich.table import Table

_BARS = " ▁▂▃▄▅▆▇█"


def is_missing(value) -> bool:
    """None, NaN, pandas' NA/NaT: a cell with nothing in it. Never evaluates ``v != v`` on ``pd.NA``,
    whose truth value is ambiguous (a fine-tuning trial that was queued but never ran has NA cells)."""
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return math.isnan(float(value))
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return False
    try:
        import pandas as pd

        missing = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return missing is True or (type(missing).__name__ == "bool_" and bool(missing))


def cell_text(value, digits: int = 3) -> str:
    """A table cell: empty when missing, floats rounded, everything else as ``str``."""
    if is_missing(value):
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.{digits}f}"
    return str(value)


def frame_table(frame, title: str) -> Table:
    """A pandas DataFrame as a rich Table (missing cells empty, floats to 3 decimals)."""
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), no_wrap=column in ("backbone", "tap"))
    for row in frame.itertuples(index=False):
        table.add_row(*(cell_text(v) for v in row))
    return table


def sparkline(values: list[float]) -> str:
    """One character per value, scaled from the smallest to the largest."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_BARS[1 + int((v - low) / span * (len(_BARS) - 2))] for v in values)


def duplicates_text(p: dict) -> str:
    """The profile's duplicates in one line: copies within a class and label conflicts (the same bytes in
    two classes, data/conflicts.py) are both images with the same bytes, so the total counts both."""
    exact, conflicts = p["exact_duplicates"], len(p.get("label_conflicts", []))
    text = f"{exact + conflicts} exact (same bytes): {exact} within a class"
    if conflicts:
        text += f", [bold red]{conflicts} label conflict(s)[/] (the same image in two classes)"
    return text + f"; {p['cross_split_duplicates']} across splits"


def render_profile(console: Console, p: dict) -> None:
    summary = Table(title=f"Profile of {p['n_images']} images, {p['n_classes']} classes", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    balance = p["class_balance"]
    res = p["resolution"]
    summary.add_row(
        "images per class",
        f"min {balance['min']:.0f}, median {balance['median']:.0f}, "
        f"max {balance['max']:.0f} (imbalance {balance['imbalance_ratio']:.1f}:1)",
    )
    summary.add_row(
        "resolution",
        f"short side median {res['median_short_side']:.0f}px "
        f"({res['min_short_side']:.0f}-{res['max_short_side']:.0f}), aspect median {res['median_aspect']:.2f}",
    )
    summary.add_row("grayscale", f"{p['grayscale_share']:.0%}")
    summary.add_row("duplicates", duplicates_text(p))
    summary.add_row("skipped files", str(len(p["skipped"])))
    summary.add_row(
        "similarity to ImageNet",
        f"{p['similarity']:.2f}  (1 = like ImageNet photos, 0.5 = like clip art, 0 = like noise; "
        f"measured with {p['backbone']} at {p['image_size']}px on {p['sample_size']} images)",
    )
    sep = p["separability"]
    knn = "n/a" if sep["knn_accuracy"] is None else f"{sep['knn_accuracy']:.2f}"
    summary.add_row(
        "top features separate classes",
        f"kNN accuracy {knn} (chance {sep['chance']:.2f}: the majority class's share), LogME {sep['logme']:.3f}",
    )
    summary.add_row("quadrant", f"[bold]{p['quadrant']}[/]")
    summary.add_row("why", p["rationale"])
    prior = p["prior"]
    summary.add_row(
        "search starts with",
        f"{', '.join(prior['strategies'])}; taps {', '.join(prior['taps'])}; "
        f"freeze groups {prior['freeze_groups']}; backbone LR x{prior['backbone_lr_ratio']}",
    )
    console.print(summary)
    distances = [row["distance"] for row in p["layer_distance"]]
    console.print(
        f"distance to ImageNet by depth ({len(distances)} BN layers, early -> late): "
        f"{sparkline(distances)}  [{min(distances):.2f} .. {max(distances):.2f}]"
    )
    groups = Table(title="distance by depth group")
    for column in ("group", "distance", ""):
        groups.add_column(column)
    top = max(g["distance"] for g in p["group_distance"]) or 1.0
    for g in p["group_distance"]:
        groups.add_row(
            f"{g['group']}: {g['name']}", f"{g['distance']:.3f}", "█" * max(1, int(30 * g["distance"] / top))
        )
    console.print(groups)
    for problem in p["problems"]:
        console.print(f"[yellow]problem:[/] {problem}")


WORST_CLASSES = 10  # the terminal lists every class's recall up to this many classes, else the lowest


def recall_summary(per_class: dict[str, dict], limit: int = WORST_CLASSES) -> str:
    """Recall per class when there are at most ``limit`` classes, else the ``limit`` lowest (ties by
    name); the full list is in report.html. Plain text (the caller escapes it for rich)."""
    ranked = sorted(per_class.items(), key=lambda item: (float(item[1]["recall"]), str(item[0])))
    if len(per_class) <= limit:
        return "recall per class " + ", ".join(f"{c} {row['recall']:.2f}" for c, row in per_class.items())
    worst = ", ".join(f"{c} {row['recall']:.2f}" for c, row in ranked[:limit])
    return f"lowest recall ({limit} of {len(per_class)} classes; all in report.html): {worst}"
