"""Trial records and the choice of the best one: the contract between the stages.

A ``TrialRecord`` is one trial of either stage, as Optuna's ``FrozenTrial`` is one trial of a study:
the probe stage, the fine-tuning stage and the Ray backend write its fields into the trial's
``user_attrs`` (``trial_attrs``: the field names are checked), and every reader gets it back from
``TrialRecord.from_trial`` (the one conversion from ``user_attrs``) or ``records``. The leaderboard
row (``TrialRecord.row``) is the only flat form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autotransfer.errors import written_by_another_version
from autotransfer.search.candidates import Candidate
from autotransfer.search.storage import Studies
from autotransfer.trial_status import RAN, trial_status

# Bumped when a field of TrialRecord is renamed or removed: a study written with another format is refused.
RECORD_FORMAT = 2
# Leaderboard columns that are not the trial's (report/outputs.py adds them).
_BOARD_ONLY = ("chosen", "ensemble_weight", "test_accuracy")
_ALWAYS_IN_ROW = ("stage", "trial", "status", "val_score", "val_accuracy", "score_source")


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One probe or fine-tuning trial: what it ran, how it went and how it scored.

    ``val_score`` is the run's metric (what the choice maximises; a pruned trial's best epoch counts);
    ``val_accuracy`` is None rather than another metric's score when the trial did not measure it.
    Both are measured where ``score_source`` says (the names are the field's, as AutoGluon's
    ``score_val`` is an out-of-fold score for bagged models): ``"cv"``, the mean over cross-validation
    folds of train+val (probes on small data), or ``"val"``, the validation split."""

    stage: str  # "probe" or "finetune"
    trial: int
    status: str  # Optuna's state in lower case (complete, pruned, fail, waiting), or trial_status.BUDGET_STOPPED
    val_score: float | None = None
    val_accuracy: float | None = None
    score_source: str | None = None  # "cv" or "val": set by trial_records from the stage and the objective
    metric: str | None = None
    # what ran: the candidate (backbone at a resolution, cut at a tap) and the sampled parameters
    candidate: str | None = None
    pair: str | None = None  # backbone@resolution
    backbone: str | None = None
    resolution: int | None = None
    tap: str | None = None
    strategy: str | None = None
    head_lr: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    augmentation: str | None = None
    freeze_fraction: float | None = None
    backbone_lr_ratio: float | None = None
    layer_decay: float | None = None
    class_weight: str | None = None
    # a probe: its head and transferability scores
    head: str | None = None
    C: float | None = None
    logme: float | None = None
    knn: float | None = None
    probe_seconds: float | None = None
    refit_seconds: float | None = None  # probe: estimated seconds of its head's refit on train+val, quiet machine
    extract_seconds_pair: float | None = None
    pair_rows: int | None = None  # probe: the rows its pair's probe recorded (a pair killed mid-record is probed again)
    # a fine-tuning trial: the depth frozen, its epochs and checkpoint
    freeze_groups: int | None = None
    n_groups: int | None = None
    epochs: int | None = None  # asked for by the leftover-time run (then neither sampled nor pruned)
    continues: int | None = None  # leftover time: the trial whose checkpoint this one trains on from
    epochs_planned: int | None = None
    epochs_why: str | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    best_val_score: float | None = None
    best_val_accuracy: float | None = None
    epoch_seconds: float | None = None
    checkpoint_dir: str | None = None
    seeded_by: str | None = None
    retry_of: int | None = None
    # how it ended, where it ran
    seconds: float | None = None
    stopped: str | None = None
    error: str | None = None
    worker: str | None = None
    backend: str | None = None
    ray_trial_id: str | None = None
    node_id: str | None = None
    node_ids: list[str] | None = None
    ray_attempts: int | None = None

    @classmethod
    def from_trial(cls, stage: str, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        """The record of one Optuna trial (its parameters and ``user_attrs``, as ``trial_attrs`` wrote them)."""
        # a queued trial not run yet has its parameters only as Optuna's fixed_params: shown, so a
        # leaderboard row says what was queued
        queued = trial.system_attrs.get("fixed_params", {}) if trial.state == TrialState.WAITING else {}
        values = {**queued, **trial.params, **trial.user_attrs}
        _check_known(values, f"{stage} trial {trial.number}")
        if values.get("candidate") and not values.get("backbone"):
            with contextlib.suppress(ValueError):  # a key written by another version: left as it is
                candidate = Candidate.parse(values["candidate"])
                values.update(backbone=candidate.backbone, resolution=candidate.resolution, tap=candidate.tap)
        state = trial.state.name.lower()
        # Optuna keeps a pruned (or budget-stopped) trial's last epoch as its value; its checkpoint is the best epoch's
        score = trial.user_attrs.get("best_val_score") if state == "pruned" else None
        score = score if score is not None else trial.value
        score = score if score is not None else trial.user_attrs.get("best_val_score")
        status = trial_status(state, values.get("stopped"))
        record = cls(**{**values, "stage": stage, "trial": trial.number, "status": status, "val_score": score})
        return dataclasses.replace(record, val_accuracy=record._accuracy())

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TrialRecord:
        """The record of a leaderboard row (a finished run's ``leaderboard.csv``); missing cells are None."""
        values = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        values = {k: v for k, v in values.items() if k not in _BOARD_ONLY}
        _check_known(values, "leaderboard.csv")
        for name in ("trial", "resolution", "freeze_groups", "epochs_run", "epochs_planned", "best_epoch"):
            if values.get(name) is not None:
                values[name] = int(values[name])
        return cls(**values)

    def row(self) -> dict[str, Any]:
        """The leaderboard row: the fields that are set (stage, trial, status and the scores always)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k in _ALWAYS_IN_ROW}

    def hyperparameters(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The set fields among ``names`` (e.g. search/trials.py's HYPERPARAMETERS)."""
        return {k: getattr(self, k) for k in names if _present(getattr(self, k, None))}

    def _accuracy(self) -> float | None:
        """The validation accuracy: recorded by the trial, else its best epoch's (``best.json`` of a
        fine-tuning trial the pruner or the budget stopped), else its score when the metric is accuracy;
        None rather than another metric's score."""
        accuracy = self.val_accuracy if self.val_accuracy is not None else self.best_val_accuracy
        if accuracy is None and self.checkpoint_dir:
            try:
                accuracy = json.loads(Path(self.checkpoint_dir, "best.json").read_text()).get("val_accuracy")
            except (OSError, ValueError):
                accuracy = None
        if accuracy is None and (self.metric or "accuracy") == "accuracy":
            accuracy = self.val_score
        return accuracy


FIELDS = frozenset(f.name for f in dataclasses.fields(TrialRecord))


def _present(value) -> bool:
    return value is not None and value == value  # NaN: a leaderboard cell of another strategy's parameter


def _check_known(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise written_by_another_version(f"{where} (trial record format {RECORD_FORMAT})", unknown)


def trial_attrs(**values: Any) -> dict[str, Any]:
    """``user_attrs`` for an Optuna trial: the names are TrialRecord fields (a typo fails here, not in a reader)."""
    _check_known(values, "trial being written")
    return values


def set_trial_attrs(trial: optuna.Trial, **values: Any) -> None:
    """Write ``values`` (TrialRecord fields) into a running trial's ``user_attrs``."""
    for key, value in trial_attrs(**values).items():
        trial.set_user_attr(key, value)


def score_source(stage: str, study: optuna.Study) -> str:
    """Where ``stage``'s scores are measured: probes by cross-validation when the run's objective (kept in
    the probes study, search/objective.py) has folds, everything else on the validation split."""
    folds = (study.user_attrs.get("objective") or {}).get("cv_folds") if stage == "probe" else 0
    return "cv" if folds else "val"


def trial_records(stage: str, study: optuna.Study) -> list[TrialRecord]:
    """Every trial of ``study`` that is not running, as a record (with where its score was measured)."""
    trials = study.get_trials(deepcopy=False)
    source = score_source(stage, study)
    rows = [
        dataclasses.replace(TrialRecord.from_trial(stage, t), score_source=source)
        for t in trials
        if t.state != optuna.trial.TrialState.RUNNING
    ]
    # An interrupted trial (Ctrl-C, a full disk) was failed by Optuna and queued again: say so on its row.
    retries = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    return [
        dataclasses.replace(r, error=f"interrupted; queued again as trial {retries[r.trial]}")
        if r.trial in retries and r.status == "fail" and not r.error
        else r
        for r in rows
    ]


def records(studies: Studies) -> list[TrialRecord]:
    """Both stages' records, probes first."""
    return trial_records("probe", studies.probes) + trial_records("finetune", studies.finetune)


def usable(record: TrialRecord) -> bool:
    """A record the final pipeline can be built from: scored, and (fine-tuning) with its weights on disk."""
    if record.val_score is None or record.status not in RAN:
        return False
    return record.stage == "probe" or Path(record.checkpoint_dir or "-", "best.json").exists()


def best_record(rows: list[TrialRecord], margin: float = 0.0) -> TrialRecord | None:
    """The best validation score; among equals the cheaper to run, decided by the trials' settings
    (never by their wall time, so the same seed picks the same pipeline): a probe before a fine-tuned
    network, smaller inputs, then the earlier trial (for probes, the shallower tap).

    ``margin`` > 0: the cheapest record whose score is within ``margin`` of the best, by the same
    order, the higher score first among equally cheap ones (search/selection.py: the one-standard-error
    rule on small data)."""
    candidates = [r for r in rows if usable(r)]
    if not candidates:
        return None
    if margin <= 0:
        return max(candidates, key=lambda r: (r.val_score, *_cost_order(r)))
    top = max(r.val_score for r in candidates)
    near = [r for r in candidates if r.val_score >= top - margin]
    return max(near, key=lambda r: (*_cost_order(r)[:2], r.val_score, -r.trial))


def _cost_order(record: TrialRecord) -> tuple[bool, int, int]:
    """Larger is cheaper: a probe, smaller inputs, the earlier trial."""
    return record.stage == "probe", -(record.resolution or 0), -record.trial
