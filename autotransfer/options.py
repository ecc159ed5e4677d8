"""The parameters of one run and their defaults, written once: the API's constructor, the CLI's
options and the search settings all read ``RunOptions``. Light on purpose (no torch, no optuna), so
that `autotransfer --help` can show the defaults without importing the engine."""

from __future__ import annotations

import os
from dataclasses import dataclass

BACKENDS = ("optuna", "ray")
DEFAULT_PROFILE_BACKBONE = "mobilenetv2_100"  # the BatchNorm backbone the profiler measures with


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
    metric : what the search maximises: ``auto`` (balanced accuracy when the training classes are
        imbalanced from 3:1, else accuracy), ``accuracy``, ``balanced_accuracy``, ``f1_macro``,
        ``roc_auc`` (two classes) or ``log_loss`` (AutoGluon's names).
    ensemble : average the best few configurations' probabilities when validation says it beats the best
        one alone (the space's ``ensemble`` key can turn it off too); ``False``: always one configuration.
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
    metric: str = "auto"
    ensemble: bool = True


DEFAULTS = RunOptions()
