"""The fine-tuning half of the recipe: one trainer for every strategy a search trial may ask for.

- a new linear head on any tap (the network above the tap is never run: a hook stops the forward);
- freeze depth: the lowest ``freeze_groups`` depth groups get no gradient and keep their BatchNorm
  statistics (eval mode), unless ``train_bn_stats`` lets them adapt (AdaBN);
- per-layer learning rates: the head gets ``head_lr``, the top trainable group
  ``head_lr * backbone_lr_ratio``, and each group below it ``layer_decay`` times the one above;
- LP-FT: the head is first trained alone on cached tap features, then everything trainable is
  fine-tuned starting from that head;
- a cached frozen prefix: when the lowest groups are frozen and there is no augmentation, their
  output is computed once and training runs only the layers above (transfer/prefix_cache.py: checked
  equal to the full forward before it is used, bounded in memory);
- batches streamed from the decode cache by index (transfer/batches.py), never a split copied whole;
- AdamW or SGD from timm's optimizer factory, cosine schedule with warm-up from timm's scheduler
  factory, label smoothing, optional flips and mixup (timm), gradient clipping, bf16 autocast,
  channels_last, early stopping, a per-epoch ``report`` hook for pruning, the best epoch kept.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autotransfer.budget import Deadline
from autotransfer.data.datasets import Dataset
from autotransfer.errors import AutoTransferError
from autotransfer.models.features import normalisation
from autotransfer.models.zoo import Backbone
from autotransfer.runtime import bf16_supported, default_device
from autotransfer.settings import cache_dir
from autotransfer.transfer.augment import build_transform
from autotransfer.transfer.batches import Batches, ImageRows, image_input
from autotransfer.transfer.checkpoint import EpochRecord, Progress, best_words, resumed, save_checkpoint
from autotransfer.transfer.feature_rows import tap_rows
from autotransfer.transfer.metrics import check_metric
from autotransfer.transfer.prefix_cache import (
    build_prefix_caches,
    prefix_input,
    prefix_matches,
    prefix_units,
    skipped_prefix,
)
from autotransfer.transfer.probes import ProbeOptions, as_linear, fit_probe
from autotransfer.transfer.strategies import get_strategy
from autotransfer.transfer.train_loop import Trainer, evaluate, is_oom, optimisation, seeded_global_rngs
from autotransfer.transfer.transfer_model import TransferModel, freeze, param_groups

log = logging.getLogger(__name__)

MIN_BATCH_SIZE = 4  # out-of-memory retries halve the batch size down to this


class TrialPruned(Exception):
    """Raised by a ``report`` hook to stop a run that is not promising (the search's pruner)."""


@dataclass(frozen=True)
class FinetuneConfig:
    # A name of autotransfer.transfer.strategies.STRATEGIES; finetune_top with freeze_groups=0 trains every group.
    strategy: str = "finetune_top"
    tap: str = "head"
    freeze_groups: int = 0
    train_bn_stats: bool = False
    head_lr: float = 1e-3
    backbone_lr_ratio: float = 0.01
    layer_decay: float = 1.0
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    epochs: int = 10
    warmup_epochs: int = 1
    batch_size: int = 64
    label_smoothing: float = 0.1
    flip: bool = False
    randaugment: str | None = None  # a timm RandAugment spec, e.g. "rand-m9-mstd0.5" (its magnitude is used)
    crop_scale: float | None = None  # random-resized crops of (crop_scale..1) of the image, back to its size
    rotate: float = 0.0  # degrees of random rotation (and vertical flips): only without a canonical orientation
    mixup: float = 0.0
    grad_clip: float | None = 1.0
    # "auto": bf16 autocast on GPUs only. On the AVX-512-BF16 CPUs we build on it speeds up ResNet
    # training (1.4x) but slows depthwise MobileNet/EfficientNet training (0.76x, benchmarks/finetune.py).
    bf16: bool | str = "auto"
    patience: int = 3
    lp_epochs: int = 20
    cache_prefix: bool = True
    keep: str = "best"  # "best": the best validation epoch; "last": the final epoch (a refit on train+val)
    seed: int = 0
    # "balanced": cross-entropy (and the LP-FT probe) weighted n / (K * count) per class (sklearn's weights)
    class_weight: str | None = None
    metric: str = "accuracy"  # what picks the best epoch (autotransfer.transfer.metrics.METRICS)

    def frozen_groups(self, n_groups: int) -> int:
        """Probes freeze every group, ``lp_ft``/``finetune_top`` the lowest ``freeze_groups``, the rest none."""
        return get_strategy(self.strategy).frozen_groups(n_groups, self.freeze_groups)

    def validate(self, backbone: Backbone) -> FinetuneConfig:
        if self.epochs < 1 or self.batch_size < 1:
            raise AutoTransferError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size}).")
        get_strategy(self.strategy)  # raises for an unknown name
        check_metric(self.metric)
        backbone.tap_parts(self.tap)
        n = len(backbone.depth_groups)
        if not 0 <= self.freeze_groups <= n:
            raise AutoTransferError(f"freeze_groups={self.freeze_groups} is outside 0..{n} for {backbone.name}.")
        if self.head_lr <= 0 or self.backbone_lr_ratio < 0 or not 0 < self.layer_decay <= 1:
            raise AutoTransferError("Learning rates must be positive, the ratio >= 0 and 0 < layer_decay <= 1.")
        if self.keep not in ("best", "last"):
            raise AutoTransferError(f"keep must be 'best' or 'last', got {self.keep!r}.")
        if self.class_weight not in (None, "balanced"):
            raise AutoTransferError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}.")
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1 or not 0 <= self.rotate <= 180:
            raise AutoTransferError(
                f"Need 0 < crop_scale <= 1 and 0 <= rotate <= 180 (got {self.crop_scale}, {self.rotate})."
            )
        if self.randaugment:
            _randaugment_magnitude(self.randaugment)
        if self.optimizer not in ("adamw", "sgd"):
            raise AutoTransferError(f"Unknown optimizer {self.optimizer!r}.", fix="use adamw or sgd.")
        return self


