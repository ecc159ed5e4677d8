"""What a run's scores mean, decided once for the terminal summary, fit.log and the HTML report.

``ScoreSummary.from_metrics(pipeline.spec["metrics"])`` reads the metrics the search saved with the
pipeline and answers the questions every front end must answer the same way:

- which score the search compared (``search_score``), and on what: a validation split, or the mean over
  cross-validation folds of train+val (``cross_validated``);
- the score as a user reads it: ``log_loss`` is searched as its negative (every score is "higher is
  better", transfer/metrics.py) and shown here as the loss itself (``lower_is_better``);
- whether the validation figures are optimistic: when the search chose the configuration on the
  validation split (``chosen_on_val``), that split is not held out;
- per split, the figures to show and whether they are at chance level (``SplitScores.at_chance``).

Light on purpose (no numpy, no pandas): the CLI imports it after a run without slowing start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autotransfer.metric_names import PROBABILITY_METRICS

CHANCE_MARGIN = 0.02  # balanced accuracy within this of 1/classes: the pipeline does not tell classes apart


@dataclass(frozen=True)
class SplitScores:
    """The figures of one evaluated split (``val`` or ``test``), as saved in the pipeline's metrics."""

    split: str
    accuracy: float
    balanced_accuracy: float
    f1_macro: float
    probability_scores: dict[str, float]  # roc_auc and log_loss (the loss itself) when computed
    per_class: dict[str, dict]

    @classmethod
    def from_summary(cls, split: str, summary: Mapping) -> SplitScores:
        return cls(
            split=split,
            accuracy=float(summary["accuracy"]),
            balanced_accuracy=float(summary["balanced_accuracy"]),
            f1_macro=float(summary["f1_macro"]),
            probability_scores={name: float(summary[name]) for name in PROBABILITY_METRICS if name in summary},
            per_class=dict(summary["per_class"]),
        )

    @property
    def chance(self) -> float:
        """Balanced accuracy of a constant or random guess: 1 / number of classes."""
        return 1.0 / max(1, len(self.per_class))

    @property
    def at_chance(self) -> bool:
        return self.balanced_accuracy <= self.chance + CHANCE_MARGIN


@dataclass(frozen=True)
class ScoreSummary:
    """The scores of a run's chosen pipeline and how to read them (see the module docstring)."""

    metric: str
    metric_reason: str | None
    search_score: float | None  # as a user reads it (log_loss: the loss); None when not recorded
    cross_validated: bool
    refit_on_train_val: bool
    selection: str | None  # why this configuration (e.g. the one-standard-error rule), when said
    chosen_on_val: bool
    splits: tuple[SplitScores, ...]

    @classmethod
    def from_metrics(cls, metrics: Mapping) -> ScoreSummary:
        metric = metrics.get("metric", "accuracy")
        score = metrics.get("val_score")
        if score is not None and metric == "log_loss":
            score = -float(score)  # searched as "higher is better": the loss itself
        splits = tuple(
            SplitScores.from_summary(split, metrics[split])
            for split in ("val", "test")
            if isinstance(metrics.get(split), Mapping) and metrics[split]
        )
        return cls(
            metric=metric,
            metric_reason=metrics.get("metric_reason") or None,
            search_score=None if score is None else float(score),
            cross_validated=metrics.get("val_score_from") == "cross-validation",
            refit_on_train_val=bool(metrics.get("refit_on_train_val", True)),
            selection=metrics.get("selection") or None,
            # the val split chose the configuration unless probes were chosen by cross-validation: then it is
            # held out. An ensemble's weights were chosen on it, whatever its members trained on
            chosen_on_val=str(metrics.get("val_score_from") or "").startswith("validation split"),
            splits=splits,
        )

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "log_loss"

    @property
    def search_source(self) -> str:
        """What the search score was computed on."""
        return "mean over cross-validation folds of train+val" if self.cross_validated else "validation split"

    @property
    def val_name(self) -> str:
        """How the validation split's figures are to be read."""
        if self.chosen_on_val:
            return "validation split (the one the search chose on: optimistic)"
        return "held-out validation (the chosen configuration trained on train only)"

    def search_score_text(self) -> str | None:
        """``accuracy 0.9100``, or for log_loss the loss with its direction; None when not recorded."""
        if self.search_score is None:
            return None
        if self.lower_is_better:
            return f"{self.metric} {self.search_score:.4f} (lower is better; maximised as its negative)"
        return f"{self.metric} {self.search_score:.4f}"
