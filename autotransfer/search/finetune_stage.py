"""The fine-tuning stage: the best candidates of the cheap stage get fine-tuning trials in the
``finetune`` study, the profile's strategies first (``enqueue_trial``), then the sampler's choices,
pruned over epochs. Two backends run it behind one interface: ``OptunaBackend`` (trials in this
process, ``Study.optimize`` one trial at a time, with heartbeats) and ``RayBackend`` (Ray Tune,
search/ray_backend.py). A failing trial is a result (recorded with its reason), not a crash.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import optuna
from optuna.trial import TrialState

from autotransfer.budget import format_duration
from autotransfer.cpu_threads import use_free_cpus
from autotransfer.files import is_disk_full
from autotransfer.models.zoo import COMBINED_TAP
from autotransfer.report.progress import TRIAL_LINE
from autotransfer.runtime import default_device
from autotransfer.search import planner
from autotransfer.search.auto_space import MAX_BACKBONES
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.search.objective import Objective
from autotransfer.search.recipe import seed_trials
from autotransfer.search.records import TrialRecord, best_record, records, set_trial_attrs, trial_attrs, trial_records
from autotransfer.search.space import Range
from autotransfer.search.storage import (
    PAST_MAX_TRIALS,
    Studies,
    asked_past_max_trials,
    fail_dead_workers_trials,
    heartbeat_settings,
    unfinished_trials,
    worker_name,
)
from autotransfer.search.trial_body import TrialContext, run_trial
from autotransfer.search.trials import HYPERPARAMETERS, describe, suggest
from autotransfer.transfer.finetune import TrialPruned
from autotransfer.transfer.profile import Prior

log = logging.getLogger(__name__)


class OutOfTime(TrialPruned):
    """A trial stopped because the budget left no room for another epoch (it keeps its best epoch)."""


@dataclass
class FinetunePlan:
    """What the fine-tuning stage runs, as plain inputs for any backend."""

    studies: Studies
    candidates: list[Candidate]
    ranges: dict[str, Range]
    prior: Prior
    objective: Objective


class FinetuneBackend(Protocol):
    def run(self, plan: FinetunePlan, context: RunContext) -> None:
        """Run fine-tuning trials until the space's ``max_trials`` or the budget ends them, recording
        each one in ``plan.studies.finetune``."""


def choose_candidates(studies: Studies, count: int) -> list[Candidate]:
    """The top ``count`` (backbone, resolution, tap) of the cheap stage, one tap per (backbone,
    resolution): variety beats near-duplicates. A combined tap stays a probe: fine-tuning puts its
    head on one tap. Fixed once chosen, so a resumed run keeps them."""
    if "candidates" in studies.finetune.user_attrs:
        return [Candidate.parse(key) for key in studies.finetune.user_attrs["candidates"]]
    rows = [r for r in trial_records("probe", studies.probes) if r.status == "complete"]
    rows = sorted(rows, key=lambda r: (-r.val_score, -np.nan_to_num(r.logme or 0.0)))  # NaN: unscored
    chosen: list[Candidate] = []
    for row in rows:
        candidate = Candidate.parse(row.candidate)
        if COMBINED_TAP not in candidate.tap and all(c.pair != candidate.pair for c in chosen):
            chosen.append(candidate)
        if len(chosen) == count:
            break
    studies.finetune.set_user_attr("candidates", [c.key for c in chosen])
    return chosen


def affordable(epoch_seconds: dict[str, float], left: float, reserve: float, judge: int) -> list[str]:
    """The candidates (keys of ``epoch_seconds``: seconds per epoch) whose trial can be judged (``judge``
    epochs) in ``left`` seconds after ``reserve``, cheapest first."""
    fits = [key for key, epoch in epoch_seconds.items() if planner.finetune_trial_fits(left, reserve, judge, epoch)]
    return sorted(fits, key=epoch_seconds.__getitem__)


def next_queued_candidate(study: optuna.Study) -> str | None:
    """The candidate of the trial Optuna runs next when one is queued (``enqueue_trial``, oldest first)."""
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return queued[0].system_attrs.get("fixed_params", {}).get("candidate") if queued else None


def epoch_estimate(context: RunContext, params: dict, measured: dict[tuple[str, str], float]) -> float:
    """Seconds per epoch of ``params``: measured when a trial ran its candidate with its strategy; else the
    planner's estimate, never below an epoch measured on the same candidate with another strategy.

    ``measured``: (candidate key, strategy) -> seconds per epoch. Keyed by the strategy too because a
    partly frozen epoch is far cheaper than a full one: one strategy's epoch must not stand for another's."""
    key = (params["candidate"], params.get("strategy", ""))
    if key in measured:
        return measured[key]
    candidate = Candidate.parse(params["candidate"])
    dataset = context.dataset(candidate.resolution)
    forward = context.training_forward_seconds(candidate.backbone, candidate.resolution)
    extract = forward if forward is not None else 0.02 * len(dataset)
    augmented = params.get("augmentation", "none") != "none"  # no cached frozen prefix then (finetune.py)
    n_train = len(dataset.indices("train"))
    estimate = planner.estimate_epoch_seconds(extract, len(dataset), n_train, params.get("freeze_fraction", 0.0),
                                              augmented)  # fmt: skip
    return max([estimate, *(seconds for (other, _), seconds in measured.items() if other == params["candidate"])])


def search_shape(context: RunContext) -> planner.SearchShape:
    """How far this run's search grows with its budget (planner.scaled_plan), on this run's device."""
    space = context.settings.space
    cuda = (context.device or default_device()).type == "cuda"
    return planner.scaled_plan(context.deadline.seconds, epochs=space.epochs, max_trials=space.max_trials,
                               max_backbones=MAX_BACKBONES, cuda=cuda, grow=space.grow_with_budget)  # fmt: skip


class OptunaBackend:
    """Fine-tuning trials in this process, one ``Study.optimize`` call per trial (heartbeats on)."""

    def run(self, plan: FinetunePlan, context: RunContext) -> None:
        self.plan, self.context = plan, context
        self.measured: dict[tuple[str, str], float] = {}
        self.first_epoch_too_long = False
        self.refusing: str | None = None  # why queued trials are recorded as not started now (``_not_started``)
        study, space = plan.studies.finetune, context.settings.space
        self.shape = search_shape(context)
        n_train = len(context.dataset(plan.candidates[0].resolution).indices("train"))
        self.judge = planner.epochs_to_judge(space.min_epochs, n_train, space.batch_size, self.shape.epochs)
        if context.settings.pruner is None:  # successive halving over epochs, from the epochs that judge a trial
            study.pruner = optuna.pruners.HyperbandPruner(
                min_resource=self.judge, max_resource=self.shape.epochs, reduction_factor=space.reduction_factor
            )
        log.info("fine-tuning: trials judged after %d epoch(s) (%d optimizer updates or the pruner's first rung); %s",
                 self.judge, planner.JUDGE_UPDATES, self.shape.why or "search shape fixed")  # fmt: skip
        seed_trials(study, space, plan)
        for r in trial_records("finetune", study):
            if r.epoch_seconds is not None:
                self.measured[r.candidate or "", r.strategy or ""] = r.epoch_seconds
        context.progress.stage("fine-tuning", total=self.shape.max_trials, unit="trial(s) at most")
        self._search(study)
        self._use_leftover(study)
        if context.settings.options.storage:  # the other workers' trials still running count for the final choice
            while unfinished_trials(study)[1] and wait_for_others(study, context):
                pass

    def _search(self, study: optuna.Study) -> None:
        context, max_trials = self.context, self.shape.max_trials
        while True:
            done, running, waiting = unfinished_trials(study)
            if done >= max_trials:
                context.search_ended(f"fine-tuning: max_trials ({max_trials}) reached")
                return
            if done + running >= max_trials and not waiting:
                # Workers sharing the study run the last trials. Wait for them: a dead worker's trial
                # is failed after the grace period (heartbeats) and queued again, and this worker runs it.
                if not wait_for_others(study, context):
                    return
                continue
            best = best_record(records(self.plan.studies))
            estimates = {c.key: epoch_estimate(context, {"candidate": c.key, "strategy": "finetune_all"}, self.measured)
                         for c in self.plan.candidates}  # fmt: skip
            reserve, left = context.reserve(best), context.deadline.left()
            fitting = affordable(estimates, left, reserve, self.judge)
            queued = next_queued_candidate(study)
            if not fitting or (queued is not None and queued not in fitting):
                needed = reserve + self.judge * estimates.get(queued, min(estimates.values(), default=0))
                context.search_ended(f"time budget: no room for another fine-tuning trial ({format_duration(left)} "
                                     f"left, {format_duration(needed)} needed to judge one: {self.judge} epoch(s) "
                                     "and the final refit)")  # fmt: skip
                return
            if len(fitting) < len(estimates) and not waiting:  # the next trial that fits, not none at all
                log.info("time budget: %s left fits a trial of %s, the cheapest candidate", format_duration(left),
                         fitting[0])  # fmt: skip
                study.enqueue_trial(
                    {"candidate": fitting[0]}, user_attrs=trial_attrs(seeded_by="the candidate that fits")
                )
            self._one_trial(study, best)
            if self.first_epoch_too_long:  # the sampled trial's first epoch did not fit: nor would the next's
                context.search_ended("time budget: a fine-tuning trial's first epoch did not fit in the time left")
                return

    def _use_leftover(self, study: optuna.Study) -> None:
        """The search ended with more than ``planner.UNUSED_SHARE`` of the budget left: train the best
        fine-tuned configuration again for as many epochs as fit together with their refit on train+val
        (it replaces the best when it scores higher); a trial still queued (a seed past ``max_trials``)
        runs instead, as Optuna runs the oldest queued trial first and a configuration never tried says
        more than the best one trained longer. Where neither fits and the best was still improving at
        its last epoch, it trains on from its checkpoint (``_continue_best``). A probe as the best leaves
        the time to the probes run after fine-tuning and to the ensemble (search/run.py)."""
        context = self.context
        if context.settings.options.storage:  # workers sharing a study would each run it again: max_trials holds there
            return
        best = best_record(records(self.plan.studies))
        if best is None or best.stage != "finetune" or not best.epoch_seconds:
            return
        why = f"leftover time (trial {best.trial})"
        runs = [r.seeded_by for r in trial_records("finetune", study)]
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if (best.seeded_by or "").startswith("leftover") or why in runs:  # done already (a resumed run)
            if waiting and waiting[0].user_attrs.get("seeded_by") == why:  # interrupted, queued again (retry_later)
                self._one_trial(study, best)
            return
        left, budget = context.deadline.left(), context.deadline.seconds
        if not planner.unused_too_much(left, budget, context.reserve(best)):
            return
        n_train, n_val = context.split_sizes(best.resolution)
        per_epoch = best.epoch_seconds * (1 + (n_train + n_val) / max(n_train, 1))  # trained, then refit
        epochs = min(planner.MAX_EPOCHS, planner.leftover_epochs(left, context.reserve(None), per_epoch))
        if epochs <= (best.epochs_run or 0):
            if waiting:  # Optuna runs the oldest queued trial first: those that cannot be judged go out of the way
                self._not_started(study, f"leftover time ({format_duration(left)}) goes to trial {best.trial}")
            if not self._continue_best(study, best, why):
                return
        elif waiting:  # Optuna runs the oldest queued trial first: a seed past max_trials, never tried, goes first
            seeded = f" ({waiting[0].user_attrs['seeded_by']})" if waiting[0].user_attrs.get("seeded_by") else ""
            log.info("leftover time (%s): trial %d%s, queued and not run yet", format_duration(left),
                     waiting[0].number, seeded)  # fmt: skip
        else:
            params = best.hyperparameters(HYPERPARAMETERS)
            study.enqueue_trial(params, user_attrs=trial_attrs(epochs=epochs, seeded_by=why))
            log.info("leftover time (%s): trial %d's configuration again for %d epochs, as trial %d",
                     format_duration(left), best.trial, epochs, len(study.trials) - 1)  # fmt: skip
        ran = self._one_trial(study, best)
        if ran is not None and ran.epochs_run is not None and ran.epochs_run < (ran.epochs_planned or 0):
            context.search_ended(f"leftover time: trial {ran.trial} ran {ran.epochs_run} of its {ran.epochs_planned} "
                                 f"epochs ({ran.stopped or 'early stop: validation stopped improving'})")  # fmt: skip

    def _not_started(self, study: optuna.Study, reason: str) -> None:
        """Record every queued trial as not started (``reason``): the search found none of them fits the time
        left, and Optuna would run them before any trial queued after them."""
        self.refusing = reason
        try:
            while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                self._one_trial(study, None)
        finally:
            self.refusing = None

    def _continue_best(self, study: optuna.Study, best: TrialRecord, why: str) -> bool:
        """Queue ``best`` trained on from its checkpoint (its weights, its epochs counted) for the epochs that
        fit when the final stage keeps the result's own weights instead of a refit on train+val: more epochs
        of an under-trained network buy more than a fifth more data (the val split) would. Only while the
        best epoch is its last one (still improving); whether it was queued."""
        left, run = self.context.deadline.left(), best.epochs_run or 0
        more = min(planner.MAX_EPOCHS - run, planner.leftover_epochs(left, self.context.reserve(best, refit=False),
                                                                     best.epoch_seconds or 1.0))  # fmt: skip
        if best.best_epoch != run - 1 or more < 1:
            reason = "its best epoch was not its last" if more >= 1 else "no more epochs than it had"
            self.context.search_ended(f"leftover time ({format_duration(left)}): trial {best.trial} not trained on "
                                      f"({reason})")  # fmt: skip
            return False
        params = best.hyperparameters(HYPERPARAMETERS)
        study.enqueue_trial(params, user_attrs=trial_attrs(epochs=run + more, continues=best.trial, seeded_by=why))
        log.info("leftover time (%s): trial %d trained on from its checkpoint for %d more epochs, as trial %d (the "
                 "time of a refit on train+val goes to epochs)", format_duration(left), best.trial, more,
                 len(study.trials) - 1)  # fmt: skip
        return True

    def _one_trial(self, study: optuna.Study, best: TrialRecord | None) -> TrialRecord | None:
        """Run the next trial (the oldest queued, else sampled); its record (None when none was asked)."""
        asked: dict = {}
        use_free_cpus()
        try:
            study.optimize(lambda trial: self._objective(trial, best, asked), n_trials=1, catch=())
        except KeyboardInterrupt:
            retry_later(study, asked)
            raise
        except Exception as error:  # a failing trial is a result, not a crash (Optuna recorded it as FAIL)
            if is_disk_full(error):  # not the trial's fault: stop, and retry it when the run resumes
                with contextlib.suppress(Exception):  # the storage may be on the full disk too
                    retry_later(study, asked)  # if not: resume re-queues it as interrupted
                raise
            log.warning("trial %d (%s) failed: %s", asked["number"], describe(asked["params"]), error)
        number = asked.get("number")
        if number is None:
            return None
        record = next(r for r in trial_records("finetune", study) if r.trial == number)
        if record.epoch_seconds is not None:
            self.measured[asked["params"]["candidate"], asked["params"]["strategy"]] = record.epoch_seconds
        best = best_record(records(self.plan.studies))
        self.context.progress.trial(record.row(), best.row() if best else None)
        return record

    def _objective(self, trial: optuna.Trial, best: TrialRecord | None, asked: dict) -> float:
        space = self.context.settings.space
        params = suggest(trial, space, self.plan.candidates, self.plan.ranges, self.plan.objective.class_weights)
        asked.update(number=trial.number, params=params)
        if self.context.settings.options.storage:  # workers share the study: only they can ask too many
            self._give_way_past_max_trials(trial, params)
        tic = time.perf_counter()
        try:
            value = self._train(trial, params, best)
        except TrialPruned as stop:
            set_trial_attrs(trial, stopped=str(stop), seconds=time.perf_counter() - tic)
            log.info("trial %d (%s) %s", trial.number, describe(params), stop, extra=TRIAL_LINE)
            raise optuna.TrialPruned(str(stop)) from stop
        except KeyboardInterrupt:
            raise
        except Exception as error:
            set_trial_attrs(
                trial, error=f"{type(error).__name__}: {str(error)[:400]}", seconds=time.perf_counter() - tic
            )
            raise
        set_trial_attrs(trial, seconds=time.perf_counter() - tic)
        log.info(
            "trial %d (%s): val %.4f after %s of %s epochs (%s), %s left",
            trial.number,
            describe(params),
            value,
            trial.user_attrs.get("epochs_run"),
            trial.user_attrs.get("epochs_planned"),
            trial.user_attrs.get("epochs_why"),
            format_duration(self.context.deadline.left()),
            extra=TRIAL_LINE,
        )
        return value

    def _give_way_past_max_trials(self, trial: optuna.Trial, params: dict) -> None:
        """Record ``trial`` as not started when another worker took the last of ``max_trials`` at once."""
        max_trials = self.shape.max_trials
        if not asked_past_max_trials(self.plan.studies.finetune, trial.number, max_trials):
            return
        stopped = f"{PAST_MAX_TRIALS} ({max_trials}) taken by the workers sharing the study"
        set_trial_attrs(trial, stopped=stopped, worker=worker_name(), seconds=0.0)
        log.info("trial %d (%s) %s", trial.number, describe(params), stopped, extra=TRIAL_LINE)
        raise optuna.TrialPruned(stopped)

    def _train(self, trial: optuna.Trial, params: dict, best: TrialRecord | None) -> float:
        """Train one configuration (search/trial_body.py) for the epochs it gets (said in ``epochs_why``)."""
        reporter = OptunaReporter(trial, self, best)
        # the checkpoint folder the continued trial recorded (trial_body.run_trial names it)
        continued = None if reporter.continues is None else self.plan.studies.finetune.trials[reporter.continues]
        continues = None if continued is None else Path(continued.user_attrs["checkpoint_dir"])
        try:
            return run_trial(params, trial_context(self.context, self.plan.objective), reporter, continues=continues)
        finally:
            self.first_epoch_too_long = self.first_epoch_too_long or reporter.not_started


class OptunaReporter:
    """One Optuna trial's side of the trial body: its epochs from the budget, its record in ``user_attrs``,
    each epoch reported to the pruner (from the epochs it needs to be judged on) and to the budget."""

    def __init__(self, trial: optuna.Trial, backend: OptunaBackend, best: TrialRecord | None) -> None:
        self.trial, self.backend, self.context = trial, backend, backend.context
        self.name = f"{trial.number:04d}"
        self.continues = trial.user_attrs.get("continues")  # leftover time: trains on from this trial's checkpoint
        self.reserve = self.context.reserve(best, refit=self.continues is None)
        self.per_epoch = 0.0
        self.planned = 0  # epochs the trial gets (``epochs``)
        self.not_started = False
        self.prunable = "epochs" not in trial.user_attrs  # the leftover run of the best configuration is not pruned
        # our pruner waits for the epochs that judge a trial; a pruner of the user's own decides alone
        self.judged_from = backend.judge if self.context.settings.pruner is None else 1

    def epochs(self, params: dict) -> tuple[int, str]:
        """The epochs one trial gets, and why (for the leaderboard and the summary)."""
        self.per_epoch = epoch_estimate(self.context, params, self.backend.measured)  # its strategy and augmentation
        self.planned, why = self._epochs()
        return self.planned, why

    def _epochs(self) -> tuple[int, str]:
        if self.continues is not None:
            return int(self.trial.user_attrs["epochs"]), f"leftover time: trial {self.continues} trained on"
        if "epochs" in self.trial.user_attrs:
            return int(self.trial.user_attrs["epochs"]), "leftover time: the best configuration, longer"
        shape, judge = self.backend.shape, self.backend.judge
        epochs = planner.trial_epochs(shape.epochs, judge, self.context.deadline.left(), self.reserve, self.per_epoch)
        judged = f"judged after {judge}"
        if epochs < shape.epochs:
            return epochs, f"{judged}; a third of the time left affords {epochs} of {shape.epochs}"
        return epochs, f"{judged}; {epochs}, the most this budget gives a trial"

    def record(self, **fields) -> None:
        set_trial_attrs(self.trial, **fields)
        self.per_epoch = fields.get("epoch_seconds", self.per_epoch)  # measured, once an epoch ran

    def start(self) -> None:
        set_trial_attrs(self.trial, worker=worker_name())  # host:pid, so a shared study shows who ran what
        if self.backend.refusing:
            raise OutOfTime(f"time budget: not started (no room to judge it; {self.backend.refusing})")
        left = self.context.deadline.left()
        if not planner.next_epoch_fits(left, self.reserve, self.per_epoch):
            self.not_started = True
            raise OutOfTime(
                f"time budget: not started (an epoch needs about {format_duration(self.per_epoch)}, "
                f"{format_duration(max(0.0, left - self.reserve))} left before the reserve)"
            )

    def epoch(self, epoch: int, value: float) -> None:
        self.trial.report(value, epoch + 1)
        if self.prunable and epoch + 1 >= self.judged_from and self.trial.should_prune():
            raise TrialPruned(f"pruned after epoch {epoch + 1}")
        last = epoch + 1 >= self.planned  # the trainer stops there: no next epoch to fit
        if not last and not planner.next_epoch_fits(self.context.deadline.left(), self.reserve, self.per_epoch):
            raise OutOfTime(f"time budget: stopped after epoch {epoch + 1}")


def trial_context(context: RunContext, objective: Objective) -> TrialContext:
    """What the run's fine-tuning trials share, with the data decoded in this process (``context``)."""
    return TrialContext(space=context.settings.space, seed=context.settings.options.seed, metric=objective.metric,
                        rotate=float(objective.rotate), out=context.out, device=context.settings.device,
                        data=context)  # fmt: skip


def retry_later(study: optuna.Study, asked: dict) -> None:
    """Queue an interrupted trial's parameters again for the resumed run (Optuna already failed it)."""
    if "params" not in asked:
        return
    trial = study.trials[asked["number"]]
    if trial.state == TrialState.RUNNING:
        study.tell(asked["number"], state=TrialState.FAIL)
    # a leftover-time trial keeps what makes it one: its epochs, the trial it continues, who queued it
    kept = {k: trial.user_attrs[k] for k in ("epochs", "continues", "seeded_by") if k in trial.user_attrs}
    study.enqueue_trial(asked["params"], user_attrs=trial_attrs(retry_of=asked["number"], **kept), skip_if_exists=False)


def wait_for_others(study: optuna.Study, context: RunContext) -> bool:
    """Sleep one heartbeat interval and fail the trials of dead workers (queued again for a retry).
    False when the budget has no room left for a trial anyway."""
    if context.deadline.left() <= context.reserve(best_record(records_of(study))):
        log.info("time budget: not waiting for the other workers' last trials")
        return False
    time.sleep(heartbeat_settings()[0])
    fail_dead_workers_trials(study)
    return True


def records_of(study: optuna.Study) -> list[TrialRecord]:
    return trial_records("finetune", study)
