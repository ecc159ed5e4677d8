"""What each section of report.html shows, shaped as plain typed values for the template
(``templates/report.html.j2``): the summary cards, the facts table, the per-class table, the gallery
of confident mistakes and the leaderboard of each stage. No markup here."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from autotransfer.cpu_threads import load_note
from autotransfer.report.page import cell, percent
from autotransfer.report.plots import RAN
from autotransfer.report.score_summary import ScoreSummary
from autotransfer.report.search_choices import describe_auto
from autotransfer.report.terminal import cell_text, is_missing

if TYPE_CHECKING:
    from autotransfer.search.run_profile import RunProfile

STAGE_NAMES = {"probe": "probes", "finetune": "fine-tuning"}
# What the report's leaderboard shows per stage (the CSV has them all).
PROBE_COLUMNS = [
    "trial", "strategy", "backbone", "resolution", "tap", "head", "C", "class_weight", "val_score", "val_accuracy",
    "seconds", "status",
]  # fmt: skip
FINETUNE_COLUMNS = [
    "trial", "strategy", "backbone", "resolution", "tap", "freeze_groups", "head_lr", "backbone_lr_ratio",
    "augmentation", "epochs_run", "class_weight", "val_score", "val_accuracy", "seconds", "status",
]  # fmt: skip
ALWAYS_SHOWN = ("trial", "val_score", "seconds", "status")
# Column headings shorter than the CSV's names (they wrap at spaces; names in cells never wrap): a 1280-px
# and an 800-px page show every column of a fine-tuning table whose trials differ in backbone, tap,
# augmentation and weighting.
HEADERS = {"resolution": "px", "freeze_groups": "frozen groups", "head_lr": "head LR",
           "backbone_lr_ratio": "backbone LR x", "epochs_run": "epochs", "augmentation": "augment"}  # fmt: skip
GALLERY_SIZE = 12
THUMBNAIL_PX = 112


@dataclass(frozen=True)
class Card:
    label: str
    value: str
    note: str = ""
    small: bool = False  # a long value in a smaller font
    fraction: float | None = None  # the time card: the share of the budget used, drawn as a bar
    warning: str = ""  # the time card: how far the run went over its budget; "" within it


@dataclass(frozen=True)
class Plot:
    title: str
    svg: str | None  # inline SVG markup; None when there is nothing to draw
    caption: str
    missing: str  # said instead of the plot when there is nothing to draw


def probes_cross_validated(metrics: dict) -> bool:
    """Whether the probes were scored by cross-validation on train+val (small data) rather than on the val
    split: said by the chosen trial's ``val_score_from``, or by the objective's reason (search/objective.py)."""
    return metrics.get("val_score_from") == "cross-validation" or "cross-validation" in (
        metrics.get("metric_reason") or ""
    )


def stage_labels(metrics: dict) -> dict[str, str]:
    """The legend of each stage in the plots, naming where its scores were measured."""
    probes = "CV mean on train+val" if probes_cross_validated(metrics) else "validation split"
    return {"probe": f"probes ({probes})", "finetune": "fine-tuning (validation split)"}


def score_sources(metrics: dict) -> str:
    """Where the plotted scores were measured, in words: the cards' held-out test score is not among them."""
    if probes_cross_validated(metrics):
        return (
            "Probe scores are means over cross-validation folds of train+val, fine-tuning scores are on the "
            "validation split"
        )
    return "Every score is on the validation split"


def _score(summaries: dict, metrics: dict, split: str, key: str) -> str:
    """One held-out figure as a percentage, falling back to the spec's accuracy."""
    value = (summaries.get(split) or {}).get(key)
    if is_missing(value) and key == "accuracy":
        value = metrics.get(f"{split}_accuracy")
    return percent(value)


