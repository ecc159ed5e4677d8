"""``SearchSettings``: the validated form of a run's ``RunOptions`` (autotransfer/options.py, where
every parameter and default is written once), as the search uses it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import optuna

from autotransfer.budget import format_duration, parse_duration
from autotransfer.errors import AutoTransferError
from autotransfer.models.zoo import check_backbone_names
from autotransfer.options import BACKENDS, DEFAULTS, RunOptions
from autotransfer.runtime import checked_device
from autotransfer.search import planner
from autotransfer.search.space import SearchSpace, load_search_space
from autotransfer.search.storage import check_storage_url
from autotransfer.transfer.metrics import check_metric


@dataclass
class SearchSettings:
    """A validated run: the options as given (``options``, autotransfer/options.py) and what was resolved
    from them (the space loaded, the budget in seconds, the run directory chosen, the device and the metric
    checked), the Optuna sampler and pruner (``None``: TPE and Hyperband), and the monotonic time the
    budget started."""

    space: SearchSpace
    time_budget: float
    out: Path
    options: RunOptions = DEFAULTS
    device: str | None = None
    metric: str = DEFAULTS.metric
    sampler: optuna.samplers.BaseSampler | None = None
    pruner: optuna.pruners.BasePruner | None = None
    start: float = field(default_factory=time.monotonic)


def check_budget_floor(seconds: float) -> float:
    """Refuse at once a budget below what any run needs before its first feature extraction (one
    probe and saving: planner.minimum_budget); the data-dependent minimum is checked once timed."""
    floor = planner.minimum_budget(0.0, 0.0)
    if seconds < floor:
        raise AutoTransferError(
            f"The time budget ({format_duration(seconds)}) is too small: any run needs at least "
            f"{format_duration(floor)} for one linear probe and saving, plus the feature extraction of its images.",
            fix="raise --time-budget: with one above that, fit times your images and names their minimum if it "
            "is still short.",
        )
    return seconds


def default_run_dir(root: str | os.PathLike = "runs") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


def resolve_settings(
    options: RunOptions,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    start: float | None = None,
) -> SearchSettings:
    """Validate ``options``; raises AutoTransferError naming the bad value."""
    if options.backend not in BACKENDS:
        raise AutoTransferError(f"Unknown backend {options.backend!r}.", fix=f"use one of {', '.join(BACKENDS)}.")
    if not 0.0 < options.val_fraction < 0.9:
        raise AutoTransferError(f"val_fraction must be between 0 and 0.9, got {options.val_fraction}.")
    if options.cpus_per_trial <= 0 or options.gpus_per_trial < 0:
        raise AutoTransferError("cpus_per_trial must be > 0 and gpus_per_trial >= 0.")
    time_budget = check_budget_floor(parse_duration(options.time_budget))
    if options.storage:
        check_storage_url(options.storage)
    check_backbone_names([options.profile_backbone], where="--profile-backbone")
    return SearchSettings(
        space=load_search_space(options.search_space),
        time_budget=time_budget,
        out=Path(options.out) if options.out is not None else default_run_dir(),
        options=options,
        device=checked_device(options.device),
        metric=check_metric(options.metric) if options.metric != "auto" else "auto",
        sampler=sampler,
        pruner=pruner,
        start=start if start is not None else time.monotonic(),
    )
