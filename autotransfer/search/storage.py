"""The Optuna storage of a run and its two studies (``probes`` and ``finetune``).

SQLite in the run directory unless a URL is given (``postgresql://…`` for workers on several
machines). Fine-tuning trials send heartbeats: a trial whose worker died (no heartbeat for
``GRACE_SECONDS``) is failed by the next worker that asks for a trial and queued again with the
same parameters by Optuna's ``RetryHeartbeatStaleTrialCallback``.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from autotransfer.errors import AutoTransferError
from autotransfer.search.space import SearchSpace

log = logging.getLogger(__name__)

PROBE_STUDY, FINETUNE_STUDY = "probes", "finetune"
STORAGE_ATTEMPTS = 5
HEARTBEAT_SECONDS = 10  # a live trial writes a heartbeat this often
GRACE_SECONDS = 60  # a RUNNING trial without a heartbeat for this long belongs to a dead worker
MAX_RETRY = 2  # a trial whose worker died is run again at most this often


@dataclass
class Studies:
    probes: optuna.Study
    finetune: optuna.Study


def open_storage(url: str | None, out: Path) -> optuna.storages.RDBStorage:
    """The run's storage; raises AutoTransferError for a bad URL or an unreachable server."""
    url = url or f"sqlite:///{out.resolve() / 'study.db'}"
    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    for attempt in range(1, STORAGE_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5; their API is settled
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                    **kwargs,
                )
        except Exception as error:  # sqlalchemy raises many types for a bad URL or an unreachable server
            # Two workers creating a new storage at once race on its schema (a UNIQUE constraint on
            # alembic_version): the loser finds the schema there when it tries again.
            if "UNIQUE constraint" in str(error) and attempt < STORAGE_ATTEMPTS:
                time.sleep(0.5 * attempt)
                continue
            raise AutoTransferError(
                f"Cannot open the study storage {url!r}: {str(error).splitlines()[0][:200]}",
                fix="check the --storage URL (e.g. sqlite:///study.db, postgresql://user@host/db).",
            ) from error
    raise AssertionError("unreachable")


def open_studies(
    storage: optuna.storages.BaseStorage,
    space: SearchSpace,
    seed: int,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> Studies:
    """Both studies (created or loaded). Fine-tuning defaults: TPE (seeded) and Hyperband over epochs."""
    probes = optuna.create_study(study_name=PROBE_STUDY, storage=storage, direction="maximize", load_if_exists=True)
    sampler = sampler or optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    pruner = pruner or optuna.pruners.HyperbandPruner(
        min_resource=space.min_epochs, max_resource=space.epochs, reduction_factor=space.reduction_factor
    )
    finetune = optuna.create_study(
        study_name=FINETUNE_STUDY,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    return Studies(probes, finetune)


def retry_interrupted_trials(study: optuna.Study) -> None:
    """Trials a killed run left RUNNING: failed and queued again with the same parameters.

    Only for a run that owns its directory and storage (no other worker can be running them); with a
    shared storage, heartbeats find the dead workers' trials instead (``GRACE_SECONDS``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        retry(study, study.trials[trial.number])
        log.info("trial %d was interrupted by the previous run: queued again", trial.number)
