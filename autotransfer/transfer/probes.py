"""Linear heads on cached features (the recipe's "CNN codes + linear classifier"), chosen on validation.

Heads: multinomial logistic regression (softmax) and a linear SVM from scikit-learn, both after
standardisation, with the regularisation strength searched; and a torch linear head (full-batch
L-BFGS) for a GPU. Softmax heads on large n x d x c train on minibatches instead
(torch_heads.MinibatchSoftmaxHead, chosen by probe_cost.solver). Class imbalance can be handled with
balanced class weights.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass

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
from autotransfer.transfer.feature_rows import FeatureRows, chunks, concat_rows
from autotransfer.transfer.metrics import check_metric, score, score_predictions
from autotransfer.transfer.probe_cost import MAX_ITER, fit_seconds, iterations, refit_rows, selection_rows, solver
from autotransfer.transfer.strategies import PROBE_HEADS
from autotransfer.transfer.torch_heads import MinibatchSoftmaxHead, TorchLinearHead

DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0)


def make_head(
    kind: str,
    C: float,
    class_weight: str | None = None,
    seed: int = 0,
    shape: tuple[int, int] | None = None,
    max_iter: int = MAX_ITER,
    n_classes: int = 2,
    deadline: Deadline | None = None,
):
    """A fresh, unfitted head of ``kind`` with inverse regularisation strength ``C`` (``max_iter``: a
    full-batch solver's cap, lowered by fit_probe where a full run would pass the deadline).

    ``shape`` is (samples, features) of the data it will be fit on, ``n_classes`` its class count.
    A softmax head whose full-batch fit would be long (probe_cost.solver) is a MinibatchSoftmaxHead,
    which stops at ``deadline``. The shape also picks the SVM's solver: liblinear's dual solver is
    used unless samples outnumber features more than 20:1, where sklearn's ``dual="auto"`` takes the
    primal one as soon as they outnumber them: on standardised CNN codes the primal solver is
    3.5-4.7x slower at 1.6-6 samples per feature (2000 x 1280: 156 s vs 33 s for a 4-value C grid,
    same accuracy) and no faster at 21 (benchmarks/probes.py).
    """
    if shape is not None and solver(kind, shape[0], shape[1], n_classes) == "minibatch":
        return MinibatchSoftmaxHead(C=C, class_weight=class_weight, seed=seed, deadline=deadline)
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
    raise AutoTransferError(
        f"Unknown head type {kind!r}.",
        where="the search space's probe.heads",
        fix=f"use one of {', '.join(PROBE_HEADS)}.",
    )


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
    refit_seconds: float = 0.0  # estimated (quiet-machine) seconds of the chosen head's refit on train+val


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


def _evaluate(
    model, x: np.ndarray | FeatureRows, y: np.ndarray, metric: str, classes: np.ndarray
) -> tuple[float, float]:
    """(metric, accuracy) of a fitted head on (x, y), ``x`` read in chunks."""
    predicted = np.concatenate([model.predict(part) for part in chunks(x)])
    accuracy = float((predicted == y).mean())
    if metric == "accuracy":
        return accuracy, accuracy
    index = np.searchsorted(classes, y)
    if metric in ("balanced_accuracy", "f1_macro"):
        return score_predictions(metric, index, np.searchsorted(classes, predicted)), accuracy
    proba = np.concatenate([head_proba(model, part, classes) for part in chunks(x)])
    return score(metric, index, proba, len(classes)), accuracy


@dataclass(frozen=True)
class _FitBudget:
    """A fit's limits: a full-batch solver's iteration cap, and the deadline a minibatch one stops at."""

    n_classes: int
    max_iter: int
    deadline: Deadline | None


@dataclass(frozen=True)
class ProbeOptions:
    """How fit_probe chooses a head: the head kinds and C values tried (ties go to the earlier head and
    then the smaller C), the class weighting every head uses (``"balanced"``: inversely to class
    frequency), the metric it is chosen by (a name of autotransfer.transfer.metrics.METRICS), and
    ``cv_folds`` (0: chosen on the validation split; k >= 2: by a seeded StratifiedKFold on train and
    val pooled, for small data)."""

    heads: tuple[str, ...] = ("softmax", "svm")
    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    class_weight: str | None = None
    seed: int = 0
    metric: str = "accuracy"
    cv_folds: int = 0


def _fit(options: ProbeOptions, kind: str, C: float, x: np.ndarray, y: np.ndarray, budget: _FitBudget):
    """Head ``kind`` fit on (x, y) within ``budget``."""
    model = make_head(
        kind,
        C,
        options.class_weight,
        options.seed,
        shape=x.shape,
        max_iter=budget.max_iter,
        n_classes=budget.n_classes,
        deadline=budget.deadline,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped solver is still a valid probe
        model.fit(x, y)
    return model


def _check(y_train: np.ndarray, y_val: np.ndarray, options: ProbeOptions) -> None:
    if len(np.unique(y_train)) < 2:
        raise AutoTransferError(
            "A linear probe needs at least 2 classes in the training split.",
            where=f"the training split ({len(y_train)} images)",
            fix="give images of at least 2 classes (one folder per class).",
        )
    if not options.cv_folds and len(y_val) == 0:
        raise AutoTransferError(
            "The validation split is empty: there is nothing to choose the head on.",
            where="the validation split",
            fix="use more images per class, or a larger val_fraction (or cv_folds).",
        )
    if options.cv_folds == 1 or options.cv_folds < 0:
        raise AutoTransferError(
            f"cv_folds must be 0 (use the validation split) or >= 2, got {options.cv_folds}.",
            where="ProbeOptions.cv_folds",
            fix="give 0, or 2 or more folds.",
        )


def _folds(options: ProbeOptions, x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> list:
    """The (fit, held-out) positions of cross-validation on (x, y); k lowered to the smallest class."""
    smallest = int(np.bincount(np.searchsorted(classes, y)).min())
    folds = min(options.cv_folds, smallest)
    if folds < 2:
        raise AutoTransferError(
            f"Cross-validation needs at least 2 images of every class; one class has {smallest}.",
            where=f"class {classes[int(np.argmin(np.bincount(np.searchsorted(classes, y))))]!r} of train+val",
            fix="add images to that class, or choose on the validation split (cv_folds=0).",
        )
    return list(StratifiedKFold(folds, shuffle=True, random_state=options.seed).split(x, y))


@dataclass
class _Selection:
    """What the (head, C) comparison saw: its rows, the validation split, the folds (cross-validation)."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | FeatureRows
    y_val: np.ndarray
    classes: np.ndarray
    splits: list | None

    def score(self, options: ProbeOptions, kind: str, C: float, budget: _FitBudget):
        """(metric, accuracy, model) of (kind, C); the model is None under cross-validation."""
        if self.splits is None:
            model = _fit(options, kind, C, self.x, self.y, budget)
            return (*_evaluate(model, self.x_val, self.y_val, options.metric, self.classes), model)
        measured = [
            _evaluate(
                _fit(options, kind, C, self.x[fit], self.y[fit], budget),
                self.x[held],
                self.y[held],
                options.metric,
                self.classes,
            )  # fmt: skip
            for fit, held in self.splits
        ]
        value, accuracy = (float(np.mean(column)) for column in zip(*measured))
        return value, accuracy, None


def fit_probe(
    x_train: np.ndarray | FeatureRows,
    y_train: np.ndarray,
    x_val: np.ndarray | FeatureRows,
    y_val: np.ndarray,
    options: ProbeOptions = ProbeOptions(),
    *,
    deadline: Deadline | None = None,
) -> ProbeResult:
    """Fit every (head, C) of ``options`` and keep the best by its metric.

    ``x_train`` / ``x_val``: (n, d) features, in RAM or as ``FeatureRows`` of memory-mapped features
    (only the rows a fit needs are read: peak memory does not grow with n beyond a subsample).
    Without ``cv_folds`` each head is fit on train and scored on val. With ``cv_folds=k`` train and val
    are pooled and each (head, C) is scored by its mean over the folds (k is lowered to the smallest
    class count, which must be >= 2); the chosen one is then refit on all of train+val.
    Large data: when one full-batch fit of all samples would take more than ``SELECT_SECONDS``, the
    (head, C) are compared on a stratified subsample and the chosen one is refit on more rows
    (``refit_head``); softmax fits whose full-batch estimate is long train on minibatches
    (probe_cost.solver).
    ``deadline``: once one (head, C) is scored, no other starts whose estimated cost (probe_cost:
    samples x features x classes, times the wall/CPU ratio the last fit saw on a loaded machine) passes
    it; full-batch solvers are capped in iterations to end by it and minibatch ones stop at it, with what
    they have (the search's time budget).
    """
    _check(y_train, y_val, options)
    classes = np.unique(np.concatenate([y_train, y_val]))
    check_metric(options.metric, len(classes))
    start = time.perf_counter()
    cv = bool(options.cv_folds)
    x_fit, y_fit = (concat_rows(x_train, x_val), np.concatenate([y_train, y_val])) if cv else (x_train, y_train)
    pick = selection_rows(y_fit, x_fit.shape[1], len(classes), options.seed)
    subsampled = len(pick) < len(y_fit)
    x_sel, y_sel = (np.asarray(x_fit[pick]), y_fit[pick]) if subsampled else (np.asarray(x_fit), y_fit)
    splits = _folds(options, x_sel, y_sel, classes) if cv else None
    selection = _Selection(x_sel, y_sel, x_val, y_val, classes, splits)
    n, d, c = len(y_sel), x_fit.shape[1], len(classes)
    best, tried = None, []
    slowdown = 1.0  # wall seconds per CPU second of the last fit: the estimates are CPU seconds, the deadline is not
    for kind, C in itertools.product(options.heads, sorted(options.c_grid)):
        estimate = fit_seconds(kind, n, d, c) * (len(splits) if cv else 1) * slowdown
        cap = iterations(deadline, estimate)
        if tried and deadline is not None and estimate > deadline.left():  # what is scored so far stands
            break
        wall, cpu = time.perf_counter(), time.process_time()
        value, accuracy, model = selection.score(options, kind, C, _FitBudget(c, cap, deadline))
        slowdown = max(1.0, (time.perf_counter() - wall) / max(time.process_time() - cpu, 1e-3))
        tried.append({"head": kind, "C": C, "val_accuracy": accuracy, "val_score": value, "metric": options.metric,
                      "rows": n, "solver": solver(kind, n, d, c), "max_iter": cap})  # fmt: skip
        if best is None or value > best[0]:
            best = (value, accuracy, kind, C, model)
    value, accuracy, kind, C, model = best
    rows = refit_rows(kind, y_fit, d, c, options.seed)
    refit = fit_seconds(kind, len(rows), d, c) * slowdown
    if model is None or (len(rows) > n and (deadline is None or refit <= deadline.left())):
        model = _fit_on_rows(options, kind, C, x_fit, y_fit, rows, _FitBudget(c, iterations(deadline, refit), deadline))
        if not cv:
            value, accuracy = _evaluate(model, x_val, y_val, options.metric, classes)
    # the pipeline's head is refit on train+val (search/refit.py): the rows above when they are train+val (CV)
    all_rows = rows if cv else refit_rows(kind, np.concatenate([y_train, y_val]), d, c, options.seed)
    return ProbeResult(
        head=kind,
        C=C,
        val_accuracy=accuracy,
        model=model,
        seconds=time.perf_counter() - start,
        tried=tried,
        metric=options.metric,
        val_score=value,
        cv_folds=len(splits) if cv else 0,
        class_weight=options.class_weight,
        refit_seconds=fit_seconds(kind, len(all_rows), d, c),
    )


def refit_head(
    options: ProbeOptions,
    kind: str,
    C: float,
    x: np.ndarray | FeatureRows,
    y: np.ndarray,
    *,
    n_classes: int,
    deadline: Deadline | None = None,
    slowdown: float = 1.0,
):
    """Head ``kind`` (regularisation ``C``) fit on ``x`` (n, d) and ``y`` in bounded memory: a minibatch
    solver reads every row batch by batch, a full-batch one is fit on ``probe_cost.refit_rows`` (a stratified
    subsample of at most ``FULL_BATCH_VALUES`` features), capped in iterations to end by ``deadline``
    (its estimate times ``slowdown``, the wall/CPU ratio seen on a loaded machine)."""
    rows = refit_rows(kind, y, x.shape[1], n_classes, options.seed)
    cap = iterations(deadline, fit_seconds(kind, len(rows), x.shape[1], n_classes) * slowdown)
    return _fit_on_rows(options, kind, C, x, y, rows, _FitBudget(n_classes, cap, deadline))


def _fit_on_rows(
    options: ProbeOptions, kind: str, C: float, x: np.ndarray | FeatureRows, y: np.ndarray, rows: np.ndarray,
    budget: _FitBudget,
):  # fmt: skip
    """refit_head's fit on its ``rows`` of ``x`` and ``y`` (all of them: read as they are, or as one array
    for a full-batch solver)."""
    if len(rows) < len(y):
        x, y = x[rows], y[rows]
    elif solver(kind, len(y), x.shape[1], budget.n_classes) == "full":
        x = np.asarray(x)
    return _fit(options, kind, C, x, y, budget)


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
