"""Linear heads on cached features (the recipe's "CNN codes + linear classifier"), chosen on validation.

Heads: multinomial logistic regression (softmax) and a linear SVM from scikit-learn, both after
standardisation, with the regularisation strength searched; and a torch linear head (full-batch
L-BFGS) for large data or a GPU. Class imbalance can be handled with balanced class weights.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from autotransfer.budget import Deadline
from autotransfer.errors import AutoTransferError
from autotransfer.runtime import default_device
from autotransfer.transfer.metrics import check_metric, class_weights, score, score_predictions

HEADS = ("softmax", "svm", "torch")
DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0)
MAX_ITER = 300  # of every head's solver
# For estimates only: the multiply-adds a solver iteration costs per (sample, feature, class) (a
# forward and a gradient pass, line-search evaluations included) and the rate of a 2-core CPU.
FLOP_PER_ITER, FLOPS = 8.0, 2e10
SELECT_SECONDS = 20.0  # one (head, C) fit above this estimate: selection runs on a stratified subsample
MIN_ITER = 10


def fit_seconds(n: int, d: int, c: int, max_iter: int = MAX_ITER) -> float:
    """Estimated seconds of one capped solver run on ``n`` x ``d`` features and ``c`` classes: the cost
    grows with the class count (1,000 classes: 100x the cost of 10)."""
    return max_iter * FLOP_PER_ITER * n * d * max(c, 2) / FLOPS


def selection_rows(y: np.ndarray, d: int, c: int, seed: int) -> np.ndarray:
    """Positions of a seeded, stratified subsample of ``y`` whose fit costs about ``SELECT_SECONDS``
    (every class keeps its share, and at least 2 images where it has them); all of them when cheap."""
    wanted = int(SELECT_SECONDS * FLOPS / (MAX_ITER * FLOP_PER_ITER * d * max(c, 2)))
    if wanted >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = min(len(members), max(2, round(len(members) * wanted / len(y))))
        keep.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(keep))


@dataclass
class TorchLinearHead:
    """Standardise + linear layer trained full-batch with L-BFGS and an L2 penalty of 1/(C·N)."""

    C: float = 1.0
    class_weight: str | None = None
    max_iter: int = 200  # L-BFGS iterations
    device: torch.device = field(default_factory=default_device)

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> TorchLinearHead:
        """Fit on ``x`` (n, d) and labels ``y``; ``sample_weight`` (n,) weighs each image's loss.

        ``class_weight="balanced"`` multiplies the sample weights by scikit-learn's balanced class
        weights (n / (K * count of the class)); the loss is the weighted mean cross-entropy.
        """
        self.classes_ = np.unique(y)
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-6
        inputs = torch.as_tensor((x - self.mean_) / self.scale_, dtype=torch.float32, device=self.device)
        index = np.searchsorted(self.classes_, y)
        targets = torch.as_tensor(index, device=self.device)
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if self.class_weight == "balanced":
            weights = weights * class_weights(index, len(self.classes_))[index]
        elif self.class_weight is not None:
            raise AutoTransferError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}.")
        weight = torch.as_tensor(weights / weights.sum(), dtype=torch.float32, device=self.device)
        self.linear_ = torch.nn.Linear(x.shape[1], len(self.classes_)).to(self.device)
        optimizer = torch.optim.LBFGS(self.linear_.parameters(), max_iter=self.max_iter, line_search_fn="strong_wolfe")
        penalty = 1.0 / (self.C * len(y))

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            losses = torch.nn.functional.cross_entropy(self.linear_(inputs), targets, reduction="none")
            loss = (losses * weight).sum() + penalty * self.linear_.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        inputs = torch.as_tensor((x - self.mean_) / self.scale_, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            return self.linear_(inputs).cpu().numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(x).argmax(1)]

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean())


def make_head(
    kind: str,
    C: float,
    class_weight: str | None = None,
    seed: int = 0,
    shape: tuple[int, int] | None = None,
    max_iter: int = MAX_ITER,
):
    """A fresh, unfitted head of ``kind`` with inverse regularisation strength ``C`` (``max_iter``: the
    solver's cap, lowered by fit_probe where a full run would pass the deadline).

    ``shape`` is (samples, features) of the data it will be fit on: it picks the SVM's solver.
    liblinear's dual solver is used unless samples outnumber features more than 20:1, where
    sklearn's ``dual="auto"`` takes the primal one as soon as they outnumber them: on standardised
    CNN codes the primal solver is 3.5-4.7x slower at 1.6-6 samples per feature (2000 x 1280: 156 s
    vs 33 s for a 4-value C grid, same accuracy) and no faster at 21 (benchmarks/probes.py).
    """
    if kind == "softmax":
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight, random_state=seed)
        )
    if kind == "svm":
        dual = "auto" if shape is None else bool(shape[0] <= 20 * shape[1])
        return make_pipeline(
            StandardScaler(), LinearSVC(C=C, class_weight=class_weight, random_state=seed, dual=dual, max_iter=max_iter)
        )
    if kind == "torch":
        return TorchLinearHead(C=C, class_weight=class_weight, max_iter=min(200, max_iter))
    raise AutoTransferError(f"Unknown head type {kind!r}.", fix=f"use one of {', '.join(HEADS)}.")


@dataclass
class ProbeResult:
    """The best head found for one feature matrix, and every (head, C) tried.

    ``val_score`` is ``metric`` (higher is better) on the validation split, or its mean over the
    folds when chosen by cross-validation (``cv_folds``); ``val_accuracy`` is the accuracy measured
    the same way.
    """

    head: str
    C: float
    val_accuracy: float
    model: Pipeline | TorchLinearHead
    seconds: float
    tried: list[dict]
    metric: str = "accuracy"
    val_score: float = float("nan")
    cv_folds: int = 0
    class_weight: str | None = None


def head_proba(model, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class probabilities (n, len(classes)) of a fitted head, columns in the order of ``classes``.

    Softmax heads give their own probabilities; the SVM's decision values go through a softmax
    (binary: logits ``[0, z]``), which ranks like the SVM but is not calibrated. Classes the head
    never saw get probability 0.
    """
    fitted = model.classes_ if isinstance(model, TorchLinearHead) else model.steps[-1][1].classes_
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
    else:
        scores = np.asarray(model.decision_function(x), dtype=np.float64)
        if scores.ndim == 1:
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        scores = scores - scores.max(1, keepdims=True)
        proba = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    full = np.zeros((len(x), len(classes)))
    full[:, np.searchsorted(classes, fitted)] = proba
    return full


def _evaluate(model, x: np.ndarray, y: np.ndarray, metric: str, classes: np.ndarray) -> tuple[float, float]:
    """(metric, accuracy) of a fitted head on (x, y)."""
    predicted = model.predict(x)
    accuracy = float((predicted == y).mean())
    if metric == "accuracy":
        return accuracy, accuracy
    index = np.searchsorted(classes, y)
    if metric in ("balanced_accuracy", "f1_macro"):
        return score_predictions(metric, index, np.searchsorted(classes, predicted)), accuracy
    return score(metric, index, head_proba(model, x, classes), len(classes)), accuracy


def _fit(
    kind: str, C: float, class_weight: str | None, seed: int, x: np.ndarray, y: np.ndarray, max_iter: int = MAX_ITER
):
    model = make_head(kind, C, class_weight, seed, shape=x.shape, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped solver is still a valid probe
        model.fit(x, y)
    return model


def _iterations(deadline: Deadline | None, seconds: float) -> int:
    """The solver's cap for a fit estimated at ``seconds`` (with ``MAX_ITER``): lowered so that it ends
    by the deadline, never below ``MIN_ITER``."""
    if deadline is None or seconds <= deadline.left():
        return MAX_ITER
    return max(MIN_ITER, int(MAX_ITER * max(deadline.left(), 0.0) / seconds))


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    heads: tuple[str, ...] = ("softmax", "svm"),
    c_grid: tuple[float, ...] = DEFAULT_C_GRID,
    class_weight: str | None = None,
    seed: int = 0,
    metric: str = "accuracy",
    cv_folds: int = 0,
    deadline: Deadline | None = None,
) -> ProbeResult:
    """Fit every (head, C) and keep the best by ``metric`` (a name of autotransfer.transfer.metrics.METRICS).

    Without ``cv_folds`` each head is fit on train and scored on val. With ``cv_folds=k`` (k >= 2;
    for small data) train and val are pooled and each (head, C) is scored by its mean over a
    seeded StratifiedKFold (k is lowered to the smallest class count, which must be >= 2); the
    chosen one is then refit on all of train+val. Ties go to the earlier head of ``heads`` and
    then the smaller C (the more regularised). ``class_weight="balanced"`` weighs classes inversely
    to their frequency in every head. ``deadline``: once one (head, C) is scored, no other starts
    whose estimated cost (fit_seconds: samples x features x classes) passes it, and the first one's
    solver is capped to end by it (the search's time budget; 1,000 classes make each fit slow).
    When one fit of all samples would take more than ``SELECT_SECONDS``, the (head, C) are compared
    on a stratified subsample and the chosen one is refit on all of them (if that fits the deadline).
    """
    if len(np.unique(y_train)) < 2:
        raise AutoTransferError("A linear probe needs at least 2 classes in the training split.")
    if not cv_folds and len(y_val) == 0:
        raise AutoTransferError(
            "The validation split is empty: there is nothing to choose the head on.",
            fix="use more images per class, or a larger val_fraction (or cv_folds).",
        )
    if cv_folds == 1 or cv_folds < 0:
        raise AutoTransferError(f"cv_folds must be 0 (use the validation split) or >= 2, got {cv_folds}.")
    classes = np.unique(np.concatenate([y_train, y_val]))
    check_metric(metric, len(classes))
    start = time.perf_counter()
    x_fit, y_fit = (
        (np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])) if cv_folds else (x_train, y_train)
    )
    # (head, C) chosen on a stratified subsample when one fit of everything would be long; the
    # chosen one is refit on everything below
    pick = selection_rows(y_fit, x_fit.shape[1], len(classes), seed)
    subsampled = len(pick) < len(y_fit)
    x_sel, y_sel = (x_fit[pick], y_fit[pick]) if subsampled else (x_fit, y_fit)
    if cv_folds:
        smallest = int(np.bincount(np.searchsorted(classes, y_sel)).min())
        folds = min(cv_folds, smallest)
        if folds < 2:
            raise AutoTransferError(
                f"Cross-validation needs at least 2 images of every class; one class has {smallest}.",
                fix="add images to that class, or choose on the validation split (cv_folds=0).",
            )
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x_sel, y_sel))
    per_fit = fit_seconds(len(y_sel), x_fit.shape[1], len(classes)) * (folds if cv_folds else 1)
    best: tuple[float, float, str, float, object] | None = None
    tried = []
    for kind, C in itertools.product(heads, sorted(c_grid)):
        iterations = _iterations(deadline, per_fit)
        if tried and iterations < MAX_ITER:  # would pass the deadline: what is scored so far stands
            break
        if cv_folds:
            measured = [
                _evaluate(
                    _fit(kind, C, class_weight, seed, x_sel[fit], y_sel[fit], iterations),
                    x_sel[held],
                    y_sel[held],
                    metric,
                    classes,
                )
                for fit, held in splits
            ]
            value, accuracy = (float(np.mean(column)) for column in zip(*measured))
            model = None
        else:
            model = _fit(kind, C, class_weight, seed, x_sel, y_sel, iterations)
            value, accuracy = _evaluate(model, x_val, y_val, metric, classes)
        tried.append({"head": kind, "C": C, "val_accuracy": accuracy, "val_score": value, "metric": metric,
                      "rows": len(y_sel), "max_iter": iterations})  # fmt: skip
        if best is None or value > best[0]:
            best = (value, accuracy, kind, C, model)
    value, accuracy, kind, C, model = best
    refit = fit_seconds(len(y_fit), x_fit.shape[1], len(classes))
    if model is None or (subsampled and (deadline is None or refit <= deadline.left())):
        model = _fit(kind, C, class_weight, seed, x_fit, y_fit, _iterations(deadline, refit))
        if not cv_folds:
            value, accuracy = _evaluate(model, x_val, y_val, metric, classes)
    return ProbeResult(
        kind,
        C,
        accuracy,
        model,
        time.perf_counter() - start,
        tried,
        metric,
        value,
        folds if cv_folds else 0,
        class_weight,
    )


