"""Probes on large N x D x C: a cost estimate that counts the classes, selection on a subsample, minibatch
training for large softmax fits, the deadline."""

import numpy as np
import torch

import autotransfer.transfer.probe_cost as probe_cost
from autotransfer.budget import Deadline
from autotransfer.transfer.probe_cost import lbfgs_seconds, minibatch_seconds, selection_rows, solver
from autotransfer.transfer.probes import ProbeOptions, as_linear, fit_probe
from autotransfer.transfer.torch_heads import MinibatchSoftmaxHead, column_statistics


def _blobs(n=600, d=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (rng.normal(size=(classes, d))[y] * 3 + rng.normal(size=(n, d))).astype(np.float32), y


def test_the_cost_estimate_grows_with_the_class_count_and_the_rows():
    assert lbfgs_seconds(4000, 1280, 1000) > 20 * lbfgs_seconds(4000, 1280, 10)
    assert minibatch_seconds(4000, 1280, 1000) > 5 * minibatch_seconds(4000, 1280, 10)
    assert lbfgs_seconds(8000, 1280, 10) == 2 * lbfgs_seconds(4000, 1280, 10)
    # a softmax on ImageNet-size codes trains on minibatches; small ones and any SVM keep their solver
    assert solver("softmax", 60_000, 1280, 1000) == "minibatch" and solver("torch", 60_000, 1280, 10) == "minibatch"
    assert solver("softmax", 500, 1280, 10) == "full" and solver("svm", 60_000, 1280, 1000) == "full"


def test_selection_runs_on_a_stratified_subsample_and_the_choice_is_refit_on_everything(monkeypatch):
    x, y = _blobs()
    monkeypatch.setattr(probe_cost, "SELECT_SECONDS", lbfgs_seconds(100, 16, 4))  # a budget of about 100 images
    rows = selection_rows(y[:400], 16, 4, seed=0)
    assert 90 <= len(rows) <= 110 and set(np.unique(y[:400][rows])) == set(range(4))
    result = fit_probe(x[:400], y[:400], x[400:], y[400:], ProbeOptions(heads=("softmax",), c_grid=(0.1, 1.0)))
    assert all(t["rows"] == len(rows) and t["solver"] == "full" for t in result.tried)
    assert result.model.steps[-1][1].n_features_in_ == 16 and result.val_accuracy > 0.9
    assert result.model.steps[0][1].n_samples_seen_ == 400  # refit on all the training images


def test_a_large_matrix_is_chosen_on_a_subsample_with_minibatch_softmax_and_refit_on_all_rows(monkeypatch):
    """Thresholds scaled down so that 3,000 x 32 x 20 counts as large: the solver choice and the refit are
    what is checked, not the seconds."""
    x, y = _blobs(n=3600, d=32, classes=20, seed=1)
    x_train, y_train, x_val, y_val = x[:3000], y[:3000], x[3000:], y[3000:]
    monkeypatch.setattr(probe_cost, "SELECT_SECONDS", lbfgs_seconds(1000, 32, 20))
    monkeypatch.setattr(probe_cost, "MINIBATCH_ABOVE", lbfgs_seconds(500, 32, 20))
    result = fit_probe(x_train, y_train, x_val, y_val, ProbeOptions(heads=("softmax", "svm"), c_grid=(0.1, 1.0)))
    assert {t["rows"] for t in result.tried} == {len(selection_rows(y_train, 32, 20, 0))}
    assert all(t["rows"] < 3000 for t in result.tried)
    assert [t["solver"] for t in result.tried] == ["minibatch", "minibatch", "full", "full"]
    if result.head == "softmax":  # refit on every training row with the minibatch solver
        assert isinstance(result.model, MinibatchSoftmaxHead) and not result.model.stopped_early_
        assert np.allclose(result.model.mean_, x_train.astype(np.float64).mean(0), atol=1e-4)
    assert result.val_accuracy > 0.9


def test_a_minibatch_fit_past_its_deadline_stops_with_what_it_has():
    x, y = _blobs(n=2000, d=16, classes=4)
    passed = Deadline(0.0, start=0.0)
    head = MinibatchSoftmaxHead(C=1.0, batch_size=100, deadline=passed, device=torch.device("cpu")).fit(x, y)
    assert head.stopped_early_ and head.epochs_ == 1
    assert set(head.predict(x)) <= set(range(4))
    unbounded = MinibatchSoftmaxHead(C=1.0, epochs=3, batch_size=100, device=torch.device("cpu")).fit(x, y)
    assert not unbounded.stopped_early_ and unbounded.epochs_ == 3 and unbounded.score(x, y) > 0.95


def test_a_minibatch_head_weighs_classes_and_folds_into_one_linear_map():
    x, y = _blobs(n=800, d=16, classes=3, seed=2)
    head = MinibatchSoftmaxHead(C=1.0, class_weight="balanced", epochs=4, device=torch.device("cpu")).fit(x, y)
    weight, bias = as_linear(head, 3)
    logits = torch.as_tensor(x) @ weight.T + bias
    assert np.array_equal(logits.argmax(1).numpy(), head.predict(x))
    mean, scale = column_statistics(x)
    assert np.allclose(mean, x.astype(np.float64).mean(0)) and np.allclose(scale, x.std(0) + 1e-6, rtol=1e-4)


def test_a_fit_that_would_pass_the_deadline_is_capped_and_no_other_starts(monkeypatch):
    x, y = _blobs()
    monkeypatch.setattr(probe_cost, "LBFGS_PER_CLASS", 1e3)  # every full-batch fit is estimated at hours
    monkeypatch.setattr(probe_cost, "MINIBATCH_ABOVE", float("inf"))
    monkeypatch.setattr(probe_cost, "SELECT_SECONDS", 1e12)
    options = ProbeOptions(heads=("softmax", "svm"))
    result = fit_probe(x[:400], y[:400], x[400:], y[400:], options, deadline=Deadline(5.0))
    assert len(result.tried) == 1 and result.tried[0]["max_iter"] < probe_cost.MAX_ITER
    assert result.model is not None
    unbounded = fit_probe(x[:400], y[:400], x[400:], y[400:], ProbeOptions(heads=("softmax",), c_grid=(1.0,)))
    assert unbounded.tried[0]["max_iter"] == probe_cost.MAX_ITER


def test_on_a_loaded_machine_the_estimate_counts_wall_seconds_not_cpu_seconds(monkeypatch):
    """A fit whose CPU estimate fits the time left does not start when the last fit took far more wall
    time than CPU time (the process got a fraction of a core)."""
    import autotransfer.transfer.probes as probes

    x, y = _blobs()
    monkeypatch.setattr(probe_cost, "MINIBATCH_ABOVE", float("inf"))
    monkeypatch.setattr(probe_cost, "SELECT_SECONDS", 1e12)
    monkeypatch.setattr(probe_cost, "LBFGS_PER_ROW", 50.0 / (400 * 16 * probe_cost.MAX_ITER))  # each fit: ~50 s CPU
    options = ProbeOptions(heads=("softmax",), c_grid=(0.1, 1.0))
    monkeypatch.setattr(probes.time, "process_time", probes.time.perf_counter)  # a whole core: CPU time = wall
    idle = fit_probe(x[:400], y[:400], x[400:], y[400:], options, deadline=Deadline(100.0))
    assert len(idle.tried) == 2
    monkeypatch.setattr(probes.time, "process_time", lambda: 0.0)  # no CPU time at all: a fully loaded machine
    loaded = fit_probe(x[:400], y[:400], x[400:], y[400:], options, deadline=Deadline(100.0))
    assert len(loaded.tried) == 1 and loaded.model is not None
