"""The run's objective: the metric (auto by imbalance), class weighting as a searched choice, CV on small data."""

import json

import numpy as np
import optuna
import pytest
from conftest import make_imagefolder

from autotransfer import AutoTransfer, AutoTransferError
from autotransfer.search.objective import decide_objective


def test_auto_metric_follows_the_class_balance():
    balanced = decide_objective("auto", np.repeat([0, 1, 2], 60), ["a", "b", "c"])
    assert balanced.metric == "accuracy" and balanced.class_weights == ("none",) and not balanced.cv_folds
    skewed = decide_objective("auto", np.repeat([0, 1, 2], [140, 60, 10]), ["ok", "scratch", "crack"])
    assert skewed.metric == "balanced_accuracy" and skewed.class_weights == ("none", "balanced")
    assert "14:1" in skewed.reason and "'crack' 10" in skewed.reason  # names, not indices
    assert skewed.cv_folds == 3  # the smallest class has fewer than 50 training images
    asked = decide_objective("f1_macro", np.repeat([0, 1], 60), ["a", "b"])
    assert asked.metric == "f1_macro" and "asked for" in asked.reason


def test_the_class_balance_is_measured_on_the_images_profile_counts():
    """Issue 26's fourth trial: `profile` quoted the imbalance of train+val (all but the test split), `fit` that
    of the training split: two ratios for one folder, on either side of the 3:1 that switches the metric."""
    train = np.repeat([0, 1], [29, 10])  # 2.9:1 in the training split
    pooled = np.repeat([0, 1], [36, 12])  # 3:1 over train+val, as `profile` counts them
    objective = decide_objective("auto", train, ["big", "small"], pooled_labels=pooled)
    assert objective.metric == "balanced_accuracy" and objective.imbalance == 3.0
    assert "imbalanced 3:1 (largest 'big' 36, smallest 'small' 12)" in objective.reason
    assert objective.class_weights == ("none", "balanced")
    assert "smallest class 10 training images" in objective.reason  # CV is decided on the training split


def test_roc_auc_needs_two_classes():
    with pytest.raises(AutoTransferError, match="2 classes"):
        decide_objective("roc_auc", np.repeat([0, 1, 2], 60), ["a", "b", "c"])
    assert decide_objective("roc_auc", np.repeat([0, 1], 60), ["a", "b"]).metric == "roc_auc"


def test_fit_on_imbalanced_data_maximises_balanced_accuracy_and_reports_per_class(fit_env, tmp_path):
    data = make_imagefolder(tmp_path / "skewed", {"ok": 40, "scratch": 8, "crack": 6})
    estimator = AutoTransfer(
        time_budget="6m", search_space=fit_env["space"], out=tmp_path / "run", profile_backbone="test_efficientnet",
        verbose=0,
    )  # fmt: skip
    estimator.fit(data)
    metrics = estimator.pipeline_.spec["metrics"]
    assert metrics["metric"] == "balanced_accuracy" and "imbalanced" in metrics["metric_reason"]
    assert set(metrics["val"]["per_class"]) == {"crack", "ok", "scratch"}
    assert {"accuracy", "balanced_accuracy", "f1_macro"} <= set(metrics["val"])
    storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    probes = optuna.load_study(study_name="probes", storage=storage).trials
    assert all(t.user_attrs["metric"] == "balanced_accuracy" for t in probes if t.value is not None)
    finetune = optuna.load_study(study_name="finetune", storage=storage).trials
    assert all(t.params.get("class_weight") == "balanced" for t in finetune if "seeded_by" in t.user_attrs)
    predictions = (tmp_path / "run" / "predictions-val.csv").read_text().splitlines()
    assert predictions[0] == "path,label,predicted,confidence" and len(predictions) > 3
    identity = json.loads((tmp_path / "run" / "run.json").read_text())
    assert identity["metric"] == "auto"


def test_no_cross_validation_when_a_class_has_a_single_image():
    labels = np.repeat([0, 1, 2], [10, 10, 1])
    assert decide_objective("auto", labels, ["a", "b", "c"], pooled_labels=labels).cv_folds == 0
    pooled = np.repeat([0, 1, 2], [12, 12, 2])
    assert decide_objective("auto", labels, ["a", "b", "c"], pooled_labels=pooled).cv_folds == 3
