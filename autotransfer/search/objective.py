"""What the search maximises and how it treats the classes, decided once per run from the training
labels: the metric (``auto``: balanced accuracy from a 3:1 imbalance, else accuracy; the reason in
words), whether class weighting is a searched choice (imbalanced data: probes try unweighted and
balanced heads, fine-tuning trials sample it), and whether probes are chosen by k-fold CV (small data).
"""

from __future__ import annotations

import numpy as np

from autotransfer.transfer.augment import canonical_orientation
from autotransfer.transfer.metrics import IMBALANCED_AT, check_metric, choose_metric, imbalance

SMALL_PER_CLASS = 50  # training images in the smallest class below this: choose probes by CV
CV_FOLDS = 3  # each fold refits every (head, C, class weight): 3 keeps the cheap stage cheap


def decide_objective(
    requested: str, train_labels: np.ndarray, classes: list[str], pooled_labels: np.ndarray | None = None
) -> dict:
    """``{"metric", "reason", "class_weights", "cv_folds", "imbalance"}`` (JSON-ready) for the training
    labels (class indices into ``classes``); ``pooled_labels`` (train+val) are what CV would split: every
    class needs 2 there. Raises AutoTransferError for a metric these classes cannot use."""
    pooled = np.bincount(pooled_labels if pooled_labels is not None else train_labels, minlength=len(classes))
    train_labels = np.asarray(classes)[train_labels]
    metric, reason = choose_metric(requested, train_labels)
    check_metric(metric, len(classes))
    ratio, _, smallest = imbalance(train_labels)
    weights = ["none", "balanced"] if ratio >= IMBALANCED_AT else ["none"]
    cv_folds = CV_FOLDS if smallest[1] < SMALL_PER_CLASS and pooled.min() >= 2 else 0
    if cv_folds:
        reason += f"; probes chosen by {CV_FOLDS}-fold cross-validation (smallest class {smallest[1]} training images)"
    if len(weights) > 1:
        reason += "; class weighting searched"
    return {"metric": metric, "reason": reason, "class_weights": weights, "cv_folds": cv_folds,
            "imbalance": round(float(ratio), 2)}  # fmt: skip


ROTATION_DEGREES = 30.0  # fastai's aug_transforms(max_rotate=10) is for upright photos; top-down images take more


def decide_rotation(images: np.ndarray) -> dict:
    """``{"rotate", "orientation"}``: degrees of random rotation (with vertical flips) the crop augmentations
    add, and why. Nothing in the profile measures orientation, so a cheap check on a sample decides
    (transfer/augment.py's ``canonical_orientation``: does the mean image change when turned by 90 degrees?)."""
    if canonical_orientation(images):
        return {"rotate": 0.0, "orientation": "the images' mean changes when turned: upright, no rotations"}
    return {"rotate": ROTATION_DEGREES, "orientation": "no canonical orientation: rotations and vertical flips on"}
