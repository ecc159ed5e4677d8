"""The Python API: ``AutoTransfer(...).fit(data)`` does what ``autotransfer fit`` does.

A scikit-learn estimator: the constructor stores its arguments as given (``get_params`` /
``set_params`` work), validation happens in ``fit``, which returns ``self``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from autotransfer.data.sources import check_data_path
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.errors import AutoTransferError, python_argument
from autotransfer.options import DEFAULTS, RunOptions
from autotransfer.report.fit_summary import append_to_fit_log
from autotransfer.report.progress import Progress
from autotransfer.search.run import run
from autotransfer.search.settings import SearchSettings, resolve_settings


class AutoTransfer(BaseEstimator):
    """Hands-off transfer learning: profile, search, refit, and keep the best pipeline.

    Parameters
    ----------
    time_budget : str or float, default "10m"
        Wall-clock budget for everything, saving included: ``"90s"``, ``"10m"``, ``"1h30m"`` or seconds.
    search_space : str or path, default "default"
        A built-in space (``fast``, ``default``, ``thorough``) or a YAML file (docs/search.md).
    backend : {"optuna", "ray"}, default "optuna"
        Where fine-tuning trials run: this process, or Ray Tune (local, or ``ray_address``).
    out : path, optional
        The run directory; default ``runs/<timestamp>``. An unfinished run there is resumed; a finished
        one (pipeline saved) is loaded into the attributes below and not searched again (a new search
        needs another ``out``).
    storage : str, optional
        Optuna storage URL shared by workers (``postgresql://…``); default SQLite in ``out``.
    seed : int, default 0
        Seeds the split, the sampler and every trial: the same seed gives the same pipeline on CPU.
    val_fraction : float, default 0.2
        Share of each class held out for validation when the data has no ``val`` split.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1``; default CUDA when present.
    ray_address : str, optional
        An existing Ray cluster; default a local Ray.
    cpus_per_trial, gpus_per_trial : float, default 1.0 and 0.0
        Ray resources of one fine-tuning trial (fractions allowed).
    profile_backbone : str, default "mobilenetv2_100"
        The BatchNorm backbone the profiler measures with.
    metric : str, default "auto"
        What the search maximises: ``auto`` (balanced accuracy when the training classes are
        imbalanced from 3:1, else accuracy), ``accuracy``, ``balanced_accuracy``, ``f1_macro``,
        ``roc_auc`` (two classes) or ``log_loss``.
    ensemble : bool, default True
        Average the best few configurations' probabilities when validation says it beats the best one.
    sampler, pruner : Optuna sampler / pruner, optional
        For the fine-tuning study; default ``TPESampler(seed=seed)`` and ``HyperbandPruner`` over epochs.
    verbose : int, default 1
        1: stages, trials and the best so far as the run goes (terminal or notebook); 0: silent.

    Attributes
    ----------
    pipeline_ : Pipeline
        The best pipeline found (also saved in ``run_dir_ / "pipeline"``).
    classes_ : numpy.ndarray of str, shape (n_classes,)
        Class names, in the order of ``predict_proba``'s columns.
    leaderboard_ : pandas.DataFrame
        Every trial of both stages, best first (``run_dir_ / "leaderboard.csv"``).
    profile_ : dict
        The dataset profile (``run_dir_ / "profile.json"``): quadrant, distance by depth, prior.
    run_dir_ : pathlib.Path
        The run directory (absolute): checkpoint, leaderboard, profile, report, study, log.
    best_ : dict
        The chosen trial's row of ``leaderboard_``.
    """

    def __init__(  # noqa: PLR0913 (scikit-learn's get_params reads the hyperparameters from this signature)
        self,
        time_budget: str | float = DEFAULTS.time_budget,
        search_space: str | os.PathLike = DEFAULTS.search_space,
        backend: str = DEFAULTS.backend,
        out: str | os.PathLike | None = DEFAULTS.out,
        storage: str | None = DEFAULTS.storage,
        seed: int = DEFAULTS.seed,
        val_fraction: float = DEFAULTS.val_fraction,
        device: str | None = DEFAULTS.device,
        ray_address: str | None = DEFAULTS.ray_address,
        cpus_per_trial: float = DEFAULTS.cpus_per_trial,
        gpus_per_trial: float = DEFAULTS.gpus_per_trial,
        profile_backbone: str = DEFAULTS.profile_backbone,
        metric: str = DEFAULTS.metric,
        ensemble: bool = DEFAULTS.ensemble,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        verbose: int = 1,
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
        self.metric = metric
        self.ensemble = ensemble
        self.sampler = sampler
        self.pruner = pruner
        self.verbose = verbose

    def _settings(self, start: float) -> SearchSettings:
        names = RunOptions.__dataclass_fields__
        options = RunOptions(**{name: getattr(self, name) for name in names})
        return resolve_settings(options, sampler=self.sampler, pruner=self.pruner, start=start)

    def fit(self, data: str | os.PathLike, y: None = None) -> AutoTransfer:
        """Search ``data`` (an ImageFolder, split folders or a CSV of ``path,label``) and keep the best pipeline.

        ``y`` is accepted for scikit-learn compatibility and ignored: labels come from ``data``.
        Raises AutoTransferError for bad data, a budget too small, or a run directory holding another search.
        """
        start = time.monotonic()
        try:
            check_data_path(data)  # before anything is printed: a typo is the only line
            settings = self._settings(start)
            result = run(data, settings, Progress(settings.time_budget, verbose=self.verbose, start=start))
        except AutoTransferError as error:  # its option written as this estimator's parameter (time_budget=)
            raise error.in_terms(python_argument) from error
        if not result.already_finished:  # fit.log ends with the summary `autotransfer fit` prints
            append_to_fit_log(result, settings.time_budget)
        self.pipeline_: Pipeline = result.pipeline
        self.classes_: np.ndarray = result.pipeline.classes_
        self.leaderboard_: pd.DataFrame = result.leaderboard
        self.profile_: dict = result.profile.to_json()
        self.run_dir_ = Path(result.run_dir).absolute()
        self.best_: dict = result.leaderboard[result.leaderboard["chosen"]].iloc[0].to_dict()
        return self

    def predict(self, inputs) -> np.ndarray:
        """Class names, one per input (paths, a folder, PIL images, arrays, tensors), in the order of
        ``predict_proba``'s rows. Raises scikit-learn's NotFittedError before ``fit``."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict(inputs)

    def predict_proba(self, inputs) -> np.ndarray:
        """(n_inputs, n_classes) probabilities, columns in ``classes_`` order.

        Rows follow the inputs as given; a folder contributes its image files, recursively, sorted by
        path. ``predict_proba_frame`` returns the same rows labelled with the file each one is."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict_proba(inputs)

    def predict_proba_frame(self, inputs) -> pd.DataFrame:
        """``predict_proba`` as a DataFrame: one row per image, indexed by its path (``path``; arrays and
        PIL images by their position), one column per class of ``classes_``. Unreadable inputs raise.
        The fitted ``Pipeline`` (``pipeline_``, or ``Pipeline.load``) has the same method."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict_proba_frame(inputs)

    def score(self, inputs, y) -> float:
        """Accuracy against ``y`` (class names or indices)."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.score(inputs, y)