@dataclass
class FinetuneResult:
    """The trained model (best epoch) and how it got there."""

    model: TransferModel
    best_val_accuracy: float  # accuracy of the best epoch (chosen by ``best_val_score``)
    best_epoch: int
    history: list[EpochRecord]
    group_lrs: dict[str, float]
    used_cached_prefix: bool
    seconds: float
    config: dict = field(default_factory=dict)
    best_val_score: float | None = None  # the config's metric at the best epoch


def _randaugment_magnitude(spec: str) -> int:
    """torchvision's RandAugment magnitude (0-30) for a timm spec's ``m`` (0-10), e.g. "rand-m9-mstd0.5" -> 27."""
    match = re.match(r"rand(?:-[a-z]+\d*(?:\.\d+)?)*?-m(\d+)", spec)
    if not spec.startswith("rand") or match is None:
        raise AutoTransferError(f"Bad RandAugment spec {spec!r}: no magnitude", fix="use e.g. 'rand-m9-mstd0.5'.")
    return min(30, round(int(match.group(1)) * 3))


def _augmentation(config: FinetuneConfig, size: int) -> Callable | None:
    """The per-image training transform the config asks for (transfer/augment.py), or None."""
    magnitude = _randaugment_magnitude(config.randaugment) if config.randaugment else None
    return build_transform(
        size=size, flip=config.flip, crop_scale=config.crop_scale, rotate=config.rotate, randaugment_magnitude=magnitude
    )


def linear_probe_head(dataset: Dataset, backbone: Backbone, config: FinetuneConfig, device) -> nn.Linear:
    """LP-FT's first stage: a linear probe on the (cached) pooled tap features, regularisation chosen
    on val (probes.fit_probe), folded into one nn.Linear on the raw features."""
    features = tap_rows(dataset, backbone, config.tap, bf16=config.bf16 is not False, device=device)
    train, val = dataset.indices("train"), dataset.indices("val")
    probe = fit_probe(
        features.take(train),
        dataset.labels[train],
        features.take(val),
        dataset.labels[val],
        ProbeOptions(heads=("torch",), seed=config.seed, class_weight=config.class_weight),
    ).model
    head = nn.Linear(features.shape[1], len(dataset.classes))
    weight, bias = as_linear(probe, len(dataset.classes))
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias.clamp(min=-10.0))  # classes absent from train: low, but still trainable
    return head.to(device)


@dataclass
class _Inputs:
    """What an epoch reads: batches of train / val inputs (images, or the cached frozen prefix's output)."""

    train: Batches
    val: Batches
    labels_train: torch.Tensor
    labels_val: torch.Tensor
    prefix_units: list[str]  # skipped during training (their output is cached); empty when not cached


