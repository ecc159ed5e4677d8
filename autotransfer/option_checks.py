"""The checks of a run's options that need neither torch nor Optuna, run before any heavy import.

A bad ``--metric``, ``--storage``, ``--profile-backbone``, ``--search-space`` (a file that is not there),
``--device`` (a name that is none) or ``--time-budget`` is answered in well under a second
(benchmarks/startup.py), before the engine is imported, profiling starts or a run folder exists.
``search/settings.py::resolve_settings`` runs them too (the Python API's path), then the checks that need
the engine (the search space's contents, whether this machine has the device). Each error names its
option (errors.py).
"""

from __future__ import annotations

import re

from autotransfer.budget import format_duration, parse_duration
from autotransfer.errors import AutoTransferError
from autotransfer.metric_names import METRICS
from autotransfer.options import BACKENDS, RunOptions
from autotransfer.search import planner

DEVICE_NAME = re.compile(r"(cpu|cuda)(:\d+)?")  # what runtime.checked_device accepts; torch says if it is there


def check_budget_floor(seconds: float) -> float:
    """Refuse at once a budget below what any run needs before its first feature extraction (one
    probe and saving: planner.minimum_budget); the data-dependent minimum is checked once timed."""
    floor = planner.minimum_budget(0.0, 0.0)
    if seconds < floor:
        raise AutoTransferError(
            f"The time budget ({format_duration(seconds)}) is too small: any run needs at least "
            f"{format_duration(floor)} for one linear probe and saving, plus the feature extraction of its images.",
            where="{option}",
            fix="raise {option}: with one above that, fit times your images and names their minimum if it "
            "is still short.",
            option="time_budget",
        )
    return seconds


def check_metric_name(name: str) -> str:
    """``auto`` or a known metric's name (whether it suits the data is decided once the classes are known)."""
    if name != "auto" and name not in METRICS:
        raise AutoTransferError(
            f"Unknown metric {name!r}.", where="{option}", fix=f"use auto or one of {', '.join(METRICS)}.",
            option="metric",
        )  # fmt: skip
    return name


def check_device_name(name: str | None) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` (None: the default); whether this machine has it needs torch
    (runtime.checked_device)."""
    if name is not None and not DEVICE_NAME.fullmatch(str(name)):
        raise AutoTransferError(
            f"Unknown device {name!r}.", where="{option}", fix="use cpu or cuda (cuda:N for another GPU).",
            option="device",
        )  # fmt: skip


def check_options_early(options: RunOptions) -> float:
    """Every cheap check of ``options``; the budget in seconds. Raises AutoTransferError naming the option."""
    from autotransfer.models.backbone_names import check_backbone_name
    from autotransfer.search.space import load_search_space
    from autotransfer.search.space_files import space_path
    from autotransfer.storage_url import check_storage_url

    if options.backend not in BACKENDS:
        raise AutoTransferError(
            f"Unknown backend {options.backend!r}.", where="{option}", fix=f"use one of {', '.join(BACKENDS)}.",
            option="backend",
        )  # fmt: skip
    if not 0.0 < options.val_fraction < 0.9:
        raise AutoTransferError(
            f"{{option}} must be between 0 and 0.9, got {options.val_fraction}.", where="{option}",
            fix="give a share such as 0.2.", option="val_fraction",
        )  # fmt: skip
    if options.cpus_per_trial <= 0:
        raise AutoTransferError(
            f"{{option}} must be > 0, got {options.cpus_per_trial}.", where="{option}",
            fix="give a positive number of CPUs per trial (fractions allowed).", option="cpus_per_trial",
        )  # fmt: skip
    if options.gpus_per_trial < 0:
        raise AutoTransferError(
            f"{{option}} must be >= 0, got {options.gpus_per_trial}.", where="{option}",
            fix="give zero or more GPUs per trial (fractions allowed).", option="gpus_per_trial",
        )  # fmt: skip
    seconds = check_budget_floor(parse_duration(options.time_budget))
    check_metric_name(options.metric)
    check_device_name(options.device)
    space = load_search_space(options.search_space)  # the whole file checked, before torch is imported
    for name in space.backbones:  # named with the file and key they came from
        check_backbone_name(name, where=f"{space_path(options.search_space)}, key backbones")
    if options.storage:
        check_storage_url(options.storage)
    check_backbone_name(options.profile_backbone, where="{option}", option="profile_backbone")
    return seconds
