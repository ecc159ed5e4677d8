"""Why the chosen (★) trial: the rule that picked it, where its score was measured, and how it sits
against the Pareto front the report draws.

The front is drawn over measured seconds, while the choice never looks at wall time (the same seed
must pick the same pipeline whatever the machine's load, search/records.py): among equal scores it
takes the cheaper settings (a probe before a fine-tuned network, smaller inputs, the earlier trial),
and on small data the one-standard-error rule keeps the cheapest trial within one standard error of
the best (search/selection.py). So the ★ can sit off the front; the report says when and why.

When the final pipeline is an ensemble (search/ensemble_stage.py), every member is ★ and the paragraph
names them with their weights and the rule that replaced the single best trial by their average.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

TIE_RULE = (
    "equal scores are ranked by the trials' settings (a probe before a fine-tuned network, smaller inputs, the "
    "earlier trial), never by their measured seconds, so that the same seed picks the same pipeline on a busy "
    "machine as on a quiet one"
)


ENSEMBLE_RULE = (
    "An ensemble replaces the single best trial only when its validation score beats that trial's alone by at "
    "least one validation image's worth; its members are picked greedily (a member picked twice weighs twice) "
    "from the best few trials of different backbones, sizes and taps"
)


def _name(row: pd.Series, extra: str = "") -> str:
    stage = row["stage"].replace("finetune", "fine-tuning")
    return f"{stage} trial {row['trial']} ({row.get('strategy', '?')}{extra})"


def _members(chosen: pd.DataFrame) -> str:
    """The ensemble's members in words: "probe trial 0 (mid_layer_probe, weight 0.50) and ...", heaviest first."""
    ordered = chosen.sort_values("ensemble_weight", ascending=False, kind="stable")
    names = [_name(row, f", weight {row['ensemble_weight']:.2f}") for _, row in ordered.iterrows()]
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def off_front_reason(frame: pd.DataFrame, front: pd.DataFrame) -> str | None:
    """None when the chosen trial is on the front (or there is none); else a sentence naming the trials
    on the front that score at least as well for less time."""
    chosen = frame[frame["chosen"]]
    if not len(chosen) or chosen.index[0] in front.index:
        return None
    row = chosen.iloc[0]
    better = front[(front["val_score"] >= row["val_score"]) & (front["seconds"] < row["seconds"])]
    if not len(better):
        return None
    other = better.iloc[0]
    return (
        f"The ★ trial is not on the Pareto front: {_name(other)} scored {other['val_score']:.4f} in "
        f"{other['seconds']:.1f} s, the ★ {row['val_score']:.4f} in {row['seconds']:.1f} s."
    )


@dataclass(frozen=True)
class ChoiceExplanation:
    """The "Why the ★ trial" paragraph of the report, as sentences."""

    trial: str  # "fine-tuning trial 1 (finetune_top)"
    score: str  # "accuracy 0.9000 (validation split)"
    rule: str  # the rule that picked it
    measured: str  # where the trials' scores were measured
    off_front: str = ""  # why the ★ is off the Pareto front; "" when it is on it (or the ★ are an ensemble's)
    title: str = "Why the ★ trial"


def explain_choice(frame: pd.DataFrame, front: pd.DataFrame, metrics: dict) -> ChoiceExplanation | None:
    """Why the chosen trial was chosen, or None when no trial was chosen."""
    chosen = frame[frame["chosen"]]
    if not len(chosen):
        return None
    row = chosen.iloc[0]
    metric = str(metrics.get("metric") or "accuracy").replace("_", " ")
    # the chosen record says cross-validation only when it is a probe; a fine-tuned or ensemble choice's
    # objective still says whether the probes were cross-validated (search/objective.py)
    cross_validated = metrics.get("val_score_from") == "cross-validation" or "cross-validation" in str(
        metrics.get("metric_reason") or ""
    )
    if cross_validated:
        measured = (
            "probes on this small dataset are scored by the mean over cross-validation folds of train+val, "
            "fine-tuned trials on the validation split"
        )
    else:
        measured = "every trial is scored on the validation split"
    if "ensemble_weight" in chosen and chosen["ensemble_weight"].notna().any():  # the ★ are an ensemble's members
        return _explain_ensemble(chosen, metrics, measured)
    if metrics.get("selection"):
        rule = f"It was chosen by the {metrics['selection']}."
    else:
        rule = f"It has the highest search score ({metric}); {TIE_RULE}."
    off = off_front_reason(frame, front)
    if off:
        why = TIE_RULE if not metrics.get("selection") else "the rule above compares settings, not measured seconds"
        off += f" The front is drawn over measured seconds, which vary with the machine's load, while {why}."
    probe_cv = cross_validated and row.get("stage") == "probe"
    where = "mean over cross-validation folds" if probe_cv else "validation split"
    score = f"{metric} {row['val_score']:.4f} ({where})"
    return ChoiceExplanation(_name(row), score, rule, measured, off or "")


def _explain_ensemble(chosen: pd.DataFrame, metrics: dict, measured: str) -> ChoiceExplanation:
    """The ★ rows are an ensemble's members: who they are, what the ensemble scored, and the rule."""
    metric = str(metrics.get("metric") or "accuracy").replace("_", " ")
    where = metrics.get("val_score_from") or "validation split"
    value = metrics.get("val_score")
    score = f"{metric} {value:.4f} on the {where}" if value is not None else f"{metric} not recorded"
    rule = f"It was chosen by the {metrics['selection']}. " if metrics.get("selection") else ""
    return ChoiceExplanation(
        trial=f"An ensemble of {len(chosen)} trials: {_members(chosen)}",
        score=f"the ensemble's {score}",
        rule=f"{rule}{ENSEMBLE_RULE}.",
        measured=f"{measured}; the chart rings the members, the ensemble itself is not a trial and has no point "
        "there; its held-out test score is in the cards above and on no member's row of leaderboard.csv",
        title=f"Why the ★ trials: an ensemble of {len(chosen)}",
    )
