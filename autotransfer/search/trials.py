"""One fine-tuning trial's parameters, the same for the Optuna and the Ray Tune backends.

``suggest`` is a define-by-run space (an Optuna trial in, parameters out: Ray's OptunaSearch takes the
same function); ``config_for`` turns parameters into a FinetuneConfig; ``describe`` says it in words.
Which parameters apply is read from the strategy table (autotransfer/transfer/strategies.py).
"""

from __future__ import annotations

from autotransfer.search.candidates import Candidate
from autotransfer.search.space import Range, SearchSpace
from autotransfer.transfer.finetune import FinetuneConfig
from autotransfer.transfer.strategies import STRATEGIES

# The searched hyper-parameters of a fine-tuning trial, in the order they are sampled.
HYPERPARAMETERS = (
    "candidate",
    "strategy",
    "head_lr",
    "weight_decay",
    "label_smoothing",
    "augmentation",
    "freeze_fraction",
    "backbone_lr_ratio",
    "layer_decay",
    "class_weight",
)
# What the pipeline records of the trial it came from: the searched values and what they resolved to.
PIPELINE_HYPERPARAMETERS = (*HYPERPARAMETERS, "head", "C", "freeze_groups", "best_epoch")


def _suggest_range(trial, name: str, value: Range) -> float:
    if value.low == value.high:  # a fixed value: nothing to sample
        return value.low
    return trial.suggest_float(name, value.low, value.high, log=value.log)


def suggest(
    trial,
    space: SearchSpace,
    candidates: list[Candidate],
    ranges: dict[str, Range],
    class_weights: tuple[str, ...] = ("none",),
) -> dict:
    """Sample one fine-tuning configuration (conditional: freeze depth only where it applies; class
    weighting only when ``class_weights`` offers a choice, i.e. on imbalanced data)."""
    params = {
        "candidate": trial.suggest_categorical("candidate", [c.key for c in candidates]),
        "strategy": trial.suggest_categorical("strategy", list(space.finetune_strategies)),
        "head_lr": _suggest_range(trial, "head_lr", ranges["head_lr"]),
        "weight_decay": _suggest_range(trial, "weight_decay", ranges["weight_decay"]),
        "label_smoothing": trial.suggest_categorical("label_smoothing", list(space.label_smoothing)),
        "augmentation": trial.suggest_categorical("augmentation", list(space.augmentation)),
    }
    strategy = STRATEGIES[params["strategy"]]
    if strategy.freezes == "lower":
        params["freeze_fraction"] = _suggest_range(trial, "freeze_fraction", ranges["freeze_fraction"])
    if strategy.tunes_backbone_lr:
        params["backbone_lr_ratio"] = _suggest_range(trial, "backbone_lr_ratio", ranges["backbone_lr_ratio"])
        params["layer_decay"] = _suggest_range(trial, "layer_decay", ranges["layer_decay"])
    if len(class_weights) > 1:
        params["class_weight"] = trial.suggest_categorical("class_weight", list(class_weights))
    return params


def frozen_groups(params: dict, n_groups: int) -> int:
    """Depth groups a trial freezes: its ``freeze_fraction`` of ``n_groups``, at least one, not all."""
    if STRATEGIES[params["strategy"]].freezes != "lower":
        return 0
    return min(n_groups - 1, max(1, round(params["freeze_fraction"] * n_groups)))


# What each ``augmentation`` choice turns on (transfer/augment.py). ``crop`` is the recipe's: flips and
# random-resized crops, as timm's train transforms and fastai's ``aug_transforms`` do by default.
CROP_SCALE = 0.35  # fastai's RandomResizedCrop(min_scale=0.35); timm's 0.08 is for training from scratch
RANDAUGMENT = "rand-m7-mstd0.5"  # timm's fine-tuning recipes use m7-m9; the milder end for short runs


def config_for(
    params: dict,
    *,
    space: SearchSpace,
    n_groups: int,
    seed: int,
    epochs: int | None = None,
    metric: str = "accuracy",
    rotate: float = 0.0,
) -> FinetuneConfig:
    """The FinetuneConfig a trial's parameters describe, for a backbone of ``n_groups`` depth groups;
    ``metric`` picks its best epoch; ``rotate``: degrees of random rotation that the crop augmentations add
    (non-zero only for images without a canonical orientation: the run's objective, search/objective.py)."""
    augmentation = params.get("augmentation", "none")
    epochs = epochs or space.epochs
    cropped = augmentation in ("crop", "randaugment")
    return FinetuneConfig(
        strategy=params["strategy"],
        tap=Candidate.parse(params["candidate"]).tap,
        freeze_groups=frozen_groups(params, n_groups),
        head_lr=params["head_lr"],
        backbone_lr_ratio=params.get("backbone_lr_ratio", 1.0),
        layer_decay=params.get("layer_decay", 1.0),
        weight_decay=params["weight_decay"],
        label_smoothing=params.get("label_smoothing", 0.1),
        flip=augmentation in ("flip", "crop", "randaugment"),
        randaugment=RANDAUGMENT if augmentation == "randaugment" else None,
        crop_scale=CROP_SCALE if cropped else None,
        rotate=rotate if cropped else 0.0,
        epochs=epochs,
        warmup_epochs=1 if epochs > 2 else 0,
        batch_size=space.batch_size,
        patience=max(2, epochs // 3),
        seed=seed,
        class_weight=None if params.get("class_weight", "none") == "none" else params["class_weight"],
        metric=metric,
    )


def describe(params: dict, n_groups: int | None = None) -> str:
    """A trial's configuration in words, for the summary."""
    candidate = Candidate.parse(params["candidate"])
    words = [f"{params['strategy']} of {candidate.backbone} at {candidate.resolution}px, tap `{candidate.tap}`"]
    if "freeze_fraction" in params and n_groups:
        words.append(f"freeze groups 0–{frozen_groups(params, n_groups) - 1} of {n_groups}")
    words.append(f"head LR {params['head_lr']:.1e}")
    if "backbone_lr_ratio" in params:
        words.append(f"backbone LR ×{params['backbone_lr_ratio']:.3g}, layer decay {params['layer_decay']:.2f}")
    if params.get("augmentation", "none") != "none":
        words.append(f"augmentation {params['augmentation']}")
    if params.get("class_weight", "none") != "none":
        words.append(f"{params['class_weight']} class weights")
    return ", ".join(words)
