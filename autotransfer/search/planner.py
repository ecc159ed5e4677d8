"""The budget planner: pure arithmetic on measured or estimated seconds, no model anywhere.

Every stage asks it whether its next step fits: the step's estimated cost plus the reserve for the
final refit and saving must fit in the time left. Costs are measured where a step already ran and
estimated from the feature-extraction time otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotransfer.search.records import TrialRecord

SAVE_SECONDS = 8.0  # writing the checkpoint, leaderboard and report, measured at 2-4 s on 2 CPU cores
PROBE_SECONDS = 5.0  # fitting the linear heads of one (backbone, resolution) on cached features
CHEAP_SHARE_BEFORE_FINETUNING = 0.5  # of the budget, when the profile's first strategy is a fine-tuning one
TRAIN_STEP_FORWARDS = 3.0  # a training step costs about three forward passes (forward + backward)
PROBE_OVERHEAD = 2.0  # a (backbone, resolution) of the cheap stage costs about twice its extraction (scores, probes)


def extraction_seconds(seconds_per_image: float, measured_at: int, resolution: int, n_images: int) -> float:
    """Forward passes over ``n_images`` at ``resolution`` px, from a throughput measured at ``measured_at`` px
    (cost grows with the pixel count)."""
    return seconds_per_image * (resolution / measured_at) ** 2 * n_images


def pair_seconds(extraction: float, corrections: list[float], probe_fits: int = 1) -> float:
    """A cheap-stage pair: its extraction times ``PROBE_OVERHEAD`` (grown by the probe fits per (head, C):
    CV folds x class weightings, half an extraction each), or times the mean ratio of actual to
    estimated cost of the pairs already probed in this run (``corrections``), which tracks the load."""
    if corrections:
        return extraction * sum(corrections) / len(corrections)
    return extraction * PROBE_OVERHEAD * max(1.0, probe_fits / 2)


def pair_needs(expected: float, first: bool) -> float:
    """Seconds a cheap-stage pair must find left besides one probe and the reserve: its whole
    ``expected`` cost, except the run's first pair, which always starts (0): the minimum-budget check
    already vouched for one extraction and one probe, its taps, class weightings and (head, C) stop at
    the deadline once one is fit (RankingConfig.deadline), and without it the run has no candidate
    at all. An estimate inflated by a burst of load must not turn a workable budget into an error."""
    return 0.0 if first else expected


def minimum_budget(elapsed: float, extract_seconds: float) -> float:
    """Seconds a run needs at least: what already passed, one feature extraction, one probe, and the
    probe stage's reserve (saving)."""
    return elapsed + extract_seconds + PROBE_SECONDS + reserve(None, 0, 0)


def refit_seconds(epoch_seconds: float, n_train: int, n_val: int, epochs: int) -> float:
    """Refitting a fine-tuned configuration on train+val for ``epochs`` epochs (train-only epochs
    took ``epoch_seconds``)."""
    return epoch_seconds * (n_train + n_val) / max(n_train, 1) * epochs + 3.0


def reserve(best: TrialRecord | None, n_train: int, n_val: int) -> float:
    """Seconds kept for the final refit and saving, given the best record so far."""
    if best is None or best.stage == "probe":
        return SAVE_SECONDS + 3.0
    epochs = (best.best_epoch or 0) + 1
    return SAVE_SECONDS + refit_seconds(best.epoch_seconds or 1.0, n_train, n_val, epochs)


def estimate_epoch_seconds(
    extract_seconds: float, n_images: int, n_train: int, freeze_fraction: float, augmented: bool
) -> float:
    """One fine-tuning epoch before any was measured: a training step costs about
    ``TRAIN_STEP_FORWARDS`` forwards over the train split, plus the validation forward. A frozen prefix
    makes it cheaper: without augmentation its output is cached (its forward and backward are skipped);
    augmentation changes every image every epoch, so the cache is off and only the prefix's backward
    (two of the three forwards' worth) is saved, and the per-image transforms add about 30%."""
    per_image = extract_seconds / max(n_images, 1)
    share = 1.0 - (0.4 if augmented else 0.6) * freeze_fraction
    augment = 1.3 if augmented else 1.0
    return per_image * (TRAIN_STEP_FORWARDS * n_train * share * augment + (n_images - n_train)) + 0.5


def probe_pair_fits(left: float, reserve_seconds: float, expected: float) -> bool:
    """Whether probing one more (backbone, resolution) of ``expected`` seconds fits in ``left``."""
    return left >= reserve_seconds + PROBE_SECONDS + expected


def cheap_share(finetune_first: bool) -> float:
    """The share of the budget the cheap stage may use: half when the profile says fine-tuning wins
    (on a slow machine probing every pair would otherwise leave nothing for it), else all."""
    return CHEAP_SHARE_BEFORE_FINETUNING if finetune_first else 1.0


def finetune_trial_fits(left: float, reserve_seconds: float, min_epochs: int, epoch_seconds: float) -> bool:
    """Whether one more fine-tuning trial (at least ``min_epochs`` epochs) fits in ``left``."""
    return left >= reserve_seconds + min_epochs * epoch_seconds


