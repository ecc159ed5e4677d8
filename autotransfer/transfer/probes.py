"""Linear heads on cached features (the recipe's "CNN codes + linear classifier"), chosen on validation.

Heads: multinomial logistic regression (softmax) and a linear SVM from scikit-learn, both after
standardisation, with the regularisation strength searched; and a torch linear head (full-batch
L-BFGS) for large data or a GPU. Class imbalance can be handled with balanced class weights.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from autotransfer.errors import AutoTransferError
from autotransfer.runtime import default_device

HEADS = ("softmax", "svm", "torch")
DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclass
class TorchLinearHead:
    """Standardise + linear layer trained full-batch with L-BFGS and an L2 penalty of 1/(C·N)."""

    C: float = 1.0
    class_weight: str | None = None
    max_iter: int = 200
    device: torch.device = field(default_factory=default_device)

    def fit(self, x: np.ndarray, y: np.ndarray) -> TorchLinearHead:
        self.classes_ = np.unique(y)
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-6
        inputs = torch.as_tensor((x - self.mean_) / self.scale_, dtype=torch.float32, device=self.device)
        targets = torch.as_tensor(np.searchsorted(self.classes_, y), device=self.device)
        weight = None
        if self.class_weight == "balanced":
            counts = np.bincount(targets.cpu().numpy(), minlength=len(self.classes_))
            weight = torch.as_tensor(
                len(y) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32, device=self.device
            )
        self.linear_ = torch.nn.Linear(x.shape[1], len(self.classes_)).to(self.device)
        optimizer = torch.optim.LBFGS(self.linear_.parameters(), max_iter=self.max_iter, line_search_fn="strong_wolfe")
        penalty = 1.0 / (self.C * len(y))

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.linear_(inputs), targets, weight=weight)
            loss = loss + penalty * self.linear_.weight.pow(2).sum()
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
    kind: str, C: float, class_weight: str | None = None, seed: int = 0, shape: tuple[int, int] | None = None
):
    """A fresh, unfitted head of ``kind`` with inverse regularisation strength ``C``.

    ``shape`` is (samples, features) of the data it will be fit on: it picks the SVM's solver.
    liblinear's dual solver is used unless samples outnumber features more than 20:1, where
    sklearn's ``dual="auto"`` takes the primal one as soon as they outnumber them: on standardised
    CNN codes the primal solver is 3.5-4.7x slower at 1.6-6 samples per feature (2000 x 1280: 156 s
    vs 33 s for a 4-value C grid, same accuracy) and no faster at 21 (benchmarks/probes.py).
    """
    if kind == "softmax":
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=300, class_weight=class_weight, random_state=seed)
        )
    if kind == "svm":
        dual = "auto" if shape is None else bool(shape[0] <= 20 * shape[1])
        return make_pipeline(
            StandardScaler(), LinearSVC(C=C, class_weight=class_weight, random_state=seed, dual=dual, max_iter=300)
        )
    if kind == "torch":
        return TorchLinearHead(C=C, class_weight=class_weight)
    raise AutoTransferError(f"Unknown head type {kind!r}.", fix=f"use one of {', '.join(HEADS)}.")


@dataclass
class ProbeResult:
    """The best head found for one feature matrix, and every (head, C) tried."""

    head: str
    C: float
    val_accuracy: float
    model: Pipeline | TorchLinearHead
    seconds: float
    tried: list[dict]


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
) -> ProbeResult:
    """Fit every (head, C) on train, keep the best validation accuracy (ties: the simpler, smaller C)."""
    if len(np.unique(y_train)) < 2:
        raise AutoTransferError("A linear probe needs at least 2 classes in the training split.")
    if len(y_val) == 0:
        raise AutoTransferError(
            "The validation split is empty: there is nothing to choose the head on.",
            fix="use more images per class, or a larger val_fraction.",
        )
    start = time.perf_counter()
    best: tuple[float, str, float, object] | None = None
    tried = []
    for kind in heads:
        for C in sorted(c_grid):
            model = make_head(kind, C, class_weight, seed, shape=x_train.shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # a capped solver is still a valid probe
                model.fit(x_train, y_train)
            accuracy = float(model.score(x_val, y_val))
            tried.append({"head": kind, "C": C, "val_accuracy": accuracy})
            if best is None or accuracy > best[0]:
                best = (accuracy, kind, C, model)
    accuracy, kind, C, model = best
    return ProbeResult(kind, C, accuracy, model, time.perf_counter() - start, tried)


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
