"""What a linear probe costs on n x d features with c classes, and the choices made from it: the solver
(full-batch or minibatch), the rows the (head, C) selection runs on, and a full-batch solver's
iteration cap under a deadline."""

from __future__ import annotations

import numpy as np

from autotransfer.budget import Deadline
from autotransfer.transfer.torch_heads import EPOCHS

MAX_ITER = 300  # of every full-batch solver
MIN_ITER = 10
# Seconds of one pass over n x d features with c classes, as n * d * (PER_CLASS * c + PER_ROW): the
# per-class term is the logits and their gradient, the per-row term reading the features. Measured on
# one thread of a 2-core Xeon under a load of 3-6 (benchmarks/probe_scale.py, results in
# benchmarks/results/probe-scale-cpu.md); more threads or a quieter machine make the estimate high.
LBFGS_PER_CLASS, LBFGS_PER_ROW = 2.2e-10, 7.8e-9  # one iteration of scikit-learn's lbfgs
EPOCH_PER_CLASS, EPOCH_PER_ROW = 1.9e-10, 2.6e-8  # one epoch of the minibatch head
SELECT_SECONDS = 20.0  # one (head, C) fit above this estimate: selection runs on a stratified subsample
MINIBATCH_ABOVE = 20.0  # a softmax fit whose full-batch estimate passes this trains on minibatches
MINIBATCH_HEADS = ("softmax", "torch")
# Features (rows x columns) a full-batch solver is fit on at most. liblinear copies every value into its
# own 16-byte nodes and the scaler makes one more copy: 2.5e7 values is about 0.5 GB whatever N is; a
# linear head gains little from more rows than that (a 1280-d tap: 19,500 rows).
FULL_BATCH_VALUES = 25_000_000


def _pass_seconds(n: int, d: int, c: int, per_class: float, per_row: float) -> float:
    return n * d * (per_class * max(c, 2) + per_row)


def lbfgs_seconds(n: int, d: int, c: int, max_iter: int = MAX_ITER) -> float:
    """Estimated seconds of a full-batch solver run capped at ``max_iter`` iterations."""
    return max_iter * _pass_seconds(n, d, c, LBFGS_PER_CLASS, LBFGS_PER_ROW)


def minibatch_seconds(n: int, d: int, c: int, epochs: int = EPOCHS) -> float:
    """Estimated seconds of the minibatch head's ``epochs`` epochs."""
    return epochs * _pass_seconds(n, d, c, EPOCH_PER_CLASS, EPOCH_PER_ROW)


def solver(kind: str, n: int, d: int, c: int) -> str:
    """``"minibatch"`` for a softmax head whose full-batch fit would be long, else ``"full"`` (the SVM is
    always liblinear's, capped in iterations)."""
    return "minibatch" if kind in MINIBATCH_HEADS and lbfgs_seconds(n, d, c) > MINIBATCH_ABOVE else "full"


def fit_seconds(kind: str, n: int, d: int, c: int) -> float:
    """Estimated seconds of one fit of head ``kind`` with the solver ``solver`` picks for it."""
    if solver(kind, n, d, c) == "minibatch":
        return minibatch_seconds(n, d, c)
    return lbfgs_seconds(n, d, c)


def selection_rows(y: np.ndarray, d: int, c: int, seed: int) -> np.ndarray:
    """Positions of a seeded, stratified subsample of ``y`` whose full-batch fit costs about
    ``SELECT_SECONDS``; all of them when cheap."""
    return stratified_rows(y, int(SELECT_SECONDS / lbfgs_seconds(1, d, c)), seed)


def refit_rows(kind: str, y: np.ndarray, d: int, c: int, seed: int) -> np.ndarray:
    """Positions of ``y`` a head of ``kind`` is refit on: all of them for a minibatch solver (it reads
    batches), else a seeded stratified subsample of at most ``FULL_BATCH_VALUES`` features."""
    if solver(kind, len(y), d, c) == "minibatch":
        return np.arange(len(y))
    return stratified_rows(y, FULL_BATCH_VALUES // max(d, 1), seed)


def stratified_rows(y: np.ndarray, wanted: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded subsample of about ``wanted`` of ``y``'s rows in which every class keeps
    its share, and at least 2 images where it has them; all of them when ``wanted`` covers ``y``."""
    if wanted >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = min(len(members), max(2, round(len(members) * wanted / len(y))))
        keep.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(keep))


def iterations(deadline: Deadline | None, seconds: float) -> int:
    """A full-batch solver's cap for a fit estimated at ``seconds`` (with ``MAX_ITER``): lowered so that it
    ends by the deadline, never below ``MIN_ITER``."""
    if deadline is None or seconds <= deadline.left():
        return MAX_ITER
    return max(MIN_ITER, int(MAX_ITER * max(deadline.left(), 0.0) / seconds))
