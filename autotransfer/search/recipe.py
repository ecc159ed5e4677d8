"""The first fine-tuning trials: the recipe of the field adapted to the data (``recipe_params``), then the
quadrant's strategies with the prior's values (``seed_trials``), queued into an empty ``finetune`` study;
and the LR ranges narrowed towards the prior (``prior_ranges``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import optuna

from autotransfer.models.zoo import create_backbone
from autotransfer.search.candidates import Candidate
from autotransfer.search.records import trial_attrs
from autotransfer.search.space import Range, SearchSpace
from autotransfer.search.trials import frozen_groups
from autotransfer.transfer.profile import Prior
from autotransfer.transfer.strategies import FINETUNE_STRATEGIES, STRATEGIES

if TYPE_CHECKING:
    from autotransfer.search.finetune_stage import FinetunePlan


def prior_ranges(space: SearchSpace, prior: Prior) -> dict[str, Range]:
    """The space's ranges, narrowed towards the profile's prior (within a factor of 10 of it)."""
    ranges = dict(space.ranges)
    for key, seeds in (("head_lr", prior.head_lr), ("backbone_lr_ratio", prior.backbone_lr_ratio)):
        if seeds is not None:
            full = ranges[key]
            low, high = max(full.low, min(seeds) / 10), min(full.high, max(seeds) * 10)
            if low < high:
                ranges[key] = Range(low, high, full.log)
    return ranges


RECIPE_HEAD_LR = 1e-3  # fastai's fine_tune: base_lr 2e-3, halved for the unfrozen epochs; timm's AdamW fine-tunes
RECIPE_BACKBONE_RATIO = 0.1  # the top pretrained group at a tenth of the head's LR (a small pretrained-layer LR)
RECIPE_LOWEST_RATIO = 0.01  # the lowest trained group at a hundredth: fastai's slice(lr / 100, lr)
RECIPE_WEIGHT_DECAY = 0.05  # timm's AdamW recipes
RECIPE_AUGMENTATION = "crop"  # flips + random-resized crops (+ rotations without a canonical orientation)


def recipe_strategy(space: SearchSpace, prior: Prior) -> str:
    """The recipe's strategy: LP-FT, except where the quadrant's first fine-tuning strategy trains every
    layer from the pretrained init (``train_all``, large-different data): there a small pretrained-layer LR
    keeps the network near ImageNet features the data does not share (on the long-cpu glyphs, LP-FT at 0.1x
    reached 0.65 on validation where ``train_all`` reached 0.87 in fewer epochs)."""
    quadrant_first = next((s for s in prior.strategies if s in FINETUNE_STRATEGIES), None)
    for name in ("train_all", "lp_ft") if quadrant_first == "train_all" else ("lp_ft",):
        if name in space.finetune_strategies:
            return name
    return space.finetune_strategies[0]


def recipe_params(
    first: Candidate,
    space: SearchSpace,
    ranges: dict[str, Range],
    n_groups: int,
    imbalanced: bool,
    prior: Prior | None = None,
) -> dict:
    """The first fine-tuning trial: a known-good recipe of the field, adapted to the data.

    - LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
      Out-of-Distribution"): the head starts from the linear probe, then the network is fine-tuned from it;
      only the lowest depth groups the space allows (``freeze_fraction``'s low end) stay frozen;
    - discriminative learning rates (fastai's ``fine_tune``: ``slice(base_lr / 100, base_lr)``): the head at
      ``RECIPE_HEAD_LR``, the top pretrained group at a tenth of it, geometrically down to a hundredth;
    - AdamW with weight decay 0.05, label smoothing 0.1, one epoch of warm-up and a cosine schedule
      (timm's train recipes; ``config_for``);
    - augmentation on: flips and random-resized crops (timm's and fastai's default train transforms),
      rotations where the images have no canonical orientation (the run's objective, objective.py);
    - balanced class weights (weighted cross-entropy) when the classes are imbalanced.
    On large-different data (``recipe_strategy``) the strategy is ``train_all`` instead: the same recipe with
    one LR for every layer, the prior's head LR (the quadrant's, docs/profiler.md).
    Each value is clipped into the space's ranges; values the space does not offer fall back to its first.
    """

    def clip(key: str, value: float) -> float:
        return float(min(max(value, ranges[key].low), ranges[key].high))

    prior = prior or Prior()
    strategy = recipe_strategy(space, prior)
    head_lr = RECIPE_HEAD_LR
    if strategy == "train_all" and prior.head_lr is not None:
        head_lr = float(np.sqrt(np.prod(prior.head_lr)))
    params = {
        "candidate": first.key,
        "strategy": strategy,
        "head_lr": clip("head_lr", head_lr),
        "weight_decay": clip("weight_decay", RECIPE_WEIGHT_DECAY),
        "label_smoothing": 0.1 if 0.1 in space.label_smoothing else space.label_smoothing[-1],
        "augmentation": RECIPE_AUGMENTATION if RECIPE_AUGMENTATION in space.augmentation else space.augmentation[-1],
    }
    if STRATEGIES[strategy].freezes == "lower":
        params["freeze_fraction"] = clip("freeze_fraction", ranges["freeze_fraction"].low)
    if STRATEGIES[strategy].tunes_backbone_lr:
        trained = max(1, n_groups - frozen_groups(params, n_groups))
        decay = (RECIPE_LOWEST_RATIO / RECIPE_BACKBONE_RATIO) ** (1 / max(trained - 1, 1))
        params["backbone_lr_ratio"] = clip("backbone_lr_ratio", RECIPE_BACKBONE_RATIO)
        params["layer_decay"] = clip("layer_decay", decay)
    if imbalanced:
        params["class_weight"] = "balanced"
    return params


def seed_trials(study: optuna.Study, space: SearchSpace, plan: FinetunePlan) -> None:
    """The recipe first (``recipe_params``), then the quadrant's recommended fine-tuning strategies on the
    best candidate, with the prior's freeze depth and LRs and the recipe's augmentation: the search explores
    around them.

    Only into an empty study: a resumed run, or a worker that joins one sharing the storage, would
    otherwise queue seeds again (for candidates it may have ranked on fewer probes) that nobody runs.
    """
    if study.trials:
        return
    prior, ranges, first = plan.prior, plan.ranges, plan.candidates[0]
    n_groups = len(create_backbone(first.backbone, device="meta", pretrained=False).depth_groups)
    imbalanced = len(plan.objective.class_weights) > 1
    recipe = recipe_params(first, space, ranges, n_groups, imbalanced, prior)
    why = "recipe (LP-FT, augmentation, discriminative LRs)"
    if recipe["strategy"] == "train_all":
        why = "recipe (train_all from the pretrained init for large-different data, augmentation)"
    study.enqueue_trial(recipe, user_attrs=trial_attrs(seeded_by=why))
    wanted = [s for s in prior.strategies if s in FINETUNE_STRATEGIES and s != recipe["strategy"]]
    wanted += [s for s in space.finetune_strategies if s not in wanted and s != recipe["strategy"]]

    def clip(key: str, value: float) -> float:
        return float(min(max(value, ranges[key].low), ranges[key].high))

    for name in [s for s in wanted if s in space.finetune_strategies][:2]:
        strategy = STRATEGIES[name]
        params = {
            "candidate": first.key,
            "strategy": name,
            "head_lr": clip("head_lr", float(np.sqrt(np.prod(prior.head_lr or (1e-3, 1e-2))))),
            "weight_decay": clip("weight_decay", 0.05),
            "label_smoothing": space.label_smoothing[-1],
            "augmentation": recipe["augmentation"],
        }
        if strategy.freezes == "lower":
            partial = [g for g in prior.freeze_groups if 0 < g < n_groups]
            params["freeze_fraction"] = clip("freeze_fraction", max(partial, default=n_groups // 2) / n_groups)
        if strategy.tunes_backbone_lr:
            ratio = float(np.sqrt(np.prod(prior.backbone_lr_ratio or (0.01, 0.1))))
            params["backbone_lr_ratio"] = clip("backbone_lr_ratio", ratio)
            params["layer_decay"] = clip("layer_decay", float(np.mean(prior.layer_decay or (0.8, 0.9))))
        if imbalanced:  # the seeds weight the classes
            params["class_weight"] = "balanced"
        study.enqueue_trial(params, user_attrs=trial_attrs(seeded_by="profile prior"), skip_if_exists=True)
