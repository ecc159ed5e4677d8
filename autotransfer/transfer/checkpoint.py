"""Fine-tuning checkpoints: the best weights (safetensors) and the progress (JSON) after every epoch, and
resuming from them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from autotransfer.files import replacing, write_text_atomic
from autotransfer.transfer.transfer_model import TransferModel

log = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    batch_size: int
    val_score: float | None = None  # the config's metric on val (None in checkpoints of older versions)


def save_checkpoint(folder: Path, state: dict[str, torch.Tensor] | None, meta: dict) -> None:
    """Progress after every epoch (JSON) and the best weights when they improve (safetensors);
    each file is replaced atomically, the weights first, so the JSON never names missing weights."""
    folder.mkdir(parents=True, exist_ok=True)
    if state is not None:
        with replacing(folder / "best.safetensors") as partial:
            save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
    write_text_atomic(folder / "best.json", json.dumps(meta))


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    try:
        meta = json.loads((folder / "best.json").read_text())
        return load_file(str(folder / "best.safetensors")), meta
    except (OSError, ValueError):
        return None


@dataclass
class Progress:
    """Where training stands: epochs done, and the best epoch's accuracy, index and weights."""

    history: list[EpochRecord] = field(default_factory=list)
    best_score: float = -float("inf")
    best_accuracy: float = -1.0
    best_epoch: int = -1
    best_state: dict | None = None
    first_epoch: int = 0


def resumed(model: TransferModel, checkpoint_dir: Path | None, resume: bool) -> Progress:
    """The progress of an earlier run in ``checkpoint_dir`` (its best weights loaded), or a fresh start."""
    saved = load_checkpoint(checkpoint_dir) if (resume and checkpoint_dir is not None) else None
    if saved is None:
        return Progress()
    state, meta = saved
    model.load_state_dict(state, strict=False)  # a cached-prefix run saved no (frozen) prefix tensors
    progress = Progress(
        [EpochRecord(**h) for h in meta["history"]], meta.get("val_score", meta["val_accuracy"]),
        meta["val_accuracy"], meta["best_epoch"], state,
        meta["last_epoch"] + 1,
    )  # fmt: skip
    metric = meta.get("config", {}).get("metric", "accuracy")
    log.info(
        "resumed from %s after %d epoch(s) (%s)", checkpoint_dir, meta["last_epoch"] + 1, best_words(metric, progress)
    )
    return progress


def best_words(metric: str, progress: Progress) -> str:
    """ "best val balanced_accuracy 0.7059 at epoch 3": the score the best epoch was chosen by, named; epochs
    counted from 1 in words, as the leaderboard's epochs_run counts them (``best_epoch`` itself is 0-based)."""
    if metric == "log_loss":  # scored as its negative (transfer/metrics.py): the loss itself
        return f"best val log_loss {-progress.best_score:.4f} at epoch {progress.best_epoch + 1}"
    return f"best val {metric} {progress.best_score:.4f} at epoch {progress.best_epoch + 1}"
