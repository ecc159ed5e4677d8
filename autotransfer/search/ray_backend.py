"""The fine-tuning stage on Ray Tune: the same space (OptunaSearch, define-by-run) and objective,
ASHA for early stopping, per-trial CPU/GPU resources (fractional GPUs allowed), on a local Ray or
an existing cluster (``ray_address``). Finished trials are written into the run's Optuna study, so
the leaderboard, the choice of the best trial and the refit are the same as with the Optuna backend.

Each trial records the Ray node(s) it ran on (``node_id``, ``node_ids``) and how often it was started
(``ray_attempts``): a trial whose node died is started again elsewhere (``FailureConfig``,
``MAX_FAILURES``). A resumed run keeps the fine-tuning trials already in the study and runs only the
rest of ``max_trials``. A cluster address on loopback (a one-machine cluster, as the tests start)
keeps the driver on loopback too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution

from autotransfer.errors import AutoTransferError
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.search.finetune_stage import FinetunePlan
from autotransfer.search.records import best_record, records, trial_attrs
from autotransfer.search.space import Range, SearchSpace
from autotransfer.search.trial_body import FolderData, TrialContext, run_trial
from autotransfer.search.trials import suggest
from autotransfer.transfer.finetune import TrialPruned

log = logging.getLogger(__name__)
MIN_SECONDS = 20  # below this, starting Ray and one trial cannot finish anything
MAX_FAILURES = 2  # a trial whose node (or process) died is started again this often


def _loopback_host(address: str | None) -> str | None:
    """The host of a ``host:port`` Ray address when it is a loopback address, else None."""
    if not address or address == "auto" or "://" in address:
        return None
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return "127.0.0.1"
    return host if host.startswith("127.") or host == "::1" else None


def _stay_on_loopback() -> None:
    """Ray swaps a loopback address for the machine's interface address unless told it is a
    one-machine cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if "ray._private.ray_constants" in sys.modules:
        sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False


class RayReporter:
    """One Ray trial's side of the trial body (search/trial_body.py): the space's epochs (ASHA stops
    trials early), its record sent with each epoch's result (``tune.report``, read by the driver's
    ``_record``), the budget checked after each epoch. ``report`` is ``ray.tune.report``."""

    def __init__(self, report: Callable[[dict], None], *, trial_id: str, node_id: str, epochs: int, stop_at: float):
        self.name = f"ray-{trial_id}"
        self.report, self.node_id, self.planned, self.stop_at = report, node_id, epochs, stop_at
        self.fields: dict = {}
        self.last = (0, 0.0)

    def epochs(self, params: dict) -> tuple[int, str]:
        return self.planned, f"the space's {self.planned}; ASHA stops trials early"

    def record(self, **fields) -> None:
        self.fields.update(trial_attrs(**fields))

    def start(self) -> None:
        pass  # Tune started the trial when its resources were free; the budget is Tune's time_budget_s

    def epoch(self, epoch: int, value: float) -> None:
        self.last = (epoch + 1, value)
        self._send()
        if time.time() > self.stop_at:
            raise TrialPruned(f"time budget: stopped after epoch {epoch + 1}")

    def finish(self, stopped: str | None) -> None:
        """After the body: its last fields (and why it stopped), as one more result for its last epoch
        (Tune may have stopped the trial at its last epoch already: ASHA's ``max_t``)."""
        if stopped:
            self.fields["stopped"] = stopped
        self._send(final=True)

    def _send(self, *, final: bool = False) -> None:
        epoch, value = self.last
        self.report({"val_score": value, "epoch": epoch, "record": json.dumps(self.fields), "final": final,
                     "node_id": self.node_id})  # fmt: skip


def _trainable(config: dict, context: TrialContext, cpus: float, stop_at: float) -> None:
    """One Ray trial: the trial body, reporting the run's metric on val after each epoch."""
    import ray
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(cpus)))
    reporter = RayReporter(tune.report, trial_id=tune.get_context().get_trial_id(), epochs=context.space.epochs,
                           node_id=ray.get_runtime_context().get_node_id(), stop_at=stop_at)  # fmt: skip
    run_ray_trial(config, context, reporter)


def run_ray_trial(params: dict, context: TrialContext, reporter: RayReporter) -> None:
    """The trial body on a Ray worker, its last fields sent when it ends (ASHA ends it without them)."""
    try:
        run_trial(params, context, reporter)
    except TrialPruned as stop:  # the budget stopped it: its epochs are reported
        reporter.finish(str(stop))
    else:
        reporter.finish(None)


class _DefineSpace:
    """The define-by-run space for OptunaSearch (a class, because Ray pickles its searcher)."""

    def __init__(
        self, space: SearchSpace, candidates: list[Candidate], ranges: dict[str, Range], class_weights: tuple
    ) -> None:
        self.space, self.candidates, self.ranges, self.class_weights = space, candidates, ranges, class_weights

    def __call__(self, trial) -> dict:
        params = suggest(trial, self.space, self.candidates, self.ranges, self.class_weights)
        return {k: v for k, v in params.items() if k not in trial.params}  # fixed values travel as constants