def _test_cards(metrics: dict, summaries: dict, metric: str) -> list[Card]:
    has_test = summaries["test"] is not None or "test_accuracy" in metrics
    cards = [Card("test accuracy", _score(summaries, metrics, "test", "accuracy") if has_test else "no test split")]
    test = summaries["test"] or {}
    if test:
        cards.append(Card("test balanced accuracy", percent(test.get("balanced_accuracy"))))
    if metric in ("f1_macro", "roc_auc") and not is_missing(test.get(metric)):  # the metric asked for
        cards.append(Card({"f1_macro": "test macro F1", "roc_auc": "test ROC AUC"}[metric], percent(test[metric])))
    if metric == "log_loss" and not is_missing(test.get("log_loss")):
        cards.append(Card("test log loss", f"{test['log_loss']:.4f}", "lower is better"))
    return cards


def summary_cards(metrics: dict, summaries: dict, elapsed: float, budget: float | None) -> list[Card]:
    """The summary cards: search score, held-out metrics, test scores and time used."""
    from autotransfer.budget import format_duration

    score = ScoreSummary.from_metrics(metrics)  # the rules the terminal summary reads too
    if score.search_score is None:
        score_text = "–"
    else:
        score_text = f"{score.search_score:.4f}" if score.lower_is_better else percent(score.search_score)
    measured_on = "CV mean on train+val" if score.cross_validated else "validation split"
    # The search's score of the chosen trial (as in the leaderboard); the per-class figures come from
    # the predictions of the chosen configuration trained on train only, which can differ a little.
    searched, evaluated = metrics.get("val_accuracy"), (summaries.get("val") or {}).get("accuracy")
    notes = []
    if not is_missing(searched) and not is_missing(evaluated) and abs(float(searched) - float(evaluated)) >= 0.0005:
        notes.append("the chosen configuration retrained on train only")
    if score.chosen_on_val:
        notes.append("the split the search chose on: optimistic")
    val = "val split" if score.chosen_on_val else "held-out val"
    cards = [
        Card(f"search score: {score.metric.replace('_', ' ')} ({measured_on})", score_text,
             "lower is better" if score.lower_is_better else ""),
        Card(f"accuracy ({val})", _score(summaries, metrics, "val", "accuracy"), "; ".join(notes)),
        Card(f"balanced accuracy ({val})", _score(summaries, metrics, "val", "balanced_accuracy")),
        Card(f"macro F1 ({val})", _score(summaries, metrics, "val", "f1_macro")),
        *_test_cards(metrics, summaries, metrics.get("metric") or "val_accuracy"),
    ]  # fmt: skip
    cards = [Card(c.label, c.value, c.note, small=len(c.value) > 8) for c in cards]
    time_text = f"{format_duration(elapsed)} of {format_duration(budget)}" if budget else format_duration(elapsed)
    fraction = min(1.0, elapsed / budget) if budget else None
    over = elapsed - budget if budget else 0.0
    # fit.log says the same at the end ("over the ... budget"): a step ran longer than it was estimated to
    warning = f"over the budget by {format_duration(over)} ({over / budget:.0%})" if over > 0 else ""
    return [*cards, Card("time used of the budget, when this page was written", time_text, small=True,
                         fraction=fraction, warning=warning)]  # fmt: skip


def placement_rows(profile: RunProfile | None) -> list[tuple[str, str]]:
    """The recipe's quadrant twice: from the profile (a priori, with what it measured and at which size)
    and from the probes (measured), and whether they agree."""
    if profile is None or not profile.dataset.quadrant:
        return []
    dataset = profile.dataset
    measured_at = dataset.resolution.get("profiled_at")
    evidence = [f"similarity {dataset.similarity:.2f}" if not is_missing(dataset.similarity) else ""]
    evidence.append(f"at {measured_at}px" if measured_at else "")
    if dataset.nearest_reference:
        evidence.append(f"nearest reference: {dataset.nearest_reference}")
    knn, chance = dataset.separability.get("knn_accuracy"), dataset.separability.get("chance")
    if not is_missing(knn) and not is_missing(chance):
        evidence.append(f"kNN {knn:.2f} vs chance {chance:.2f} (majority class)")
    evidence_text = f" ({', '.join(e for e in evidence if e)})" if any(evidence) else ""
    rows = [("quadrant, a priori (profile)", f"{dataset.quadrant} — {dataset.rationale}{evidence_text}")]
    if profile.measured is not None:
        placement = profile.measured
        verdict = "differs from the profile" if placement.differs else "agrees with the profile"
        rows.append(("quadrant, measured (probes)", f"{placement.quadrant} — {verdict}: {placement.rationale}"))
    elif profile.measured_skipped:
        rows.append(("quadrant, measured (probes)", f"not measured: {profile.measured_skipped}"))
    return rows