def _inputs(
    dataset: Dataset, backbone: Backbone, model: TransferModel, config: FinetuneConfig, device, use_bf16,
    folder: Path | None = None,
) -> _Inputs:  # fmt: skip
    """Train/val batches read from the decode cache by index; with a frozen prefix and no augmentation,
    its output is computed once here (prefix_cache.py: in RAM, memory-mapped in ``folder``, or skipped)."""
    train_rows, val_rows = dataset.indices("train"), dataset.indices("val")
    if len(val_rows) == 0:
        raise AutoTransferError(
            "The validation split is empty: fine-tuning needs it for early stopping.",
            fix="use more images per class, or a larger val_fraction.",
        )
    mean, std = normalisation(backbone, device)
    frozen = config.frozen_groups(len(backbone.depth_groups))
    # Augmentation changes every image every epoch, so no prefix output can be cached (the epoch estimate
    # of search/planner.py counts the frozen prefix's forward then).
    augmented = config.flip or bool(config.randaugment) or config.crop_scale is not None or config.rotate > 0
    augmented = augmented or config.mixup > 0
    cacheable = config.cache_prefix and frozen > 0 and not config.train_bn_stats and not augmented
    units = prefix_units(backbone, frozen, config.tap) if cacheable else []
    labels_train = torch.as_tensor(dataset.labels[train_rows])
    labels_val = torch.as_tensor(dataset.labels[val_rows])
    caches = None
    if units:
        prepare = image_input(mean, std)
        sources = [Batches(ImageRows(dataset.images, rows), prepare, device) for rows in (train_rows, val_rows)]
        caches = build_prefix_caches(
            model, units, sources, batch_size=config.batch_size, use_bf16=use_bf16,
            folder=folder or cache_dir() / "prefix",
        )  # fmt: skip
    if caches is not None:
        sample = np.asarray(dataset.images[val_rows[:4]])
        if prefix_matches(
            model, units, sample, caches[1].__getitems__(list(range(len(sample)))), mean, std, device, use_bf16
        ):
            train, val = (Batches(c, prefix_input, device, seed=config.seed) for c in caches)
            return _Inputs(train, val, labels_train, labels_val, units)
        log.info("cached prefix does not reproduce the full forward for %s; training without it", backbone.name)
    transform = _augmentation(config, int(dataset.images.shape[1]))  # per image, in the streaming Dataset
    prepare = image_input(mean, std)
    train = Batches(ImageRows(dataset.images, train_rows, transform), prepare, device, seed=config.seed)
    val = Batches(ImageRows(dataset.images, val_rows), prepare, device, seed=config.seed)
    return _Inputs(train, val, labels_train, labels_val, [])