def as_linear(model: Pipeline | TorchLinearHead, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a fitted head (standardisation included) into one linear map on the raw features.

    Returns ``(weight (n_classes, d), bias (n_classes,))`` whose argmax (and, for softmax heads,
    softmax) equals the head's predictions. Binary sklearn heads have one row ``z``: it becomes the
    logits ``[0, z]``, so softmax gives logistic regression's own probabilities. Classes the head
    never saw get a zero row and a very low bias.
    """
    if isinstance(model, TorchLinearHead):
        mean, scale = model.mean_, model.scale_
        coef = model.linear_.weight.detach().cpu().double().numpy()
        intercept = model.linear_.bias.detach().cpu().double().numpy()
        classes = model.classes_
    else:
        scaler, classifier = model.steps[0][1], model.steps[-1][1]
        mean, scale = scaler.mean_, scaler.scale_
        coef, intercept, classes = classifier.coef_, np.atleast_1d(classifier.intercept_), classifier.classes_
        if coef.shape[0] == 1:  # binary: one decision function
            coef = np.concatenate([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros(1), intercept])
    weight = coef / scale
    bias = intercept - weight @ mean
    full_weight = np.zeros((n_classes, weight.shape[1]))
    full_bias = np.full(n_classes, -1e4)
    full_weight[classes] = weight
    full_bias[classes] = bias
    return torch.as_tensor(full_weight, dtype=torch.float32), torch.as_tensor(full_bias, dtype=torch.float32)