def fact_rows(
    *, metrics: dict, profile: RunProfile | None, trials: str, classes: list[str], frame: pd.DataFrame
) -> list[tuple]:
    """The facts table: selection metric, refit, trials (``trials``: their count in words), dataset, what
    ``auto`` chose and why (``frame``: the leaderboard, for the pairs the probes reached) and quadrant."""
    metric_name = metrics.get("metric") or "val_accuracy"
    reason = metrics.get("metric_reason") or ""
    refit = {True: "retrained on train + validation", False: "not refit: the budget left no room (trained on train "
             "only)"}.get(metrics.get("refit_on_train_val"), "unknown")  # fmt: skip
    dataset = profile.dataset if profile else None
    skipped = f"; {len(dataset.skipped)} file(s) skipped" if dataset and dataset.skipped else ""
    n_images = dataset.n_images if dataset else "?"
    n_classes = dataset.n_classes if dataset else len(classes) or "?"
    facts = [
        ("selected by", f"{metric_name.replace('_', ' ')}" + (f" — {reason}" if reason else "")),
        ("refit", refit),
        *([("choice", metrics["selection"])] if metrics.get("selection") else []),
        ("trials", trials),
        ("dataset", f"{n_images} images, {n_classes} classes{skipped}"),
    ]  # fmt: skip
    if profile and load_note(profile.machine_load):
        facts.append(("machine load", load_note(profile.machine_load)))
    if profile and profile.auto is not None:
        probes = frame[(frame["stage"] == "probe") & (frame["status"] == "complete")]
        probed = list(zip(probes["backbone"], probes["resolution"], strict=True))
        facts.append(("backbones and sizes (auto)", describe_auto(profile.auto.to_json(), probed)))
    return [(k, str(v)) for k, v in facts + placement_rows(profile)]


@dataclass(frozen=True)
class ClassScores:
    precision: float | None
    recall: float | None
    support: str
    weak: bool  # recall below 50% on images of this class: shaded


def per_class_rows(summaries: dict[str, dict | None]) -> tuple[list[str], list[tuple[str, list[ClassScores]]]]:
    """The splits that have per-class figures ("validation", "test") and one row per class with each split's."""
    splits = [s for s in summaries if summaries[s]]
    classes = list(dict.fromkeys(c for s in splits for c in summaries[s]["per_class"]))
    rows = []
    for name in classes:
        scores = []
        for s in splits:
            row = summaries[s]["per_class"].get(name, {})
            recall = row.get("recall")
            weak = bool(not is_missing(recall) and float(recall) < 0.5 and row.get("support", 0))
            scores.append(ClassScores(row.get("precision"), recall, cell(row.get("support")), weak))
        rows.append((name, scores))
    return [{"val": "validation", "test": "test"}.get(s, s) for s in splits], rows


@dataclass(frozen=True)
class Tile:
    source: str | None  # data: URL of the thumbnail; None when the image is not found
    name: str
    path: str
    predicted: str
    confidence: str
    label: str


def thumbnail(path: str | Path, roots: list[Path], size: int = THUMBNAIL_PX) -> str | None:
    """A data: URL of a PNG thumbnail of ``path`` (tried as given, then under each root), or None."""
    from PIL import Image, ImageOps

    from autotransfer.data.images import to_rgb

    candidates = [Path(path)] + [root / path for root in roots if not Path(path).is_absolute()]
    for candidate in candidates:
        try:
            with Image.open(candidate) as image:
                image = to_rgb(ImageOps.exif_transpose(image))  # palette + transparency: composited, no warning
                scale = size / max(image.size)
                # Small images (digits, MNIST) are scaled up with crisp pixels, large ones down smoothly.
                method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
                image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), method)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", optimize=True)
            return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return None


@dataclass(frozen=True)
class Gallery:
    tiles: list[Tile]
    wrong: int  # misclassified images in all
    total: int
    limit: int


