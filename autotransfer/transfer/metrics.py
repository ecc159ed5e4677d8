"""Evaluation metrics, chosen once per dataset: what "better" means for every probe, trial and report.

Names follow AutoGluon's (``eval_metric``): ``accuracy``, ``balanced_accuracy``, ``f1_macro``,
``roc_auc`` (binary only) and ``log_loss``. Every score is "higher is better": ``log_loss`` is
reported as the *negative* log loss, as AutoGluon and scikit-learn's scorers do, so one ``max``
picks the best trial whatever the metric.

``auto`` is accuracy unless the training classes are imbalanced (largest/smallest >= 3:1), where it
is balanced accuracy (the mean per-class recall): with 14:1 classes a model that always answers the
majority class gets 93% accuracy and 50% balanced accuracy (two classes), and only the second number
says it has learned nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from autotransfer.errors import AutoTransferError
from autotransfer.metric_names import LABEL_METRICS, METRICS, PROBABILITY_METRICS  # noqa: F401 (read from here too)

IMBALANCED_AT = 3.0  # largest/smallest class count at or above this: "imbalanced" (auto -> balanced_accuracy)


def _counts(labels: Sequence) -> Counter:
    counts = Counter(np.asarray(labels).tolist())
    if not counts:
        raise AutoTransferError("There are no labels to choose a metric on.")
    return counts


def imbalance(labels: Sequence) -> tuple[float, tuple, tuple]:
    """``(ratio, (largest class, count), (smallest class, count))`` of the label counts."""
    counts = _counts(labels)
    largest = max(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
    smallest = min(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
    return largest[1] / smallest[1], largest, smallest


def check_metric(name: str, n_classes: int | None = None) -> str:
    """``name`` if it is a known metric usable with ``n_classes`` classes; AutoTransferError otherwise."""
    if name not in METRICS:
        raise AutoTransferError(
            f"Unknown metric {name!r}.",
            where="{option}",
            fix=f"use auto or one of {', '.join(METRICS)}.",
            option="metric",
        )
    if name == "roc_auc" and n_classes is not None and n_classes != 2:
        raise AutoTransferError(
            f"roc_auc is defined here for 2 classes only; this dataset has {n_classes}.",
            where="{option}",
            fix="use balanced_accuracy, f1_macro or log_loss for more than 2 classes (or auto).",
            option="metric",
        )
    return name


def choose_metric(requested: str, train_labels: Sequence) -> tuple[str, str]:
    """The metric to optimise and a sentence saying why.

    ``requested`` is ``auto`` or one of METRICS. ``auto`` gives balanced_accuracy when the training
    classes are imbalanced (largest/smallest >= 3:1), accuracy otherwise. ``train_labels`` are the
    labels of the images the model is trained on (class names or indices).
    """
    n_classes = len(_counts(train_labels))
    ratio, (big, n_big), (small, n_small) = imbalance(train_labels)
    shape = f"largest {big!r} {n_big}, smallest {small!r} {n_small}"
    if requested != "auto":
        check_metric(requested, n_classes)
        return requested, f"{requested.replace('_', ' ')}: asked for (classes {ratio:.0f}:1, {shape})"
    if ratio >= IMBALANCED_AT:
        return "balanced_accuracy", f"classes imbalanced {ratio:.0f}:1 ({shape}): balanced accuracy"
    return "accuracy", f"classes balanced within {ratio:.1f}:1 ({shape}): accuracy"


def score(name: str, y_true: Sequence[int], proba: np.ndarray, n_classes: int | None = None) -> float:
    """The metric ``name`` (higher is better) of class probabilities ``proba`` (n, n_classes) for labels 0..K-1.

    ``log_loss`` returns the negative log loss. Labels must be integer class indices into the
    columns of ``proba``; ``n_classes`` defaults to ``proba.shape[1]``.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    n_classes = n_classes or proba.shape[1]
    check_metric(name, n_classes)
    if len(y_true) == 0:
        raise AutoTransferError(f"Cannot compute {name} on an empty set.")
    y_pred = proba.argmax(1)
    if name == "accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    if name == "balanced_accuracy":
        return float(_balanced_accuracy(y_true, y_pred))
    if name == "f1_macro":
        labels = np.unique(y_true)  # macro over the classes present, like balanced accuracy
        return float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    if name == "roc_auc":
        if len(np.unique(y_true)) < 2:
            raise AutoTransferError("roc_auc needs both classes among the labels it is computed on.")
        return float(skm.roc_auc_score(y_true, proba[:, 1]))
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(1, keepdims=True)
    return -float(skm.log_loss(y_true, clipped, labels=np.arange(n_classes)))


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (sklearn's, without its warning on absent ones)."""
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in np.unique(y_true)]))


def score_predictions(name: str, y_true: Sequence, y_pred: Sequence) -> float:
    """A label-only metric (accuracy, balanced_accuracy, f1_macro) of hard predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    check_metric(name)
    if name == "accuracy":
        return float((y_true == y_pred).mean())
    if name == "balanced_accuracy":
        return _balanced_accuracy(y_true, y_pred)
    if name == "f1_macro":
        return float(skm.f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))
    raise AutoTransferError(f"{name} needs class probabilities, not hard predictions.")


def classification_summary(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1 and per-class precision/recall/support (JSON-ready).

    ``y_true``/``y_pred`` are indices into ``classes``. Per-class entries cover every class, also
    those absent from ``y_true`` (support 0, recall 0).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.arange(len(classes))
    precision, recall, _, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred) if len(y_true) else float("nan"),
        "f1_macro": score_predictions("f1_macro", y_true, y_pred) if len(y_true) else float("nan"),
        "majority_rate": majority_rate(y_true) if len(y_true) else float("nan"),
        "per_class": {
            str(name): {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(classes, precision, recall, support)
        },
    }


def majority_rate(labels: Sequence) -> float:
    """Chance rate of a constant guess: the share of the most frequent class."""
    counts = _counts(labels)
    return max(counts.values()) / sum(counts.values())


def chance_rate(name: str, labels: Sequence) -> float:
    """What a constant majority-class guess scores on ``labels`` under metric ``name`` (label-only metrics).

    accuracy: the majority share; balanced_accuracy: 1/K; f1_macro: the majority class's F1 / K.
    """
    counts = _counts(labels)
    if name == "accuracy":
        return majority_rate(labels)
    if name == "balanced_accuracy":
        return 1.0 / len(counts)
    if name == "f1_macro":
        share = majority_rate(labels)
        return (2 * share / (1 + share)) / len(counts)
    if name == "roc_auc":
        return 0.5
    raise AutoTransferError(f"No chance rate for {name}.")


def class_weights(labels: Sequence[int], n_classes: int) -> np.ndarray:
    """scikit-learn's balanced class weights ``n / (K * count)`` for integer labels 0..n_classes-1.

    K is the number of classes present; a class absent from ``labels`` gets weight 0 (it has no loss
    to weigh). Used by the probe heads and by fine-tuning's weighted cross-entropy.
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = np.zeros(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights
