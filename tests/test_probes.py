"""Linear heads chosen on validation, and zero-cost scores that can be trusted."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from autotransfer.budget import Deadline
from autotransfer.errors import AutoTransferError
from autotransfer.transfer.probes import ProbeOptions, fit_probe, make_head
from autotransfer.transfer.transferability import (
    all_scores,
    hscore,
    knn_accuracy,
    logme,
    logme_evidence,
    rank_agreement,
)


def _blobs(n=300, d=20, classes=3, separation=3.0, seed=0, weights=None):
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n, p=weights)
    centres = rng.normal(size=(classes, d)) * separation
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_probe_selects_a_head_that_generalises():
    x, y = _blobs()
    result = fit_probe(x[:200], y[:200], x[200:], y[200:], ProbeOptions(heads=("softmax", "svm", "torch")))
    assert result.val_accuracy > 0.95 and result.head in ("softmax", "svm", "torch")
    assert len(result.tried) == 12 and max(t["val_accuracy"] for t in result.tried) == result.val_accuracy


def test_a_passed_deadline_stops_the_grid_after_one_fit_and_keeps_it():
    x, y = _blobs()
    passed = Deadline(0.0, start=0.0)
    for cv_folds in (0, 3):
        result = fit_probe(
            x[:200],
            y[:200],
            x[200:],
            y[200:],
            ProbeOptions(heads=("softmax", "svm"), cv_folds=cv_folds),
            deadline=passed,
        )
        assert len(result.tried) == 1 and result.model is not None and result.C == 0.01  # the first of the grid
    assert len(fit_probe(x[:200], y[:200], x[200:], y[200:], deadline=Deadline(3600.0)).tried) == 8


def test_balanced_class_weights_help_the_minority_class():
    x, y = _blobs(n=600, separation=0.6, weights=[0.9, 0.05, 0.05], seed=3)
    x_val, y_val = _blobs(n=600, separation=0.6, weights=[0.34, 0.33, 0.33], seed=3)
    for kind in ("softmax", "torch"):
        plain = make_head(kind, 1.0).fit(x, y)
        balanced = make_head(kind, 1.0, class_weight="balanced").fit(x, y)
        minority = y_val != 0
        assert (balanced.predict(x_val[minority]) == y_val[minority]).mean() > (
            plain.predict(x_val[minority]) == y_val[minority]
        ).mean()


@pytest.mark.parametrize("shape, dual", [((2000, 1280), True), ((1500, 96), True), ((100_000, 96), False)])
def test_the_svm_uses_the_dual_solver_unless_samples_far_outnumber_features(shape, dual):
    assert make_head("svm", 1.0, shape=shape).steps[-1][1].dual is dual
    x, y = _blobs()
    assert make_head("svm", 1.0, shape=shape).fit(x, y).score(x, y) > 0.95  # the solver it picked works


def test_probe_errors_are_clear():
    x, y = _blobs(n=20)
    with pytest.raises(AutoTransferError, match="at least 2 classes"):
        fit_probe(x, np.zeros(20, int), x, y)
    with pytest.raises(AutoTransferError, match="validation split is empty"):
        fit_probe(x, y, x[:0], y[:0])
    with pytest.raises(AutoTransferError, match="Unknown head type"):
        make_head("forest", 1.0)


def test_logme_is_the_maximised_gaussian_evidence():
    """Known case: LogME must equal log N(y; 0, I/beta + F F^T/alpha) / n at its own alpha, beta,
    and no nearby (alpha, beta) may give a higher evidence."""
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 6))
    y = f @ rng.normal(size=6) + 0.3 * rng.normal(size=40)
    fit = logme_evidence(f, y)

    def exact(alpha, beta):
        cov = np.eye(40) / beta + f @ f.T / alpha
        return multivariate_normal(mean=np.zeros(40), cov=cov).logpdf(y) / 40

    assert fit.value == pytest.approx(exact(fit.alpha, fit.beta), rel=1e-6)
    for scale_a, scale_b in ((1.5, 1), (0.6, 1), (1, 1.5), (1, 0.6)):
        assert exact(fit.alpha * scale_a, fit.beta * scale_b) < fit.value
    wide = rng.normal(size=(10, 30))  # more features than samples
    target = rng.normal(size=10)
    wide_fit = logme_evidence(wide, target)
    cov = np.eye(10) / wide_fit.beta + wide @ wide.T / wide_fit.alpha
    assert wide_fit.value == pytest.approx(multivariate_normal(np.zeros(10), cov).logpdf(target) / 10, rel=1e-6)


def test_scores_prefer_informative_features():
    x, y = _blobs(n=200, d=30, separation=2.0, seed=5)
    noise = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)
    good, bad = all_scores(x, y), all_scores(noise, y)
    for name in ("logme", "knn", "hscore"):
        assert good[name] > bad[name], name
    assert knn_accuracy(x, y) > 0.9 and logme(x, y) > logme(noise, y) and hscore(x, y) > 1


def test_rank_agreement():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40])["kendall_tau"] == pytest.approx(1.0)
    assert rank_agreement([4, 3, 2, 1], [10, 20, 30, 40])["weighted_tau"] == pytest.approx(-1.0)
    assert np.isnan(rank_agreement([1, 2], [1, 2])["kendall_tau"])


def test_torch_head_takes_sample_weights_and_balanced_weights_are_per_sample():
    x, y = _blobs(n=400, separation=0.6, weights=[0.9, 0.05, 0.05], seed=3)
    from autotransfer.transfer.metrics import class_weights

    torch.manual_seed(0)
    balanced = make_head("torch", 1.0, class_weight="balanced").fit(x, y)
    torch.manual_seed(0)
    by_sample = make_head("torch", 1.0).fit(x, y, sample_weight=class_weights(y, 3)[y])
    np.testing.assert_allclose(balanced.decision_function(x), by_sample.decision_function(x), atol=1e-4)
    with pytest.raises(AutoTransferError, match="class_weight must be"):
        make_head("torch", 1.0, class_weight="inverse").fit(x, y)


def test_probe_selects_by_the_metric_it_is_given():
    """On imbalanced data the metric decides: balanced accuracy prefers balanced weights' recall."""
    x, y = _blobs(n=1200, separation=0.5, weights=[0.9, 0.05, 0.05], seed=3)
    x, y, x_val, y_val = x[:600], y[:600], x[600:], y[600:]
    by_accuracy = fit_probe(x, y, x_val, y_val, ProbeOptions(heads=("softmax",)))
    by_balanced = fit_probe(
        x, y, x_val, y_val, ProbeOptions(heads=("softmax",), metric="balanced_accuracy", class_weight="balanced")
    )
    assert by_accuracy.metric == "accuracy" and by_accuracy.val_score == by_accuracy.val_accuracy
    assert by_balanced.metric == "balanced_accuracy"
    assert by_balanced.val_score == max(t["val_score"] for t in by_balanced.tried)
    assert all(t["metric"] == "balanced_accuracy" for t in by_balanced.tried)
    recall = lambda model: np.mean([(model.predict(x_val[y_val == c]) == c).mean() for c in range(3)])  # noqa: E731
    assert by_balanced.val_score == pytest.approx(recall(by_balanced.model))
    assert recall(by_balanced.model) > recall(by_accuracy.model)
    loss = fit_probe(x, y, x_val, y_val, ProbeOptions(heads=("softmax", "svm", "torch"), metric="log_loss"))
    assert loss.val_score < 0 and loss.val_score == max(t["val_score"] for t in loss.tried)
    with pytest.raises(AutoTransferError, match="2 classes only"):
        fit_probe(x, y, x_val, y_val, ProbeOptions(metric="roc_auc"))


