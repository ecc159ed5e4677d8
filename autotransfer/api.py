"""The Python API: ``AutoTransfer(...).fit(data)`` does what ``autotransfer fit`` does.

Constructor arguments are stored as given (the scikit-learn convention: ``get_params`` /
``set_params`` work, validation happens in ``fit``).
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
from sklearn.base import BaseEstimator

from autotransfer.budget import parse_duration
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.errors import AutoTransferError
from autotransfer.search.run import Search, SearchSettings
from autotransfer.search.space import load_search_space

BACKENDS = ("optuna", "ray")


def default_run_dir(root: str | os.PathLike = "runs") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


class AutoTransfer(BaseEstimator):
    """Hands-off transfer learning: profile, search, refit, and return the best pipeline."""

    def __init__(
        self,
        time_budget: str | float = "10m",
        search_space: str | os.PathLike = "default",
        backend: str = "optuna",
        out: str | os.PathLike | None = None,
        storage: str | None = None,
        seed: int = 0,
        val_fraction: float = 0.2,
        device: str | None = None,
        ray_address: str | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        profile_backbone: str = "mobilenetv2_100",
    ) -> None:
        self.time_budget = time_budget
        self.search_space = search_space
        self.backend = backend
        self.out = out
        self.storage = storage
        self.seed = seed
        self.val_fraction = val_fraction
        self.device = device
        self.ray_address = ray_address
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.profile_backbone = profile_backbone

    def settings(self, start: float | None = None) -> SearchSettings:
        """Validated settings of a run (``start``: when the budget started, default now)."""
        if self.backend not in BACKENDS:
            raise AutoTransferError(f"Unknown backend {self.backend!r}.", fix=f"use one of {', '.join(BACKENDS)}.")
        if not 0.0 < self.val_fraction < 0.9:
            raise AutoTransferError(f"val_fraction must be between 0 and 0.9, got {self.val_fraction}.")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise AutoTransferError("cpus_per_trial must be > 0 and gpus_per_trial >= 0.")
        return SearchSettings(
            space=load_search_space(self.search_space),
            time_budget=parse_duration(self.time_budget),
            out=Path(self.out) if self.out is not None else default_run_dir(),
            storage=self.storage,
            seed=self.seed,
            val_fraction=self.val_fraction,
            device=self.device,
            backend=self.backend,
            ray_address=self.ray_address,
            cpus_per_trial=self.cpus_per_trial,
            gpus_per_trial=self.gpus_per_trial,
            profile_backbone=self.profile_backbone,
            start=start if start is not None else time.monotonic(),
        )

    def fit(self, data: str | os.PathLike, start: float | None = None) -> Pipeline:
        """Search ``data`` (an ImageFolder, split folders or a CSV) and return the best pipeline.

        The pipeline (also ``self.pipeline_``) carries ``leaderboard_`` (pandas) and ``profile_``.
        """
        result = Search(data, self.settings(start)).run()
        self.pipeline_, self.run_dir_, self.result_ = result.pipeline, result.run_dir, result
        self.leaderboard_: pd.DataFrame = result.leaderboard
        self.profile_: dict = result.profile
        result.pipeline.leaderboard_, result.pipeline.profile_ = result.leaderboard, result.profile
        return result.pipeline

    def predict(self, inputs) -> object:
        return self.pipeline_.predict(inputs)

    def predict_proba(self, inputs) -> object:
        return self.pipeline_.predict_proba(inputs)

    def score(self, inputs, y) -> float:
        return self.pipeline_.score(inputs, y)
