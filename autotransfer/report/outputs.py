"""What a run leaves for people: ``leaderboard.csv``, ``skipped.csv`` and a self-contained ``report.html``.

This module reads the run's files and shapes what the page shows; ``report/sections.py`` shapes each
section, ``report/plots.py`` draws, ``templates/report.html.j2`` writes the HTML. The page is one file
(plots are inline SVG from matplotlib, thumbnails are base64 PNG) with, in order: the chosen pipeline
and its metrics against the budget; per-class precision / recall and the confusion matrix (validation,
and test when there is a test split), from the run's ``predictions-<split>.csv`` and
``pipeline.spec["metrics"]``; the most confidently wrong validation images; the profile's
distance-by-depth curve; the run's metric against cost with the Pareto front; the search history of
both stages; and a leaderboard per stage with the columns that matter (every column is in
``leaderboard.csv``). ``profile.json`` is read as a ``RunProfile`` (search/run_profile.py); a run without
one, or with one another version wrote, is rendered without the profile's sections (the latter said in one
line). Runs written by older versions lack some of the other inputs: each section is left out, or says what
is missing, rather than failing. When the chosen pipeline is an ensemble, every member's row is chosen, with
its weight in ``ensemble_weight``, and the ensemble's test accuracy is on no member's row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from markupsafe import Markup

from autotransfer.errors import AutoTransferError
from autotransfer.files import write_text_atomic
from autotransfer.report import plots
from autotransfer.report.choice import explain_choice
from autotransfer.report.confusion import confusion_view
from autotransfer.report.page import render
from autotransfer.report.plots import RAN, pareto_front
from autotransfer.report.sections import (
    Plot,
    fact_rows,
    per_class_rows,
    score_sources,
    stage_board,
    stage_labels,
    summary_cards,
    wrong_gallery,
)
from autotransfer.trial_status import BUDGET_REASON, BUDGET_STOPPED

if TYPE_CHECKING:
    from autotransfer.search.ensemble_stage import Ensemble
    from autotransfer.search.records import TrialRecord
    from autotransfer.search.run_profile import RunProfile

log = logging.getLogger(__name__)

COLUMNS = [
    "stage",
    "trial",
    "status",
    "strategy",
    "backbone",
    "resolution",
    "tap",
    "head",
    "C",
    "freeze_groups",
    "head_lr",
    "backbone_lr_ratio",
    "layer_decay",
    "weight_decay",
    "label_smoothing",
    "augmentation",
    "epochs_run",
    "epochs_planned",
    "epochs_why",  # search/finetune_stage.py: how many epochs the trial got and why
    "class_weight",
    "metric",
    "val_score",
    "val_accuracy",
    "score_source",  # where val_score and val_accuracy were measured: cv (train+val folds) or val (the split)
    "test_accuracy",
    "seconds",
    "worker",  # host:pid that ran a fine-tuning trial (workers sharing a study: docs/distributed.md)
    "chosen",  # in the final pipeline: the one trial, or each member of an ensemble
    "ensemble_weight",  # a member's weight in the chosen ensemble; empty when the pipeline is one trial
    "stopped",
    "error",
]


def leaderboard(
    records: list[TrialRecord],
    best: TrialRecord | None,
    test_accuracy: float | None,
    ensemble: Ensemble | None = None,
) -> pd.DataFrame:
    """Every trial, best validation score (the run's metric) first. ``chosen``: the ``best`` row, or each
    member of ``ensemble`` (the final pipeline when it is one) with its ``ensemble_weight``. The test
    score is on the chosen row of a single-trial pipeline only: an ensemble's belongs to no member."""
    frame = pd.DataFrame([r.row() for r in records])
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    for column in ("trial", "resolution", "freeze_groups", "epochs_run", "epochs_planned"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in ("val_score", "val_accuracy", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if ensemble is not None:
        weights = {(m.stage, m.trial): ensemble.choice.weights[i] for i, m in enumerate(ensemble.members)}
    else:
        weights = {(best.stage, best.trial): None} if best else {}
    keys = list(zip(frame["stage"], frame["trial"], strict=True))
    frame["chosen"] = [key in weights for key in keys]
    frame["ensemble_weight"] = pd.array([weights.get(key) for key in keys], dtype="Float64")
    frame["test_accuracy"] = [test_accuracy if chosen and ensemble is None else None for chosen in frame["chosen"]]
    # the chosen trial first among equal scores: the choice ranks ties by settings, not seconds (report/choice.py)
    frame = frame[COLUMNS].sort_values(
        ["val_score", "chosen", "seconds"], ascending=[False, False, True], na_position="last"
    )
    return frame.reset_index(drop=True)


def trial_counts(frame: pd.DataFrame) -> dict:
    """Trials per stage and status; ``text``: "3 probes, 2 fine-tuning trials (1 pruned, 1 stopped by the
    budget, 1 failed); 1 queued trial not started" -- counting only trials that ran as trials (why the
    others did not start is in their ``stopped`` reason, or they were still queued). A trial the budget
    stopped has the status ``stopped (budget)`` (a leaderboard written before it: pruned, its ``stopped``
    starting with "time budget")."""
    status = frame["status"].astype(str) if "status" in frame else pd.Series([""] * len(frame))
    stage = frame["stage"].astype(str) if "stage" in frame else pd.Series([""] * len(frame))
    stopped = frame["stopped"] if "stopped" in frame else pd.Series([None] * len(frame))
    stopped = stopped.astype(object).fillna("").astype(str)
    by_budget = (status == BUDGET_STOPPED) | ((status == "pruned") & stopped.str.startswith(BUDGET_REASON))
    counts = {
        s: {
            "ran": int(((stage == s) & status.isin(RAN)).sum()),
            "pruned": int(((stage == s) & (status == "pruned") & ~by_budget).sum()),
            "stopped by the budget": int(((stage == s) & by_budget).sum()),
            "failed": int(((stage == s) & (status == "fail")).sum()),
            "not_started": int(((stage == s) & ~status.isin((*RAN, "fail"))).sum()),
        }
        for s in ("probe", "finetune")
    }
    probe, finetune = counts["probe"], counts["finetune"]
    text = f"{probe['ran']} probe{'s' * (probe['ran'] != 1)}"
    if probe["failed"]:
        text += f" ({probe['failed']} failed)"
    text += f", {finetune['ran']} fine-tuning trial{'s' * (finetune['ran'] != 1)}"
    details = [f"{finetune[k]} {k}" for k in ("pruned", "stopped by the budget", "failed") if finetune[k]]
    if details:
        text += f" ({', '.join(details)})"
    queued = probe["not_started"] + finetune["not_started"]
    if queued:
        text += f"; {queued} queued trial{'s' * (queued != 1)} not started"
    return {**counts, "text": text}


# ---------------------------------------------------------------------------------------------- inputs
def read_predictions(out: Path, split: str) -> pd.DataFrame | None:
    """``predictions-<split>.csv`` (path, label, predicted, confidence) or None when absent or unreadable."""
    path = out / f"predictions-{split}.csv"
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"label": str, "predicted": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        log.warning("report: %s unreadable (%s); its sections are left out", path, error)
        return None
    if not {"path", "label", "predicted"} <= set(frame.columns):
        return None
    if "confidence" not in frame:
        frame["confidence"] = float("nan")
    return frame


def split_metrics(metrics: dict, split: str, predictions: pd.DataFrame | None, classes: list[str]) -> dict | None:
    """The split's summary from the spec (``metrics[split]``), else computed from its predictions."""
    given = metrics.get(split)
    if isinstance(given, dict) and "per_class" in given:
        return given
    if predictions is None or not len(predictions):
        return None
    from autotransfer.transfer.metrics import classification_summary

    index = {name: i for i, name in enumerate(classes)}
    known = predictions["label"].isin(index) & predictions["predicted"].isin(index)
    truth = predictions.loc[known, "label"].map(index)
    guess = predictions.loc[known, "predicted"].map(index)
    return classification_summary(truth.to_numpy(), guess.to_numpy(), classes)


def _classes(spec: dict, *frames: pd.DataFrame | None) -> list[str]:
    classes = [str(c) for c in spec.get("classes") or []]
    for frame in frames:
        if frame is not None:
            for name in pd.concat([frame["label"], frame["predicted"]]).astype(str).unique():
                if name not in classes:
                    classes.append(name)
    return classes


@dataclass(frozen=True)
class ProfileInput:
    """``profile.json`` as the report reads it: the ``profile``, or None (no file, or one this version
    cannot read); ``note``: the one line the page says when the file is there but left out."""

    profile: RunProfile | None
    note: str | None = None


def read_profile(out: Path) -> ProfileInput:
    """The run's ``RunProfile`` through its own loader; a missing file is no profile, one written by another
    version (``errors.written_by_another_version``) or unreadable is no profile and a note."""
    from autotransfer.search.run_profile import RunProfile

    if not (out / "profile.json").is_file():
        return ProfileInput(None)
    try:
        return ProfileInput(RunProfile.load(out))
    except AutoTransferError as error:
        log.warning("report: profile.json left out: %s", error.what)
        return ProfileInput(None, f"The profile's sections are left out: {error.what}")
    except (OSError, ValueError, TypeError, KeyError) as error:
        log.warning("report: profile.json unreadable (%s)", error)
        return ProfileInput(None, f"The profile's sections are left out: profile.json cannot be read ({error}).")


def _search_plots(frame: pd.DataFrame, profile: RunProfile | None, metrics: dict) -> list[Plot]:
    """The distance-by-depth (of the profiling backbone, said so), score-against-cost (the run's metric,
    where each stage's scores were measured: CV or the val split) and history plots."""
    metric = (metrics.get("metric") or "accuracy").replace("_", " ")
    profiled = profile.dataset.backbone if profile else "the profiling backbone"
    chosen = list(dict.fromkeys(frame.loc[frame["chosen"], "backbone"].dropna()))  # an ensemble's may be several
    other = "" if chosen in ([], [profiled]) else f" (the chosen pipeline uses {', '.join(chosen)})"
    labels, scored = stage_labels(metrics), score_sources(metrics)
    members = int(frame["chosen"].sum()) > 1
    ringed = "the red rings are the chosen ensemble's members" if members else "the red ring is the chosen one"
    distance, pareto, history = (
        plots.distance_plot(profile.dataset) if profile else None,
        plots.pareto_plot(frame, labels),
        plots.history_plot(frame, labels),
    )
    return [
        Plot(f"Profile: domain distance by depth of {profiled}", Markup(distance) if distance else None,
         f"Measured with the profiling backbone, {profiled}{other}: how far each depth group's activations on "
         "this data are from ImageNet's (higher = more different); a distance that grows with depth suggests "
         "features from a lower tap and fine-tuning the top.",
         "The run has no profile (profile.json missing, left out or without distances)."),
        Plot(f"Search score ({metric}) against cost", Markup(pareto) if pareto else None,
         f"Every trial that ran, scored by the run's metric ({metric}); the black line is the Pareto front (no "
         f"other trial both scores higher and costs less); {ringed}. {scored}; the chosen "
         "pipeline's held-out test score is in the cards above, not on this chart.",
         "No trial finished."),
        Plot("Search history", Markup(history) if history else None,
         f"Search score (the run's metric) of each trial in the order the stages ran, and the best so far. {scored}.",
         "No trial finished."),
    ]  # fmt: skip


def render_html(
    frame: pd.DataFrame,
    profile: ProfileInput,
    pipeline_spec: dict,
    elapsed: float,
    budget: float | None = None,
    out: Path | None = None,
) -> str:
    """The report of a run (``out``: the run directory, for the predictions CSVs)."""
    run_profile = profile.profile
    dataset = run_profile.dataset if run_profile else None
    metrics = pipeline_spec.get("metrics") or {}
    out = Path(out) if out is not None else None
    predictions = {s: read_predictions(out, s) if out else None for s in ("val", "test")}
    classes = _classes(pipeline_spec, *predictions.values())
    summaries = {s: split_metrics(metrics, s, predictions[s], classes) for s in ("val", "test")}
    splits, rows = per_class_rows(summaries)
    per_class = {"splits": splits, "rows": rows} if splits else None
    confusions = [
        confusion_view(predictions[s], classes, "validation" if s == "val" else "test")
        for s in ("val", "test")
        if predictions[s] is not None and len(predictions[s])
    ]
    gallery = wrong_gallery(predictions["val"], [out] if out else []) if predictions["val"] is not None else None
    links = [("classes", "Per class", per_class), ("wrong", "Mistakes", gallery), ("search", "Search", True),
             ("leaderboard", "Leaderboard", True)]  # fmt: skip
    return render(
        "report.html.j2",
        source=str(out or ""),
        nav=[(anchor, text) for anchor, text, shown in links if shown is not None],
        summary=str(pipeline_spec.get("summary") or "(no description in the checkpoint)"),
        cards=summary_cards(metrics, summaries, elapsed, budget),
        facts=fact_rows(
            metrics=metrics, profile=run_profile, trials=trial_counts(frame)["text"], classes=classes, frame=frame
        ),  # fmt: skip
        profile_note=profile.note,
        per_class=per_class,
        confusions=confusions,
        gallery=gallery,
        plots=_search_plots(frame, run_profile, metrics),
        why=explain_choice(frame, pareto_front(frame), metrics),
        boards=[b for b in (stage_board(frame, "probe"), stage_board(frame, "finetune")) if b],
        problems=[str(p) for p in dataset.problems] if dataset else [],
        skipped=dataset.skipped if dataset else [],
        has_test_predictions=predictions["test"] is not None,
        ensemble_members=int(frame["ensemble_weight"].notna().sum()),
    )


def write_outputs(
    out: Path,
    records: list[TrialRecord],
    best: TrialRecord,
    pipeline,
    elapsed: float,
    budget: float,
    *,
    ensemble: Ensemble | None = None,
) -> pd.DataFrame:
    """leaderboard.csv, skipped.csv (the files left out, and why) and report.html (written atomically);
    ``ensemble``: the chosen ensemble, when the pipeline is one (search/ensemble_stage.py)."""
    out = Path(out)
    spec = getattr(pipeline, "spec", {}) or {}
    frame = leaderboard(records, best, (spec.get("metrics") or {}).get("test_accuracy"), ensemble)
    write_text_atomic(out / "leaderboard.csv", frame.to_csv(index=False))
    profile = read_profile(out)
    skipped = pd.DataFrame(profile.profile.dataset.skipped if profile.profile else [], columns=["path", "reason"])
    write_text_atomic(out / "skipped.csv", skipped.to_csv(index=False))
    write_text_atomic(out / "report.html", render_html(frame, profile, spec, elapsed, budget, out))
    return frame
