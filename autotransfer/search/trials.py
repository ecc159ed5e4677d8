"""One fine-tuning trial, the same for the Optuna and the Ray Tune backends.

``suggest`` is a define-by-run space (an Optuna trial in, parameters out: Ray's OptunaSearch takes the
same function), ``config_for`` turns parameters into a FinetuneConfig, and ``estimate_epoch_seconds``
is the cost model the time budget plans with before a trial has been measured.
"""

from __future__ import annotations

from autotransfer.search.space import Range, SearchSpace
from autotransfer.transfer.finetune import FinetuneConfig

# The recipe's strategies as fine-tuning settings: which depth groups train, and how fast.
_STRATEGY = {"lp_ft": "lp_ft", "finetune_top": "finetune", "finetune_all": "finetune", "train_all": "train_all"}


def candidate_key(backbone: str, resolution: int, tap: str) -> str:
    return f"{backbone}@{resolution}/{tap}"


def parse_candidate(key: str) -> tuple[str, int, str]:
    backbone, rest = key.rsplit("@", 1)
    resolution, tap = rest.split("/", 1)
    return backbone, int(resolution), tap


def _suggest_range(trial, name: str, value: Range) -> float:
    if value.low == value.high:  # a fixed value: nothing to sample
        return value.low
    return trial.suggest_float(name, value.low, value.high, log=value.log)


def suggest(trial, space: SearchSpace, candidates: list[str], ranges: dict[str, Range]) -> dict:
    """Sample one fine-tuning configuration (conditional: freeze depth only where it applies)."""
    params = {
        "candidate": trial.suggest_categorical("candidate", candidates),
        "strategy": trial.suggest_categorical("strategy", list(space.finetune_strategies)),
        "head_lr": _suggest_range(trial, "head_lr", ranges["head_lr"]),
        "weight_decay": _suggest_range(trial, "weight_decay", ranges["weight_decay"]),
        "label_smoothing": trial.suggest_categorical("label_smoothing", list(space.label_smoothing)),
        "augmentation": trial.suggest_categorical("augmentation", list(space.augmentation)),
    }
    if params["strategy"] in ("finetune_top", "lp_ft"):
        params["freeze_fraction"] = _suggest_range(trial, "freeze_fraction", ranges["freeze_fraction"])
    if params["strategy"] != "train_all":
        params["backbone_lr_ratio"] = _suggest_range(trial, "backbone_lr_ratio", ranges["backbone_lr_ratio"])
        params["layer_decay"] = _suggest_range(trial, "layer_decay", ranges["layer_decay"])
    return params


def config_for(params: dict, space: SearchSpace, n_groups: int, seed: int, epochs: int | None = None) -> FinetuneConfig:
    """The FinetuneConfig a trial's parameters describe, for a backbone of ``n_groups`` depth groups."""
    strategy = params["strategy"]
    frozen = 0
    if strategy in ("finetune_top", "lp_ft"):
        frozen = min(n_groups - 1, max(1, round(params["freeze_fraction"] * n_groups)))
    augmentation = params.get("augmentation", "none")
    return FinetuneConfig(
        strategy=_STRATEGY[strategy],
        tap=parse_candidate(params["candidate"])[2],
        freeze_groups=frozen,
        head_lr=params["head_lr"],
        backbone_lr_ratio=params.get("backbone_lr_ratio", 1.0),
        layer_decay=params.get("layer_decay", 1.0),
        weight_decay=params["weight_decay"],
        label_smoothing=params.get("label_smoothing", 0.1),
        flip=augmentation in ("flip", "randaugment"),
        randaugment="rand-m7-mstd0.5" if augmentation == "randaugment" else None,
        epochs=epochs or space.epochs,
        warmup_epochs=1 if (epochs or space.epochs) > 2 else 0,
        batch_size=space.batch_size,
        patience=max(2, space.epochs // 3),
        seed=seed,
    )


def describe(params: dict, n_groups: int | None = None) -> str:
    """A trial's configuration in words, for the summary."""
    backbone, resolution, tap = parse_candidate(params["candidate"])
    words = [f"{params['strategy']} of {backbone} at {resolution}px, tap `{tap}`"]
    if "freeze_fraction" in params and n_groups:
        frozen = min(n_groups - 1, max(1, round(params["freeze_fraction"] * n_groups)))
        words.append(f"freeze groups 0–{frozen - 1} of {n_groups}")
    words.append(f"head LR {params['head_lr']:.1e}")
    if "backbone_lr_ratio" in params:
        words.append(f"backbone LR ×{params['backbone_lr_ratio']:.3g}, layer decay {params['layer_decay']:.2f}")
    if params.get("augmentation", "none") != "none":
        words.append(f"augmentation {params['augmentation']}")
    return ", ".join(words)


def estimate_epoch_seconds(extract_seconds: float, n_images: int, n_train: int, params: dict) -> float:
    """Cost of one epoch before any was measured: a training step costs about 3 forwards, over the
    train split, plus the validation forward; a frozen prefix makes it cheaper, augmentation dearer."""
    per_image = extract_seconds / max(n_images, 1)
    share = 1.0 - 0.6 * params.get("freeze_fraction", 0.0) if params["strategy"] != "train_all" else 1.0
    augment = 1.3 if params.get("augmentation", "none") == "randaugment" else 1.0
    return per_image * (3.0 * n_train * share * augment + (n_images - n_train)) + 0.5
