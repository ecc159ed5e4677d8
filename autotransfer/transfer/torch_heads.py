"""The probes' torch heads: full-batch L-BFGS, and minibatch Adam where a full-batch solver would be too slow.

scikit-learn's lbfgs (and the full-batch torch head) pass over all N x D features every iteration and
need 100-300 iterations; the minibatch head converges in a dozen epochs, never copies the features
(each batch is standardised as it is read, no float64 copy, no N x C logits) and checks the deadline
after every batch, so a fit can stop with what it has. SGDClassifier was not used: it trains one
binary classifier per class (1,000 classes: 1,000 passes per epoch) and has no softmax loss;
``LogisticRegression(solver="saga")`` is a full pass per epoch in float64 with no deadline check
(benchmarks/probe_scale.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from autotransfer.budget import Deadline
from autotransfer.errors import AutoTransferError
from autotransfer.runtime import default_device
from autotransfer.transfer.feature_rows import chunks
from autotransfer.transfer.metrics import class_weights

EPOCHS = 12
BATCH_SIZE = 1024
LEARNING_RATE = 2e-3


def column_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (+1e-6) in float64, read in chunks (no full-size copy)."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for part in chunks(x):
        chunk = part.astype(np.float64)
        total += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
    mean = total / len(x)
    return mean, np.sqrt(np.maximum(squares / len(x) - mean * mean, 0.0)) + 1e-6


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


@dataclass
class MinibatchSoftmaxHead(TorchLinearHead):
    """Standardise + linear layer trained by Adam on minibatches (cosine-decayed learning rate), with the
    full-batch head's objective: weighted mean cross-entropy plus an L2 penalty of 1/(C·N).

    ``deadline``: checked after every batch; once passed the fit stops with the weights it has
    (``stopped_early_`` says so, ``epochs_`` counts the epochs begun)."""

    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    learning_rate: float = LEARNING_RATE
    seed: int = 0
    deadline: Deadline | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MinibatchSoftmaxHead:
        self.classes_ = np.unique(y)
        index = np.searchsorted(self.classes_, y)
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if self.class_weight == "balanced":
            weights = weights * class_weights(index, len(self.classes_))[index]
        elif self.class_weight is not None:
            raise AutoTransferError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}.")
        mean, self.scale_ = column_statistics(x)
        self.mean_ = mean
        shift = torch.as_tensor(mean, dtype=torch.float32)
        scale = torch.as_tensor(self.scale_, dtype=torch.float32)
        targets = torch.as_tensor(index)
        weight = torch.as_tensor(weights / weights.mean(), dtype=torch.float32)
        generator = torch.Generator().manual_seed(self.seed)
        self.linear_ = torch.nn.Linear(x.shape[1], len(self.classes_)).to(self.device)
        torch.nn.init.zeros_(self.linear_.weight)
        torch.nn.init.zeros_(self.linear_.bias)
        optimizer = torch.optim.Adam(self.linear_.parameters(), lr=self.learning_rate)
        steps = self.epochs * -(-len(y) // self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
        penalty = 1.0 / (self.C * len(y))
        self.stopped_early_, self.epochs_ = False, 0
        for _ in range(self.epochs):
            self.epochs_ += 1
            for rows in torch.randperm(len(y), generator=generator).split(self.batch_size):
                picked = np.sort(rows.numpy())  # in order: a memory map is read forwards
                inputs = (torch.as_tensor(np.asarray(x[picked], dtype=np.float32)) - shift) / scale
                batch = torch.as_tensor(picked)
                losses = torch.nn.functional.cross_entropy(
                    self.linear_(inputs.to(self.device)), targets[batch].to(self.device), reduction="none"
                )
                loss = (losses * weight[batch].to(self.device)).mean() + penalty * self.linear_.weight.pow(2).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if self.deadline is not None and self.deadline.left() <= 0:
                    self.stopped_early_ = True
                    return self
        return self
