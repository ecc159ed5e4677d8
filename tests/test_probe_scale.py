"""Probes on large N x D x C: a cost estimate that counts the classes, selection on a subsample, the deadline."""

import numpy as np

import autotransfer.transfer.probes as probes
from autotransfer.budget import Deadline
from autotransfer.transfer.probes import fit_probe, fit_seconds, selection_rows


def _blobs(n=600, d=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (rng.normal(size=(classes, d))[y] * 3 + rng.normal(size=(n, d))).astype(np.float32), y


def test_the_cost_estimate_grows_with_the_class_count():
    assert fit_seconds(4000, 1280, 1000) == 100 * fit_seconds(4000, 1280, 10)
    assert fit_seconds(8000, 1280, 10) == 2 * fit_seconds(4000, 1280, 10)


def test_selection_runs_on_a_stratified_subsample_and_the_choice_is_refit_on_everything(monkeypatch):
    x, y = _blobs()
    monkeypatch.setattr(probes, "SELECT_SECONDS", fit_seconds(100, 16, 4))  # a budget of about 100 images
    rows = selection_rows(y[:400], 16, 4, seed=0)
    assert 90 <= len(rows) <= 110 and set(np.unique(y[:400][rows])) == set(range(4))
    result = fit_probe(x[:400], y[:400], x[400:], y[400:], heads=("softmax",), c_grid=(0.1, 1.0))
    assert all(t["rows"] == len(rows) for t in result.tried)
    assert result.model.steps[-1][1].n_features_in_ == 16 and result.val_accuracy > 0.9
    assert result.model.steps[0][1].n_samples_seen_ == 400  # refit on all the training images


def test_a_fit_that_would_pass_the_deadline_is_capped_and_no_other_starts(monkeypatch):
    x, y = _blobs()
    monkeypatch.setattr(probes, "FLOPS", 1e3)  # every fit is estimated at hours
    result = fit_probe(x[:400], y[:400], x[400:], y[400:], heads=("softmax", "svm"), deadline=Deadline(5.0))
    assert len(result.tried) == 1 and result.tried[0]["max_iter"] < probes.MAX_ITER
    assert result.model is not None
    unbounded = fit_probe(x[:400], y[:400], x[400:], y[400:], heads=("softmax",), c_grid=(1.0,))
    assert unbounded.tried[0]["max_iter"] == probes.MAX_ITER
