"""The Optuna storage of a run and its two studies (``probes`` and ``finetune``).

SQLite in the run directory unless a URL is given (``postgresql://…`` for workers on several
machines). Fine-tuning trials send heartbeats: a trial whose worker died (no heartbeat for
``GRACE_SECONDS``, or ``AUTOTRANSFER_HEARTBEAT_GRACE``) is failed by the next worker that asks for a
trial and queued again with the same parameters by Optuna's ``RetryHeartbeatStaleTrialCallback``.

Workers sharing a storage write one final pipeline between them: ``write_once`` runs the refit in
the first worker that claims it (a trial of the ``final`` study, with heartbeats, so a claim whose
worker died lapses after the grace period) and tells the others who has it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from autotransfer.errors import AutoTransferError
from autotransfer.search.space import SearchSpace
from autotransfer.storage_url import check_storage_url, hide_password, storage_url
from autotransfer.trial_status import NOT_STARTED

log = logging.getLogger(__name__)

PROBE_STUDY, FINETUNE_STUDY, FINAL_STUDY = "probes", "finetune", "final"
STORAGE_ATTEMPTS = 5
HEARTBEAT_SECONDS = 10  # a live trial writes a heartbeat this often
GRACE_SECONDS = 60  # a RUNNING trial without a heartbeat for this long belongs to a dead worker
GRACE_ENV = "AUTOTRANSFER_HEARTBEAT_GRACE"  # overrides GRACE_SECONDS (whole seconds, >= 2)
MAX_RETRY = 2  # a trial whose worker died is run again at most this often
T = TypeVar("T")


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds; the interval stays well inside the grace period."""
    text = os.environ.get(GRACE_ENV, "").strip()
    try:
        grace = int(text) if text else GRACE_SECONDS
    except ValueError as error:
        raise AutoTransferError(f"{GRACE_ENV}={text!r} is not a whole number of seconds.") from error
    if grace < 2:
        raise AutoTransferError(f"{GRACE_ENV}={text!r}: the grace period must be at least 2 seconds.")
    return max(1, min(HEARTBEAT_SECONDS, grace // 4)), grace


@dataclass
class Studies:
    probes: optuna.Study
    finetune: optuna.Study


def open_storage(url: str | None, out: Path) -> optuna.storages.RDBStorage:
    """The run's storage; raises AutoTransferError for a bad URL or an unreachable server."""
    if url:
        check_storage_url(url)
    url = storage_url(url or f"sqlite:///{out.resolve() / 'study.db'}")
    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    heartbeat, grace = heartbeat_settings()
    for attempt in range(1, STORAGE_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5; their API is settled
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                    **kwargs,
                )
        except Exception as error:  # sqlalchemy raises many types for a bad URL or an unreachable server
            # Two workers creating a new storage at once race on its schema (a UNIQUE constraint on
            # alembic_version, or a table the other created first): the loser finds the schema there when
            # it tries again. PostgreSQL: the same race on its catalog (duplicate key / UniqueViolation).
            races = ("UNIQUE constraint", "already exists", "duplicate key", "UniqueViolation")
            racing = any(word in str(error) for word in races)
            if racing and attempt < STORAGE_ATTEMPTS:
                time.sleep(0.5 * attempt)
                continue
            fix = "check the {option} URL (e.g. sqlite:///study.db, postgresql://user@host/db)."
            if isinstance(error, ModuleNotFoundError) and "psycopg" in str(error):
                fix = "pip install 'autotransfer[postgres]' (psycopg 3) for postgresql:// URLs."
            raise AutoTransferError(
                f"Cannot open the study storage {hide_password(url)!r}: {str(error).splitlines()[0][:200]}",
                where="{option}",
                fix=fix,
                option="storage",
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


PAST_MAX_TRIALS = f"{NOT_STARTED}: max_trials"  # how the ``stopped`` reason of a trial asked too many starts


def _asked_past_max_trials(trial: optuna.trial.FrozenTrial) -> bool:
    return str(trial.user_attrs.get("stopped", "")).startswith(PAST_MAX_TRIALS)


def _is_retry(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial queued again after its worker died (Optuna's retry callback) or was interrupted (retry_later)."""
    return "failed_trial" in trial.system_attrs or "retry_of" in trial.user_attrs


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def unfinished_trials(study: optuna.Study) -> tuple[int, int, int]:
    """(done, running, waiting) fine-tuning trials. A trial failed because its worker died and queued
    again (``RetryFailedTrialCallback``) is not done: its retry counts in its place. Nor is a trial asked
    past ``max_trials`` (``asked_past_max_trials``)."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    done = sum(t.state.is_finished() and t.number not in retried and not _asked_past_max_trials(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return done, running, waiting


def asked_past_max_trials(study: optuna.Study, number: int, max_trials: int) -> bool:
    """Whether trial ``number`` (just asked) has ``max_trials`` started trials before it: workers sharing a study
    count its trials, then ask for one, and Optuna's ``ask`` cannot be made conditional on the count, so
    two workers may ask for the last place at once. The storage numbers trials in order, so the later one
    gives way. A trial a dead or interrupted worker left keeps its place and its retry takes no new one."""
    trials = study.get_trials(deepcopy=False)
    if _is_retry(trials[number]):
        return False
    started = (t for t in trials[:number] if t.state != TrialState.WAITING and not _is_retry(t))
    return sum(not _asked_past_max_trials(t) for t in started) >= max_trials


def fail_dead_workers_trials(study: optuna.Study) -> None:
    """Fail (and queue again) the RUNNING trials whose heartbeat stopped more than the grace period ago."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class WrittenByAnotherWorker(AutoTransferError):
    """Another worker sharing the storage writes (or wrote) the final pipeline."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_once(
    storage: optuna.storages.BaseStorage, name: str, work: Callable[[], T], where: str
) -> tuple[bool, T | dict]:
    """Run ``work`` in exactly one of the workers sharing ``storage``: (True, its value) there, and
    (False, the claimer's ``worker`` and ``run_dir``) in the others.

    A claim is a trial of the study ``name`` (trial numbers are handed out atomically): the claim with
    the lowest number among the finished (COMPLETE) and live (RUNNING, with heartbeats) ones runs. A
    claim whose worker died lapses after the grace period, and the next worker to ask claims anew; a
    claim whose work raised is failed, the error goes up in its worker.
    """
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    outcome: dict = {}

    def claim(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_name())
        trial.set_user_attr("run_dir", where)
        live = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
        first = min(live, key=lambda t: (t.state != TrialState.COMPLETE, t.number))
        if first.number != trial.number:
            outcome["holder"] = {"worker": "?", "run_dir": "?", **first.user_attrs}
            raise optuna.TrialPruned("claimed by another worker")
        outcome["value"] = work()
        return 1.0

    study.optimize(claim, n_trials=1, catch=())
    if "holder" in outcome:
        return False, outcome["holder"]
    return True, outcome["value"]


def claim_is_live(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Whether a worker holds the claim ``name`` now (dead workers' claims are failed first)."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    fail_dead_workers_trials(study)
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def write_once(storage: optuna.storages.BaseStorage, write: Callable[[], T], where: str) -> T:
    """Run ``write`` (the refit and save) in exactly one of the workers sharing ``storage``
    (``run_once`` on the ``final`` study); the others raise WrittenByAnotherWorker naming the writer.
    A writer that dies leaves a claim that lapses after the grace period: running ``fit`` again writes."""
    ran, value = run_once(storage, FINAL_STUDY, write, where)
    if not ran:
        raise WrittenByAnotherWorker(
            f"The final pipeline of this shared study is written by worker {value['worker']} "
            f"in {value['run_dir']}; this worker's trials are in the study.",
            fix="use that run directory; if that worker died before saving, run fit again there.",
        )
    return value
