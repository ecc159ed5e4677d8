"""The parameters of one run, and their defaults, written once: the API's constructor, the CLI's
options and the search all read ``RunOptions``; ``SearchSettings`` is the validated form a run uses.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import optuna

from autotransfer.budget import parse_duration
from autotransfer.errors import AutoTransferError
from autotransfer.search.space import SearchSpace, load_search_space
from autotransfer.transfer.profile import DEFAULT_BACKBONE as DEFAULT_PROFILE_BACKBONE

BACKENDS = ("optuna", "ray")


@dataclass(frozen=True)
class RunOptions:
    """What a user may set for a run, with the defaults (the CLI's ``--time-budget`` … and the API's arguments).

    Attributes
    ----------
    time_budget : wall-clock budget for everything, saving included: ``"90s"``, ``"10m"`` or seconds.
    search_space : a built-in space (``fast``, ``default``, ``thorough``) or a YAML file.
    backend : ``optuna`` (trials in this process) or ``ray`` (Ray Tune, local or ``ray_address``).
    out : the run directory; ``None``: ``runs/<timestamp>``.
    storage : an Optuna storage URL shared by workers (``postgresql://…``); ``None``: SQLite in ``out``.
    seed : seeds the split, the sampler and every trial.
    val_fraction : share of each class held out for validation when the data has no ``val`` split.
    device : ``cpu``, ``cuda``, ``cuda:1``; ``None``: CUDA when present.
    ray_address : an existing Ray cluster (``ray://host:10001`` or ``auto``); ``None``: a local Ray.
    cpus_per_trial, gpus_per_trial : Ray resources of one fine-tuning trial (fractions allowed).
    profile_backbone : the backbone whose layers the profiler measures.
    """

    time_budget: str | float = "10m"
    search_space: str | os.PathLike = "default"
    backend: str = "optuna"
    out: str | os.PathLike | None = None
    storage: str | None = None
    seed: int = 0
    val_fraction: float = 0.2
    device: str | None = None
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    profile_backbone: str = DEFAULT_PROFILE_BACKBONE


DEFAULTS = RunOptions()


@dataclass
class SearchSettings:
    """A validated run: the options resolved (space loaded, budget in seconds, run directory chosen),
    the Optuna sampler and pruner (``None``: TPE and Hyperband), and the monotonic time the budget started."""

    space: SearchSpace
    time_budget: float
    out: Path
    storage: str | None = None
    seed: int = DEFAULTS.seed
    val_fraction: float = DEFAULTS.val_fraction
    device: str | None = None
    backend: str = DEFAULTS.backend
    ray_address: str | None = None
    cpus_per_trial: float = DEFAULTS.cpus_per_trial
    gpus_per_trial: float = DEFAULTS.gpus_per_trial
    profile_backbone: str = DEFAULTS.profile_backbone
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
    """Validate ``options``; raises AutoTransferError naming the bad value."""
    if options.backend not in BACKENDS:
        raise AutoTransferError(f"Unknown backend {options.backend!r}.", fix=f"use one of {', '.join(BACKENDS)}.")
    if not 0.0 < options.val_fraction < 0.9:
        raise AutoTransferError(f"val_fraction must be between 0 and 0.9, got {options.val_fraction}.")
    if options.cpus_per_trial <= 0 or options.gpus_per_trial < 0:
        raise AutoTransferError("cpus_per_trial must be > 0 and gpus_per_trial >= 0.")
    return SearchSettings(
        space=load_search_space(options.search_space),
        time_budget=parse_duration(options.time_budget),
        out=Path(options.out) if options.out is not None else default_run_dir(),
        storage=options.storage,
        seed=options.seed,
        val_fraction=options.val_fraction,
        device=options.device,
        backend=options.backend,
        ray_address=options.ray_address,
        cpus_per_trial=options.cpus_per_trial,
        gpus_per_trial=options.gpus_per_trial,
        profile_backbone=options.profile_backbone,
        sampler=sampler,
        pruner=pruner,
        start=start if start is not None else time.monotonic(),
    )
