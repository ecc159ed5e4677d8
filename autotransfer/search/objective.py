"""What the search maximises and how it treats the classes, decided once per run from the training
labels: the metric (``auto``: balanced accuracy from a 3:1 imbalance, else accuracy; the reason in
words), whether class weighting is a searched choice (imbalanced data: probes try unweighted and
balanced heads, fine-tuning trials sample it), and whether probes are chosen by k-fold CV (small data).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from autotransfer.errors import written_by_another_version
from autotransfer.transfer.augment import canonical_orientation
from autotransfer.transfer.metrics import IMBALANCED_AT, check_metric, choose_metric, imbalance

SMALL_PER_CLASS = 50  # training images in the smallest class below this: choose probes by CV
CV_FOLDS = 3  # each fold refits every (head, C, class weight): 3 keeps the cheap stage cheap


@dataclass(frozen=True, kw_only=True)
class Objective:
    """What the run maximises and how it treats the classes (stored once per study as JSON).

    ``metric`` and ``reason`` (in words); ``class_weights``: the weightings probes try and trials sample
    (``("none", "balanced")`` on imbalanced data); ``cv_folds``: 0, or the folds probes are chosen by;
    ``imbalance``: largest over smallest class; ``rotate`` (degrees) and ``orientation`` (why)."""

    metric: str
    reason: str
    class_weights: tuple[str, ...] = ("none",)
    cv_folds: int = 0
    imbalance: float = 1.0
    rotate: float = 0.0
    orientation: str = ""

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "class_weights": list(self.class_weights)}

    @classmethod
    def from_json(cls, document: dict) -> Objective:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known)
        missing = sorted({"metric", "reason"} - set(document))
        if unknown or missing:
            raise written_by_another_version("run's objective", unknown + [f"{m} missing" for m in missing])
        return cls(**{**document, "class_weights": tuple(document.get("class_weights", ("none",)))})


def decide_objective(
    requested: str, train_labels: np.ndarray, classes: list[str], pooled_labels: np.ndarray | None = None
) -> Objective:
    """The objective for the training labels (class indices into ``classes``); ``pooled_labels``
    (train+val) are what CV would split: every class needs 2 there, and what the class balance is measured
    on (the images `profile` counts: all but the test split), so both commands quote the same imbalance.
    Raises AutoTransferError for a metric these classes cannot use."""
    pooled_labels = pooled_labels if pooled_labels is not None else train_labels
    pooled = np.bincount(pooled_labels, minlength=len(classes))
    names = np.asarray(classes)
    metric, reason = choose_metric(requested, names[pooled_labels])
    check_metric(metric, len(classes))
    ratio, _, _ = imbalance(names[pooled_labels])
    _, _, smallest = imbalance(names[train_labels])
    weights = ("none", "balanced") if ratio >= IMBALANCED_AT else ("none",)
    cv_folds = CV_FOLDS if smallest[1] < SMALL_PER_CLASS and pooled.min() >= 2 else 0
    if cv_folds:
        reason += f"; probes chosen by {CV_FOLDS}-fold cross-validation (smallest class {smallest[1]} training images)"
    if len(weights) > 1:
        reason += "; class weighting searched"
    return Objective(metric=metric, reason=reason, class_weights=weights, cv_folds=cv_folds,
                     imbalance=round(float(ratio), 2))  # fmt: skip


ROTATION_DEGREES = 30.0  # fastai's aug_transforms(max_rotate=10) is for upright photos; top-down images take more


def decide_rotation(images: np.ndarray) -> dict:
    """``{"rotate", "orientation"}``: degrees of random rotation (with vertical flips) the crop augmentations
    add, and why. Nothing in the profile measures orientation, so a cheap check on a sample decides
    (transfer/augment.py's ``canonical_orientation``: does the mean image change when turned by 90 degrees?)."""
    if canonical_orientation(images):
        return {"rotate": 0.0, "orientation": "the images' mean changes when turned: upright, no rotations"}
    return {"rotate": ROTATION_DEGREES, "orientation": "no canonical orientation: rotations and vertical flips on"}