def _distributions(
    space: SearchSpace, candidates: list[Candidate], ranges: dict[str, Range], params: dict, plan_class_weights: list
) -> dict:
    fixed = {
        "candidate": [c.key for c in candidates],
        "strategy": list(space.finetune_strategies),
        "label_smoothing": list(space.label_smoothing),
        "augmentation": list(space.augmentation),
        "class_weight": list(plan_class_weights),
    }
    out = {}
    for key in params:
        if key in fixed:
            out[key] = CategoricalDistribution(fixed[key])
        elif key in ranges and ranges[key].low < ranges[key].high:
            out[key] = FloatDistribution(ranges[key].low, ranges[key].high, log=ranges[key].log)
    return out


def _record(study: optuna.Study, space: SearchSpace, plan: FinetunePlan, result, trial_id: str | None = None) -> None:
    """Add one ended Ray trial to the study: its record as the trial body reported it, where it ran, its
    parameters (the searched ones as Optuna parameters) and its epochs' scores."""
    params = {k: v for k, v in (result.config or {}).items() if not k.startswith("_")}  # None: never reported
    history = result.metrics_dataframe
    where = {"backend": "ray", "ray_trial_id": trial_id}
    if result.error is not None or history is None or history.empty:
        error = str(result.error)[:400] if result.error else "no epoch finished"
        user_attrs = trial_attrs(**where, stage="finetune", error=error, **params)
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, params={}, distributions={}, user_attrs=user_attrs
        )
        study.add_trial(trial)
        return
    final = history["final"].fillna(False).astype(bool) if "final" in history else pd.Series(False, history.index)
    # A trial started again after its node died reports from epoch 1 again: keep its last attempt.
    starts = [
        i for i, (epoch, last) in enumerate(zip(history["epoch"], final, strict=True)) if int(epoch) == 1 and not last
    ]
    nodes = sorted({str(n) for n in history["node_id"].dropna()}) if "node_id" in history else []
    attempts = max(len(starts), 1 + getattr(result, "restarts", 0))
    if starts:
        history, final = history.iloc[starts[-1] :], final.iloc[starts[-1] :]
    last = history.iloc[-1]
    fields = json.loads(last["record"])
    epochs = history[~final]
    if not final.any() and fields["epochs_run"] < fields["epochs_planned"]:  # ASHA, or the search's time budget
        fields["stopped"] = f"stopped by Ray Tune (ASHA or its time budget) after epoch {fields['epochs_run']}"
    state = optuna.trial.TrialState.PRUNED if fields.get("stopped") else optuna.trial.TrialState.COMPLETE
    where.update(node_ids=nodes, ray_attempts=attempts, seconds=float(last.get("time_total_s", 0.0)))
    if "node_id" in history:
        where["node_id"] = str(last["node_id"])
    distributions = _distributions(space, plan.candidates, plan.ranges, params, plan.objective.class_weights)
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=fields["best_val_score"] if state == optuna.trial.TrialState.COMPLETE else None,
            params={k: v for k, v in params.items() if k in distributions},
            distributions=distributions,
            user_attrs=trial_attrs(**fields, **where, **{k: v for k, v in params.items() if k not in distributions}),
            intermediate_values={int(r["epoch"]): float(r["val_score"]) for _, r in epochs.iterrows()},
        )
    )


_METRICS = ("val_score", "epoch", "record", "final", "node_id", "time_total_s")


