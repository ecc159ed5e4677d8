"""One fine-tuning trial, the same body for the Optuna backend (search/finetune_stage.py) and the Ray
Tune backend (search/ray_backend.py): ``run_trial(params, context, reporter)``.

The body decides what the trial records (TrialRecord fields, search/records.py) and trains it; the
``TrialReporter`` is the backend's side: how many epochs the trial gets, where its record goes and who
may stop it after an epoch (Optuna: ``trial.set_user_attr``/``report``/``should_prune`` and the budget;
Ray: ``tune.report``, with ASHA and the budget deciding). So both backends write the same record.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from autotransfer.data.datasets import Dataset, load_dataset
from autotransfer.models.zoo import Backbone, create_backbone
from autotransfer.search.candidates import Candidate
from autotransfer.search.space import SearchSpace
from autotransfer.search.trials import config_for
from autotransfer.transfer.finetune import finetune


class TrialData(Protocol):
    """Where a trial gets its decoded images and its backbone (RunContext in the driver, FolderData on a worker)."""

    def dataset(self, resolution: int) -> Dataset: ...

    def backbone(self, name: str) -> Backbone: ...


@dataclass(frozen=True, kw_only=True)
class FolderData:
    """The run's data folder, decoded on a Ray worker (plain values: Ray pickles it to send it there)."""

    data: str
    seed: int
    val_fraction: float
    device: str

    def dataset(self, resolution: int) -> Dataset:
        return load_dataset(self.data, image_size=resolution, seed=self.seed, val_fraction=self.val_fraction,
                            show_progress=False, warn=False)  # fmt: skip  # the driver warned when it loaded the data

    def backbone(self, name: str) -> Backbone:
        return create_backbone(name, device=self.device)


@dataclass(frozen=True, kw_only=True)
class TrialContext:
    """What every fine-tuning trial of a run shares besides its parameters: the space, the seed, the
    objective's metric and rotation, the run directory, the device and where the data comes from."""

    space: SearchSpace
    seed: int
    metric: str
    rotate: float
    out: Path
    device: str | None
    data: TrialData


class TrialReporter(Protocol):
    """The backend's side of one trial."""

    name: str  # the trial's folder under ``trials/`` in the run directory

    def epochs(self, params: dict) -> tuple[int, str]:
        """The epochs this trial gets, and why (the leaderboard's ``epochs_why``)."""

    def record(self, **fields: Any) -> None:
        """Keep TrialRecord ``fields`` for the trial's record."""

    def start(self) -> None:
        """Called once the trial's fixed fields are recorded; raises TrialPruned when it must not start."""

    def epoch(self, epoch: int, value: float) -> None:
        """After ``epoch`` (0-based) scored ``value`` (the run's metric on val); raises TrialPruned to stop."""


def run_trial(params: dict, context: TrialContext, reporter: TrialReporter, *, continues: Path | None = None) -> float:
    """Fine-tune one configuration for the epochs ``reporter`` gives it, recording its fields through
    ``reporter``; its best validation score (the run's metric). TrialPruned from the reporter ends it
    (its best epoch is checkpointed and recorded). ``continues``: the checkpoint folder of an earlier
    trial of the same configuration, to train on from (its weights, epochs and best epoch; the
    cosine schedule picks up where those epochs leave it in the longer one, and the optimizer's
    state starts afresh: transfer/finetune.py ``resume``)."""
    candidate = Candidate.parse(params["candidate"])
    dataset = context.data.dataset(candidate.resolution)
    backbone = context.data.backbone(candidate.backbone)
    epochs, why = reporter.epochs(params)
    config = config_for(params, space=context.space, n_groups=len(backbone.depth_groups), seed=context.seed,
                        epochs=epochs, metric=context.metric, rotate=context.rotate)  # fmt: skip
    folder = context.out / "trials" / reporter.name
    reporter.record(
        backbone=candidate.backbone,
        resolution=candidate.resolution,
        tap=candidate.tap,
        stage="finetune",
        strategy=params["strategy"],
        freeze_groups=config.freeze_groups,
        n_groups=len(backbone.depth_groups),
        metric=context.metric,
        epochs_planned=epochs,
        epochs_why=why,
        checkpoint_dir=str(folder),
    )
    first_epoch, best = 0, -float("inf")
    if continues is not None:
        meta = _copy_checkpoint(continues, folder)
        first_epoch, best = meta["last_epoch"] + 1, meta.get("val_score", meta["val_accuracy"])
        reporter.record(best_epoch=meta["best_epoch"], best_val_score=best, best_val_accuracy=meta["val_accuracy"],
                        epochs_run=first_epoch)  # fmt: skip
    reporter.start()
    tic = time.perf_counter()

    def report(epoch: int, value: float) -> None:
        nonlocal best
        if value > best:  # as the trainer keeps it: the first epoch with the best score
            best = value
            reporter.record(best_epoch=epoch, best_val_accuracy=_best_accuracy(folder))
        per_epoch = (time.perf_counter() - tic) / (epoch + 1 - first_epoch)
        reporter.record(best_val_score=best, epoch_seconds=per_epoch, epochs_run=epoch + 1)
        reporter.epoch(epoch, value)

    result = finetune(dataset, backbone, config, report=report, device=context.device, checkpoint_dir=folder,
                      resume=continues is not None)  # fmt: skip
    last = result.history[-1].epoch + 1 if result.history else first_epoch
    if last < epochs:  # the trainer's early stop (the pruner and the budget raise instead): said in the record
        reporter.record(stopped=f"early stop after epoch {last}: the best was epoch {result.best_epoch + 1}, "
                                f"{config.patience} epoch(s) without improvement")  # fmt: skip
    return result.best_val_score


def _copy_checkpoint(source: Path, folder: Path) -> dict[str, Any]:
    """Copy the checkpoint in ``source`` to ``folder`` (where ``finetune`` resumes from it); its progress
    (transfer/checkpoint.py: ``last_epoch``, ``best_epoch``, ``val_score``, ...). Raises FileNotFoundError
    when ``source`` holds no checkpoint (the trial fails with that reason)."""
    if not (source / "best.json").exists():
        raise FileNotFoundError(f"no checkpoint to train on from in {source}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("best.safetensors", "best.json"):
        shutil.copyfile(source / name, folder / name)
    return json.loads((folder / "best.json").read_text())


def _best_accuracy(folder: Path) -> float | None:
    """The best epoch's validation accuracy, from the checkpoint the trainer wrote before reporting it."""
    try:
        return json.loads((folder / "best.json").read_text()).get("val_accuracy")
    except (OSError, ValueError):
        return None
