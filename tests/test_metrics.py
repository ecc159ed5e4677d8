"""Metric names, the auto choice, scores (higher is better), the classification summary, chance rates."""

import numpy as np
import pytest
from sklearn import metrics as skm

from autotransfer.errors import AutoTransferError
from autotransfer.transfer.metrics import (
    METRICS,
    chance_rate,
    choose_metric,
    classification_summary,
    majority_rate,
    score,
)


def _labels(counts: dict[str, int]) -> list[str]:
    return [name for name, n in counts.items() for _ in range(n)]


def test_auto_picks_balanced_accuracy_for_imbalanced_classes_and_says_why():
    name, reason = choose_metric("auto", _labels({"ok": 700, "scratch": 120, "crack": 50}))
    assert name == "balanced_accuracy"
    assert reason == "classes imbalanced 14:1 (largest 'ok' 700, smallest 'crack' 50): balanced accuracy"


def test_auto_picks_accuracy_below_three_to_one():
    name, reason = choose_metric("auto", _labels({"a": 59, "b": 20}))  # 2.95:1
    assert name == "accuracy" and "balanced within" in reason
    assert choose_metric("auto", _labels({"a": 60, "b": 20}))[0] == "balanced_accuracy"  # exactly 3:1
    assert choose_metric("auto", np.array([0, 1, 2] * 10))[0] == "accuracy"


def test_requested_metric_is_kept_and_checked():
    assert choose_metric("f1_macro", [0, 1, 1])[0] == "f1_macro"
    with pytest.raises(AutoTransferError, match="2 classes only; this dataset has 3"):
        choose_metric("roc_auc", [0, 1, 2])
    with pytest.raises(AutoTransferError, match="Unknown metric 'auc'"):
        choose_metric("auc", [0, 1])
    assert choose_metric("roc_auc", [0, 1, 1])[0] == "roc_auc"


def test_scores_match_sklearn_and_higher_is_better():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = proba.argmax(1)
    assert score("accuracy", y, proba) == pytest.approx(skm.accuracy_score(y, pred))
    assert score("balanced_accuracy", y, proba) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert score("f1_macro", y, proba) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert score("log_loss", y, proba) == pytest.approx(-skm.log_loss(y, proba))
    perfect = np.eye(4)[y] * 0.97 + 0.01
    for name in ("accuracy", "balanced_accuracy", "f1_macro", "log_loss"):
        assert score(name, y, perfect) >= score(name, y, proba)
    with pytest.raises(AutoTransferError, match="2 classes only"):
        score("roc_auc", y, proba)


def test_roc_auc_on_two_classes():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    assert score("roc_auc", y, proba) == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert set(METRICS) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss"}


def test_majority_guess_looks_good_on_accuracy_only():
    y = np.array([0] * 90 + [1] * 5 + [2] * 5)
    always_zero = np.tile([1.0, 0.0, 0.0], (100, 1))
    assert score("accuracy", y, always_zero) == pytest.approx(0.9) == majority_rate(y)
    assert score("balanced_accuracy", y, always_zero) == pytest.approx(1 / 3) == chance_rate("balanced_accuracy", y)
    assert score("f1_macro", y, always_zero) == pytest.approx(chance_rate("f1_macro", y))


def test_classification_summary_per_class():
    classes = ["cat", "dog", "eel"]
    y_true = [0, 0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 0]
    summary = classification_summary(y_true, y_pred, classes)
    assert summary["accuracy"] == pytest.approx(4 / 7)
    assert summary["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    assert summary["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert summary["per_class"]["cat"] == {"precision": 0.6, "recall": 0.75, "support": 4}
    assert summary["per_class"]["eel"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert summary["majority_rate"] == pytest.approx(4 / 7)


def test_class_weights_are_sklearns_balanced_weights():
    from sklearn.utils.class_weight import compute_class_weight

    from autotransfer.transfer.metrics import class_weights

    y = np.array([0] * 30 + [2] * 6)
    weights = class_weights(y, 3)
    assert weights[1] == 0.0
    np.testing.assert_allclose(weights[[0, 2]], compute_class_weight("balanced", classes=np.array([0, 2]), y=y))
    assert (weights[y] * 1.0).sum() == pytest.approx(len(y))  # every class carries the same total weight


def test_finetuning_takes_balanced_class_weights(tmp_path):
    """Weighted cross-entropy: same seed, same data, a different training loss; a bad value is refused."""
    import torch
    from conftest import make_imagefolder

    from autotransfer.data.datasets import load_dataset
    from autotransfer.models.zoo import create_backbone
    from autotransfer.transfer.finetune import FinetuneConfig, finetune

    data = load_dataset(make_imagefolder(tmp_path / "d", {"a": 24, "b": 6}), image_size=32, show_progress=False)
    losses = {}
    for weight in (None, "balanced"):
        torch.manual_seed(0)
        backbone = create_backbone("test_efficientnet", pretrained=False)
        config = FinetuneConfig(epochs=1, batch_size=8, bf16=False, warmup_epochs=0, class_weight=weight)
        losses[weight] = finetune(data, backbone, config).history[0].train_loss
    assert losses[None] != pytest.approx(losses["balanced"])
    with pytest.raises(AutoTransferError, match="class_weight must be"):
        FinetuneConfig(class_weight="inverse").validate(create_backbone("test_efficientnet", pretrained=False))