def wrong_gallery(predictions: pd.DataFrame, roots: list[Path], limit: int = GALLERY_SIZE) -> Gallery:
    """The validation images the chosen pipeline gets wrong with the most confidence."""
    wrong = predictions[predictions["label"].astype(str) != predictions["predicted"].astype(str)]
    wrong = wrong.sort_values("confidence", ascending=False, na_position="last")
    tiles = [
        Tile(
            thumbnail(row.path, roots),
            Path(str(row.path)).name,
            str(row.path),
            str(row.predicted),
            percent(row.confidence),
            str(row.label),
        )  # fmt: skip
        for row in wrong.head(limit).itertuples(index=False)
    ]
    return Gallery(tiles, len(wrong), len(predictions), limit)


@dataclass(frozen=True)
class Board:
    """One stage's leaderboard: the columns that matter, settings shared by every trial said once."""

    title: str
    started: int
    shared: list[tuple[str, str]]
    headers: list[str]
    rows: list[tuple[list[str], bool, str]]  # (cells, chosen, status)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (trial, why it stopped or failed)
    members: list[tuple[str, str]] = field(default_factory=list)  # (trial, weight) of a chosen ensemble's members
    queued: int = 0


def _board_cell(column: str, value) -> str:
    if not is_missing(value) and column == "val_accuracy":
        return f"{float(value):.4f}"
    if not is_missing(value) and column in ("head_lr", "backbone_lr_ratio", "C"):
        return f"{float(value):.3g}"
    if not is_missing(value) and column == "seconds":
        return f"{float(value):.1f}"
    return cell(value)


def _score_headers(part: pd.DataFrame) -> dict[str, str]:
    """The score columns' headers say where a stage's scores were measured: "CV" for probes cross-validated
    on train+val (the leaderboard's ``score_source``), else "val" as the column names say."""
    sources = set(part["score_source"].dropna()) if "score_source" in part else set()
    return {"val_score": "CV score", "val_accuracy": "CV accuracy"} if sources == {"cv"} else {}


def stage_board(frame: pd.DataFrame, stage: str) -> Board | None:
    """The leaderboard rows of one stage, with the columns that matter for it; the chosen row marked."""
    part = frame[frame["stage"] == stage]
    if not len(part):
        return None
    started = part[part["status"].isin((*RAN, "fail"))]
    columns = PROBE_COLUMNS if stage == "probe" else FINETUNE_COLUMNS
    columns = [c for c in columns if c in part and started[c].map(lambda v: not is_missing(v) and v != "").any()]
    # A setting every trial of the stage shares is said once above the table instead of in every row.
    shared = {}
    if len(started) > 1:
        for c in columns:
            values = {cell_text(v, 4) for v in started[c]}
            if c not in ALWAYS_SHOWN and len(values) == 1 and "" not in values:
                shared[c] = values.pop()
    columns = [c for c in columns if c not in shared]
    rows = [([_board_cell(c, row[c]) for c in columns], bool(row["chosen"]), str(row["status"]))
            for _, row in started.iterrows()]  # fmt: skip
    # why a trial stopped or failed: one line each under the table (a column of sentences widens it past the page)
    notes = [
        (cell(row["trial"]), cell(row["stopped"] if is_missing(row["error"]) else row["error"]))
        for _, row in started.iterrows()
        if not (is_missing(row["error"]) and is_missing(row["stopped"]))
    ]
    return Board(
        title=STAGE_NAMES[stage].capitalize(),
        started=len(started),
        shared=[(c.replace("_", " "), v) for c, v in shared.items()],
        headers=[(_score_headers(part) | HEADERS).get(c, c.replace("_", " ")) for c in columns],
        rows=rows,
        notes=[(t, n) for t, n in notes if n],
        # under the table, not a column: one more column runs the fine-tuning table off an 800-px page
        members=[
            (cell(row["trial"]), f"{row['ensemble_weight']:.2f}")
            for _, row in started.iterrows()
            if "ensemble_weight" in row and not is_missing(row["ensemble_weight"])
        ],
        queued=len(part) - len(started),
    )