def _recorder(record):
    """A Tune callback that records each trial in the study as soon as it ends (so a killed driver's
    finished trials are kept for the resumed run). Built lazily: ray is an optional dependency."""
    from ray.tune import Callback

    class Recorder(Callback):
        def __init__(self) -> None:
            self.rows: dict[str, list[dict]] = {}
            self.recorded: set[str] = set()
            self.recoveries: dict[str, int] = {}

        def __getstate__(self) -> dict:  # Tune may pickle its callbacks; the study stays in the driver
            return {"rows": {}, "recorded": set(), "recoveries": {}}

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:  # it failed and starts again
            self.recoveries[trial.trial_id] = self.recoveries.get(trial.trial_id, 0) + 1

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.rows.setdefault(trial.trial_id, []).append({k: result.get(k) for k in _METRICS})

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.finish(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.finish(trial, f"the Ray trial failed ({getattr(trial, 'error_file', None) or 'see the Ray logs'})")

        def finish(self, trial, error: str | None) -> None:
            if trial.trial_id in self.recorded:
                return
            self.recorded.add(trial.trial_id)
            history = pd.DataFrame(self.rows.pop(trial.trial_id, []))
            restarts = self.recoveries.get(trial.trial_id, 0)
            result = SimpleNamespace(config=trial.config, metrics_dataframe=history, error=error, restarts=restarts)
            record(result, trial.trial_id)

    return Recorder()


def _ray_modules() -> SimpleNamespace:
    """Ray, Tune, ASHA and Tune's Optuna searcher, or an AutoTransferError saying how to install them."""
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as error:
        raise AutoTransferError("The Ray backend needs Ray Tune.", fix="pip install 'autotransfer[ray]'.") from error
    return SimpleNamespace(ray=ray, tune=tune, ASHAScheduler=ASHAScheduler, OptunaSearch=OptunaSearch)


def _seconds_and_samples(plan: FinetunePlan, context: RunContext) -> tuple[float, int] | None:
    """The seconds and trial count left for Ray, or None (logged) when there is no room for any."""
    space = context.settings.space
    seconds = context.deadline.left() - context.reserve(best_record(records(plan.studies)))
    if seconds < MIN_SECONDS:
        log.info("time budget: no room for Ray trials")
        return None
    done = sum(t.state.is_finished() for t in plan.studies.finetune.get_trials(deepcopy=False))
    samples = space.max_trials - done
    if samples <= 0:
        log.info("fine-tuning: max_trials (%d) already in the study", space.max_trials)
        return None
    if done:
        log.info("fine-tuning on Ray: %d trial(s) kept from before, %d to run", done, samples)
    return seconds, samples


def _init_ray(ray, settings) -> None:
    """Start (or connect to) Ray unless it is already initialised, keeping a local cluster on loopback."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if ray.is_initialized():
        return
    local = {} if settings.options.ray_address else {"num_cpus": os.cpu_count()}
    loopback = _loopback_host(settings.options.ray_address)
    if loopback:
        _stay_on_loopback()
        local["_node_ip_address"] = loopback
    ray.init(
        address=settings.options.ray_address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        **local,
    )


def _trial_context(plan: FinetunePlan, context: RunContext) -> TrialContext:
    """What each Ray trial needs to load the data and train (plain values, sent to the workers)."""
    settings = context.settings
    device = settings.device or ("cuda" if settings.options.gpus_per_trial > 0 else "cpu")
    data = FolderData(data=str(context.data.resolve()), seed=settings.options.seed,
                      val_fraction=settings.options.val_fraction, device=device)  # fmt: skip
    objective, out = plan.objective, context.out.resolve()
    return TrialContext(space=settings.space, seed=settings.options.seed, metric=objective.metric,
                        rotate=float(objective.rotate), out=out, device=device, data=data)  # fmt: skip


def _tuner(
    modules: SimpleNamespace,
    plan: FinetunePlan,
    context: RunContext,
    trial_context: TrialContext,
    budget: tuple[float, int],
    record,
):
    """The Tune tuner: resourced trainable, Optuna searcher, ASHA scheduler and the recording callback."""
    tune, (seconds, samples) = modules.tune, budget
    settings, space = context.settings, context.settings.space
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable, context=trial_context, cpus=settings.options.cpus_per_trial, stop_at=time.time() + seconds
        ),
        {"cpu": settings.options.cpus_per_trial, "gpu": settings.options.gpus_per_trial},
    )
    searcher = modules.OptunaSearch(
        space=_DefineSpace(space, plan.candidates, plan.ranges, tuple(plan.objective.class_weights)),
        metric="val_score",
        mode="max",
        seed=settings.options.seed,
    )
    scheduler = modules.ASHAScheduler(
        time_attr="epoch",
        max_t=space.epochs,
        grace_period=space.min_epochs,
        reduction_factor=space.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            metric="val_score",
            mode="max",
            num_samples=samples,
            time_budget_s=seconds,
        ),
        run_config=tune.RunConfig(
            storage_path=str((context.out / "ray").resolve()),
            name=f"finetune-{int(time.time())}",  # a resumed run starts a new experiment beside the old
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            callbacks=[_recorder(record)],
            verbose=0,
        ),
    )


class RayBackend:
    """Fine-tuning trials as Ray Tune trials, recorded in ``plan.studies.finetune`` when they end."""

    def run(self, plan: FinetunePlan, context: RunContext) -> None:
        modules = _ray_modules()
        space = context.settings.space
        budget = _seconds_and_samples(plan, context)
        if budget is None:
            return
        context.progress.stage("fine-tuning", total=space.max_trials, detail="on Ray Tune")
        _init_ray(modules.ray, context.settings)
        trial_context = _trial_context(plan, context)
        recorded: set[str] = set()

        def record(result, trial_id: str) -> None:
            recorded.add(trial_id)
            _record(plan.studies.finetune, space, plan, result, trial_id)

        results = _tuner(modules, plan, context, trial_context, budget, record).fit()
        for result in results:  # the trials the callback did not see end (stopped by the time budget)
            trial_id = (result.metrics or {}).get("trial_id")
            if trial_id not in recorded:
                _record(plan.studies.finetune, space, plan, result, trial_id)
