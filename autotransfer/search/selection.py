"""The final choice on small data: the one-standard-error rule.

With a few images per class, the best validation score is the maximum of many noisy estimates: a
fine-tuned trial scored on 50 validation images, the best of a dozen, reads several points above what
it does on new images, and beats cross-validated probes that are as good. The rule (Breiman et al.,
*Classification and Regression Trees*, 1984, §3.4.3; Hastie et al., *The Elements of Statistical
Learning*, §7.10) keeps the cheapest configuration whose score is within one standard error of the
best one. The standard error is the binomial one of a proportion-like score ``s`` measured on ``n``
images, in Agresti and Coull's form (*Approximate is better than "exact" for interval estimation of
binomial proportions*, The American Statistician, 1998): ``sqrt(p (1 - p) / (n + 4))`` with
``p = (s n + 2) / (n + 4)``. The plain ``sqrt(s (1 - s) / n)`` is 0 at a score of 1.0, so a fine-tuned
trial that read 17 of 17 validation images right would count as certain and beat every cross-validated
probe; with the adjustment it reads 1.000 ± 0.064. Exact in form for accuracy, an approximation for
balanced accuracy and macro F1; ``log_loss`` and ``roc_auc`` are not proportions, so the plain maximum is
kept for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from autotransfer.search.objective import Objective
from autotransfer.search.records import TrialRecord, best_record

PROPORTION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")


def standard_error(score: float, n_images: int, metric: str) -> float:
    """Binomial standard error of ``score`` (0-1) measured on ``n_images``, Agresti-Coull adjusted (two
    successes and two failures added: never 0 at a score of 0 or 1); 0 for a metric that is not a
    proportion (``log_loss``, ``roc_auc``) or an empty split."""
    if metric not in PROPORTION_METRICS or n_images <= 0:
        return 0.0
    adjusted = (min(max(score, 0.0), 1.0) * n_images + 2.0) / (n_images + 4.0)
    return math.sqrt(adjusted * (1.0 - adjusted) / (n_images + 4.0))


def choose_final(
    rows: list[TrialRecord], objective: Objective, split_sizes: Callable[[int], tuple[int, int]]
) -> tuple[TrialRecord | None, str]:
    """The record to build the final pipeline from, and a sentence saying why when the rule changed it.

    ``objective``: the run's (search/objective.py); the rule applies only when probes are chosen by
    cross-validation (small data). ``split_sizes(resolution)``: (train, val) image counts. A probe's
    CV score was measured on train+val, a fine-tuned trial's on the val split.
    """
    plain = best_record(rows)
    if plain is None or not objective.cv_folds:
        return plain, ""
    n_train, n_val = split_sizes(plain.resolution)
    scored_on = n_train + n_val if plain.stage == "probe" else n_val
    margin = standard_error(plain.val_score, scored_on, objective.metric)
    chosen = best_record(rows, margin=margin)
    if chosen is None or chosen is plain:
        return plain, ""
    return chosen, (
        f"one-standard-error rule (small data): kept the cheaper {_name(chosen)} ({chosen.val_score:.4f}) "
        f"over {_name(plain)} ({plain.val_score:.4f} ± {margin:.4f} on {scored_on} images)"
    )


def _name(record: TrialRecord) -> str:
    return f"{record.stage} trial {record.trial} ({record.strategy or '?'}, {record.resolution} px)"
