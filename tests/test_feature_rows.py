"""Probes on memory-mapped features read only the rows a fit needs: the split is never copied whole, a
combined tap never stacked in RAM, and a full-batch refit is bounded whatever N is."""

import numpy as np
import pytest

import autotransfer.transfer.probe_cost as probe_cost
from autotransfer.transfer.feature_rows import FeatureRows, concat_rows
from autotransfer.transfer.probe_cost import lbfgs_seconds
from autotransfer.transfer.probes import ProbeOptions, fit_probe, refit_head


class ReadCounter(np.ndarray):
    """An array that remembers the most rows read from it at once (a memory map's fancy read)."""

    largest: list

    def __getitem__(self, rows):
        value = super().__getitem__(rows)
        if isinstance(value, np.ndarray) and value.ndim == 2:
            self.largest[0] = max(self.largest[0], len(value))
        return value


def _counted(values: np.ndarray) -> ReadCounter:
    array = values.view(ReadCounter)
    array.largest = [0]
    return array


def _blobs(n=3000, d=24, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (rng.normal(size=(classes, d))[y] * 3 + rng.normal(size=(n, d))).astype(np.float32), y


def test_rows_of_parts_side_by_side_read_as_the_stacked_matrix_would_be():
    a, b = np.arange(40, dtype=np.float32).reshape(10, 4), -np.arange(30, dtype=np.float32).reshape(10, 3)
    index = np.array([7, 2, 9, 0, 2])
    rows = FeatureRows.of([a, b], index)
    stacked = np.hstack([a, b])[index]
    assert rows.shape == (5, 7) and len(rows) == 5
    np.testing.assert_array_equal(rows[np.array([3, 0, 1])], stacked[[3, 0, 1]])  # unsorted: order kept
    np.testing.assert_array_equal(rows[1:4], stacked[1:4])
    np.testing.assert_array_equal(np.asarray(rows), stacked)
    np.testing.assert_array_equal(np.asarray(rows.take(np.array([4, 1]))), stacked[[4, 1]])
    both = concat_rows(rows.take(np.array([0])), rows.take(np.array([2])))
    assert isinstance(both, FeatureRows)  # same parts: still unread
    np.testing.assert_array_equal(np.asarray(both), stacked[[0, 2]])


@pytest.mark.parametrize("cv_folds", [0, 3])
def test_a_probe_on_rows_of_features_is_the_probe_on_the_copied_split(cv_folds):
    x, y = _blobs(n=400, d=12, classes=3)
    train, val = np.arange(0, 300), np.arange(300, 400)
    options = ProbeOptions(heads=("softmax", "svm"), c_grid=(0.1, 1.0), cv_folds=cv_folds)
    copied = fit_probe(x[train], y[train], x[val], y[val], options)
    rows = FeatureRows.of([x[:, :5], x[:, 5:]])  # two parts, as a combined tap
    lazy = fit_probe(rows.take(train), y[train], rows.take(val), y[val], options)
    assert (lazy.head, lazy.C, lazy.val_score, lazy.val_accuracy) == (
        copied.head,
        copied.C,
        copied.val_score,
        copied.val_accuracy,
    )
    assert lazy.refit_seconds == copied.refit_seconds > 0


def test_a_large_split_is_never_read_whole(monkeypatch):
    """Thresholds scaled down so that 3,000 x 24 counts as large: selection on a subsample, the softmax
    refit on minibatches, so no read of the memory map is ever the whole split."""
    x, y = _blobs()
    monkeypatch.setattr(probe_cost, "SELECT_SECONDS", lbfgs_seconds(400, 24, 6))
    monkeypatch.setattr(probe_cost, "MINIBATCH_ABOVE", lbfgs_seconds(300, 24, 6))
    monkeypatch.setattr("autotransfer.transfer.feature_rows.READ_ROWS", 512)
    features = _counted(x)
    rows = FeatureRows.of(features)
    train, val = np.arange(0, 2500), np.arange(2500, 3000)
    result = fit_probe(rows.take(train), y[train], rows.take(val), y[val], ProbeOptions(heads=("softmax",)))
    assert result.val_accuracy > 0.9
    assert 0 < features.largest[0] <= 1024  # selection subsample (about 400), minibatches and chunks of 512


def test_a_full_batch_refit_is_bounded_whatever_the_rows(monkeypatch):
    x, y = _blobs(n=3000, d=24)
    monkeypatch.setattr(probe_cost, "FULL_BATCH_VALUES", 600 * 24)  # at most 600 rows of 24 features
    features = _counted(x)
    head = refit_head(ProbeOptions(), "svm", 1.0, FeatureRows.of(features), y, n_classes=6)
    assert 500 <= features.largest[0] <= 700
    assert 500 <= head.steps[0][1].n_samples_seen_ <= 700
    assert set(head.steps[-1][1].classes_) == set(range(6))  # stratified: every class kept
    assert float((head.predict(x) == y).mean()) > 0.9