def test_roc_auc_probe_on_two_classes_with_every_head():
    x, y = _blobs(n=200, classes=2, separation=0.8, seed=2)
    result = fit_probe(
        x[:120], y[:120], x[120:], y[120:], ProbeOptions(heads=("softmax", "svm", "torch"), metric="roc_auc")
    )
    assert 0.5 < result.val_score <= 1.0 and len(result.tried) == 12


def test_the_refit_rows_are_drawn_once(monkeypatch):
    """fit_probe drew the refit's rows, then refit_head drew the same ones again, then (CV) a third time for
    the refit's estimate; with CV the three are the same rows: one draw."""
    from autotransfer.transfer import probes

    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    real = probes.refit_rows
    monkeypatch.setattr(probes, "refit_rows", counted)
    x, y = _blobs(n=60, d=40, separation=0.7, seed=7)
    result = fit_probe(x[:45], y[:45], x[45:], y[45:], ProbeOptions(heads=("softmax",), cv_folds=3))
    assert len(result.model.predict(x)) == 60 and result.refit_seconds > 0  # refit on train+val
    assert len(calls) == 1


def test_cross_validated_selection_on_small_data():
    x, y = _blobs(n=60, d=40, separation=0.7, seed=7)
    cv = fit_probe(x[:45], y[:45], x[45:], y[45:], ProbeOptions(heads=("softmax", "torch"), cv_folds=5))
    assert cv.cv_folds == 5 and len(cv.tried) == 8
    assert cv.val_score == max(t["val_score"] for t in cv.tried)
    first = next(t for t in cv.tried if t["val_score"] == cv.val_score)
    assert (first["head"], first["C"]) == (cv.head, cv.C)  # ties: earlier head, smaller C
    assert len(cv.model.predict(x)) == 60  # refit on train+val
    np.testing.assert_array_equal(cv.model.steps[0][1].n_samples_seen_, 60) if cv.head == "softmax" else None
    # folds are lowered to the smallest class; one image of a class is not enough
    few = fit_probe(x[:10], y[:10], x[10:12], y[10:12], ProbeOptions(heads=("softmax",), cv_folds=10))
    assert few.cv_folds == int(np.bincount(y[:12]).min())
    y_single = y.copy()
    y_single[np.flatnonzero(y_single == 2)[1:]] = 0
    with pytest.raises(AutoTransferError, match="at least 2 images of every class"):
        fit_probe(x[:45], y_single[:45], x[45:], y_single[45:], ProbeOptions(cv_folds=3))
    with pytest.raises(AutoTransferError, match="cv_folds must be"):
        fit_probe(x[:45], y[:45], x[45:], y[45:], ProbeOptions(cv_folds=1))


def test_cross_validation_works_without_a_validation_split():
    x, y = _blobs(n=60, separation=2.0, seed=8)
    result = fit_probe(x, y, x[:0], y[:0], ProbeOptions(heads=("softmax",), cv_folds=3))
    assert result.val_accuracy > 0.9
