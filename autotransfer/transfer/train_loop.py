"""One epoch of fine-tuning and its evaluation: timm's optimizer, schedule and Mixup, the loss, bf16 autocast,
gradient clipping, a finite-loss check, and out-of-memory detection for the caller's retry."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from autotransfer.runtime import autocast
from autotransfer.transfer.batches import Batches
from autotransfer.transfer.metrics import class_weights
from autotransfer.transfer.metrics import score as score_metric

if TYPE_CHECKING:
    from timm.scheduler.scheduler import Scheduler

    from autotransfer.transfer.finetune import FinetuneConfig


FINITE_CHECK_EVERY = 32  # updates between checks that the loss is finite (each waits for the device)


class NonFiniteLoss(RuntimeError):
    """Training diverged (NaN or infinite loss): the search records the trial as failed and goes on."""


def is_oom(error: BaseException) -> bool:
    """GPU (CUDA OOM) or host (torch's CPU allocator, Python's MemoryError) out of memory."""
    message = str(error).lower()
    return isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)
    )


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's and NumPy's global generators for one training run, then give the caller's back.

    timm's Mixup draws from these globals (not from a generator we can pass), so
    without this a trial's augmentations depend on whatever ran before it in the process.
    """
    saved_python, saved_numpy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)


def evaluate(
    model: nn.Module, batches: Batches, labels: torch.Tensor, batch_size: int, device, use_bf16: bool, metric: str
) -> tuple[float, float, float]:
    """Validation loss, accuracy and ``metric`` (higher is better); sums stay on the device until the end."""
    model.eval()
    n = max(len(batches), 1)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total_loss = torch.zeros((), device=device)
    probabilities = []  # val x classes, kept only for a metric other than accuracy
    with torch.inference_mode(), autocast(device, use_bf16):
        for rows, inputs in batches.iterate(np.arange(len(batches)), batch_size):
            logits = model(inputs).float()
            target = labels[rows].to(device, non_blocking=True)
            total_loss += nn.functional.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
            if metric != "accuracy":
                probabilities.append(torch.softmax(logits, 1))
    accuracy = int(correct) / n
    if not probabilities:
        return float(total_loss) / n, accuracy, accuracy
    proba = torch.cat(probabilities).cpu().numpy()
    value = score_metric(metric, labels.numpy(), proba, proba.shape[1])
    return float(total_loss) / n, accuracy, value


def optimisation(
    groups: list[dict], config: FinetuneConfig, steps_per_epoch: int, train_labels: np.ndarray, n_classes: int,
    device: torch.device, *, use_bf16: bool,
) -> Trainer:  # fmt: skip
    """timm's optimizer and per-update cosine schedule, timm's Mixup (or None), and the loss (class-weighted
    with ``config.class_weight="balanced"``: scikit-learn's n / (K * count) per class)."""
    from timm.data import Mixup
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(groups, opt=config.optimizer, lr=config.head_lr, weight_decay=config.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=config.epochs,
        warmup_epochs=config.warmup_epochs,
        warmup_lr=config.head_lr * 1e-3,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    mixup = None
    if config.mixup > 0:
        mixup = Mixup(mixup_alpha=config.mixup, label_smoothing=config.label_smoothing, num_classes=n_classes)
    weight = None
    if config.class_weight == "balanced":
        weight = torch.as_tensor(class_weights(train_labels, n_classes), dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.0 if mixup else config.label_smoothing)
    return Trainer(optimizer, scheduler, criterion, mixup, config.grad_clip, np.random.default_rng(config.seed),
                   device, use_bf16)  # fmt: skip


@dataclass
class Trainer:
    """What every epoch of one run uses: timm's optimizer and per-update schedule, the loss, Mixup (or None),
    the gradient clip, the seeded generator of the batch order, the device and whether to autocast."""

    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    criterion: nn.Module
    mixup: Callable | None
    grad_clip: float | None
    rng: np.random.Generator
    device: torch.device
    use_bf16: bool

    def train_epoch(
        self, model: nn.Module, batches: Batches, labels: torch.Tensor, batch_size: int, updates: int
    ) -> tuple[float, int]:
        """One pass over the train split (``updates``: optimizer steps so far); the mean loss and the steps
        after it. The loss stays on the device and is checked every few updates."""
        model.train()
        order = self.rng.permutation(len(batches))
        total = torch.zeros((), device=self.device)
        checked = updates
        for rows, inputs in batches.iterate(order, batch_size):
            target = labels[rows].to(self.device, non_blocking=True)
            if self.mixup is not None and len(rows) % 2 == 0:
                inputs, target = self.mixup(inputs, target)
            with autocast(self.device, self.use_bf16):
                loss = self.criterion(model(inputs).float(), target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.optimizer.step()
            updates += 1
            self.scheduler.step_update(updates)
            total += loss.detach() * len(rows)
            if updates - checked >= FINITE_CHECK_EVERY:
                _check_finite(total, checked, updates)
                checked = updates
        _check_finite(total, checked, updates)
        return float(total) / max(len(order), 1), updates


def _check_finite(total: torch.Tensor, since: int, updates: int) -> None:
    """Stop a diverged run (NaN or infinite loss) rather than train on garbage for the epochs left."""
    value = float(total)  # the one host synchronisation, every FINITE_CHECK_EVERY updates
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"the training loss became {value} between updates {since + 1} and {updates} "
            "(learning rate too high for this model?)"
        )