def next_epoch_fits(left: float, reserve_seconds: float, epoch_seconds: float) -> bool:
    """Whether one more epoch (10% margin) fits in ``left``."""
    return left >= reserve_seconds + epoch_seconds * 1.1


def refit_fits(left: float, refit: float) -> bool:
    """Whether refitting on train+val (20% margin) and saving fit in ``left``."""
    return left > SAVE_SECONDS + refit * 1.2


# --- how long a trial must train to be judged, and how the search grows with the budget ---------------

JUDGE_UPDATES = 100  # optimizer updates before a fine-tuning run's validation score says much about its end
REFERENCE_BUDGET = 600.0  # seconds: the budget the space files' epochs and trials are written for (10 min)
MAX_EPOCHS = 40  # per trial, however long the budget
MAX_BACKBONES = 8
CPU_RESOLUTION_CAPS = ((7200.0, 448), (3600.0, 384), (1800.0, 288), (0.0, 224))  # (budget from, px) on a CPU
GPU_RESOLUTION_CAP = 448
UNUSED_SHARE = 0.1  # of the budget: at most this much may be left unused when the search ends early


def epochs_to_judge(min_epochs: int, n_train: int, batch_size: int, max_epochs: int, warmup_epochs: int = 1) -> int:
    """The fewest epochs after which a fine-tuning trial may be judged (pruned, or compared): the pruner's
    first rung, one epoch after the warm-up, and ``JUDGE_UPDATES`` optimizer updates (a first epoch of a few
    dozen updates does not predict how a trial ends); never more than ``max_epochs``."""
    steps = max(1, math.ceil(n_train / max(batch_size, 1)))
    return max(1, min(max_epochs, max(min_epochs, warmup_epochs + 1, math.ceil(JUDGE_UPDATES / steps))))


@dataclass(frozen=True)
class SearchShape:
    """How big the search may grow at a budget: epochs per trial, trials, backbones, largest input size."""

    epochs: int
    max_trials: int
    max_backbones: int
    max_resolution: int
    why: str


def scaled_plan(
    budget: float, *, epochs: int, max_trials: int, max_backbones: int, cuda: bool, grow: bool = True
) -> SearchShape:
    """The search's shape at ``budget`` seconds, from the space's values at ``REFERENCE_BUDGET``.

    With ``k = budget / REFERENCE_BUDGET`` (at least 1): trials grow with ``k``, epochs per trial with
    ``sqrt(k)`` (successive halving gives the longest training to the best few, so more trials come
    first), backbones by one per doubling, and on a CPU the largest input size steps up at 30 min, 1 h
    and 2 h (a GPU affords 448 px at any budget). What each costs on this machine is checked when it is
    used (auto_space.py times the backbones; the planner times epochs)."""
    cap = GPU_RESOLUTION_CAP if cuda else next(px for start, px in CPU_RESOLUTION_CAPS if budget >= start)
    if not grow:
        return SearchShape(epochs, max_trials, max_backbones, cap if cuda else 224, "fixed by the search space")
    k = max(1.0, budget / REFERENCE_BUDGET)
    grown = SearchShape(
        epochs=max(epochs, min(MAX_EPOCHS, round(epochs * math.sqrt(k)))),
        max_trials=round(max_trials * k),
        max_backbones=min(MAX_BACKBONES, max_backbones + int(math.log2(k))),
        max_resolution=cap,
        why="",
    )
    scale = (f"= {budget / REFERENCE_BUDGET:.1f}x the reference {REFERENCE_BUDGET:.0f} s" if k > 1 else
             f"(within the reference {REFERENCE_BUDGET:.0f} s: the space's own values)")  # fmt: skip
    why = (f"budget {budget:.0f} s {scale}: up to {grown.epochs} epochs per trial, {grown.max_trials} trials, "
           f"{grown.max_backbones} backbones, {grown.max_resolution} px")  # fmt: skip
    return SearchShape(grown.epochs, grown.max_trials, grown.max_backbones, grown.max_resolution, why)


def trial_epochs(max_epochs: int, judge: int, left: float, reserve_seconds: float, epoch_seconds: float) -> int:
    """Epochs to give one trial: at most ``max_epochs``, at most a third of the time left (so several
    configurations are tried), never fewer than the ``judge`` epochs it needs to be compared."""
    affordable = int(max(0.0, left - reserve_seconds) / 3 / max(epoch_seconds, 1e-9))
    return max(judge, min(max_epochs, affordable))


def leftover_epochs(left: float, reserve_seconds: float, epoch_seconds: float) -> int:
    """Epochs (10% margin) that fit in what is left after the reserve: what the best configuration may
    train for when the search ends early."""
    return max(0, int(max(0.0, left - reserve_seconds) / max(epoch_seconds * 1.1, 1e-9)))


def unused_too_much(left: float, budget: float, reserve_seconds: float) -> bool:
    """Whether ending the search now would leave more than ``UNUSED_SHARE`` of the budget unused."""
    return left - reserve_seconds > UNUSED_SHARE * budget