def finetune(
    dataset: Dataset,
    backbone: Backbone,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    report: Callable[[int, float], None] | None = None,
    device: torch.device | str | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    deadline: Deadline | None = None,
) -> FinetuneResult:
    """Train ``backbone`` on ``dataset`` (train split; selection on val) as ``config`` says.

    ``report(epoch, val_score)`` is called after every epoch (``config.metric`` on val: accuracy by
    default; the best epoch is chosen by it) and may raise ``TrialPruned``.
    Out-of-memory errors halve the batch size and retry the epoch (logged), down to ``MIN_BATCH_SIZE``.
    With ``checkpoint_dir`` progress and the best weights are saved there (JSON + safetensors);
    ``resume`` continues after the last finished epoch from the best weights (the optimizer state
    starts afresh); a run that had already finished returns the checkpointed model. With ``deadline``
    training stops before an epoch that would not finish in the time left (the best epoch so far is kept).
    """
    start_time = time.perf_counter()
    config = config.validate(backbone)
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(config.seed)
    wanted = device.type == "cuda" if config.bf16 == "auto" else bool(config.bf16)
    use_bf16 = wanted and bf16_supported(device)
    model = TransferModel(backbone, config.tap, len(dataset.classes)).to(device)
    model.backbone.to(memory_format=torch.channels_last)
    resuming = resume and checkpoint_dir is not None and (checkpoint_dir / "best.json").exists()
    if get_strategy(config.strategy).starts_from_probe and not resuming:  # a resumed head comes from the checkpoint
        model.head.load_state_dict(linear_probe_head(dataset, backbone, config, device).state_dict())
    freeze(model, backbone, config)
    groups, group_lrs = param_groups(model, backbone, config)
    log.debug("learning rates: %s", ", ".join(f"{k} {v:.2e}" for k, v in group_lrs.items()))
    inputs = _inputs(dataset, backbone, model, config, device, use_bf16, checkpoint_dir)
    steps_per_epoch = math.ceil(len(inputs.labels_train) / config.batch_size)
    trainer = optimisation(
        groups, config, steps_per_epoch, dataset.labels[dataset.indices("train")], len(dataset.classes), device,
        use_bf16=use_bf16,
    )  # fmt: skip
    progress = resumed(model, checkpoint_dir, resume)
    updates = progress.first_epoch * steps_per_epoch
    trainer.scheduler.step_update(updates)
    batch_size = config.batch_size
    with skipped_prefix(model.backbone, inputs.prefix_units), seeded_global_rngs(config.seed):
        for epoch in range(progress.first_epoch, config.epochs):
            tic = time.perf_counter()
            train_loss, updates, batch_size = _epoch_with_retry(trainer, model, inputs, batch_size, updates, epoch)
            val_loss, val_accuracy, val_score = evaluate(
                model, inputs.val, inputs.labels_val, batch_size, device, use_bf16, config.metric
            )
            seconds = time.perf_counter() - tic
            record = EpochRecord(epoch, train_loss, val_loss, val_accuracy, seconds, batch_size, val_score)
            progress.history.append(record)
            if _after_epoch(model, config, progress, record, checkpoint_dir, report, deadline):
                break
    missing, _ = model.load_state_dict(progress.best_state, strict=False)
    assert all(any(k.startswith(f"backbone.{u}.") for u in inputs.prefix_units) for k in missing), missing
    model.eval()
    return FinetuneResult(
        model,
        progress.best_accuracy,
        progress.best_epoch,
        progress.history,
        group_lrs,
        bool(inputs.prefix_units),
        time.perf_counter() - start_time,
        asdict(config),
        progress.best_score,
    )


def _epoch_with_retry(
    trainer: Trainer, model: TransferModel, inputs: _Inputs, batch_size: int, updates: int, epoch: int
) -> tuple[float, int, int]:
    """One training epoch; out of memory, it restarts with half the batch size, down to MIN_BATCH_SIZE.
    The mean loss, the updates after it and the batch size it ran at."""
    while True:
        try:
            loss, updates = trainer.train_epoch(model, inputs.train, inputs.labels_train, batch_size, updates)
            return loss, updates, batch_size
        except (RuntimeError, MemoryError) as error:
            if not is_oom(error) or batch_size // 2 < MIN_BATCH_SIZE:
                raise
            batch_size //= 2
            log.warning("out of memory: epoch %d restarts with batch size %d", epoch + 1, batch_size)
            if trainer.device.type == "cuda":
                torch.cuda.empty_cache()


def _after_epoch(
    model: TransferModel,
    config: FinetuneConfig,
    progress: Progress,
    record: EpochRecord,
    checkpoint_dir: Path | None,
    report: Callable[[int, float], None] | None,
    deadline: Deadline | None,
) -> bool:
    """Keep the best epoch, checkpoint, report; whether training stops here (early stop or budget)."""
    epoch = record.epoch
    improved = record.val_score > progress.best_score or config.keep == "last"
    if improved:  # the skipped (frozen) prefix is not in this state: it does not change
        progress.best_score, progress.best_accuracy, progress.best_epoch = record.val_score, record.val_accuracy, epoch
        progress.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if checkpoint_dir is not None:
        meta = {
            "last_epoch": epoch,
            "best_epoch": progress.best_epoch,
            "val_accuracy": progress.best_accuracy,
            "val_score": progress.best_score,
            "config": asdict(config),
            "history": [asdict(h) for h in progress.history],
        }
        save_checkpoint(checkpoint_dir, progress.best_state if improved else None, meta)
    if report is not None:
        report(epoch, record.val_score)
    if epoch - progress.best_epoch >= config.patience:
        log.info("early stop after %d epoch(s) (%s)", epoch + 1, best_words(config.metric, progress))
        return True
    if deadline is not None and deadline.left() < progress.history[-1].seconds and epoch + 1 < config.epochs:
        log.info("time budget: stopped after %d epoch(s) (%s)", epoch + 1, best_words(config.metric, progress))
        return True
    return False
