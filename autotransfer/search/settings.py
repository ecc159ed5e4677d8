"""``SearchSettings``: the validated form of a run's ``RunOptions`` (autotransfer/options.py, where
every parameter and default is written once), as the search uses it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import optuna

from autotransfer.option_checks import check_options_early
from autotransfer.options import DEFAULTS, RunOptions
from autotransfer.runtime import checked_device
from autotransfer.search.space import SearchSpace, load_search_space
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


def default_run_dir(root: str | os.PathLike = "runs") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


def resolve_settings(
    options: RunOptions,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    start: float | None = None,
) -> SearchSettings:
    """Validate ``options``; raises AutoTransferError naming the bad value (the cheap checks first)."""
    time_budget = check_options_early(options)
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
