"""The fine-tuning stage on Ray Tune: the same space (OptunaSearch, define-by-run) and objective,
ASHA for early stopping, per-trial CPU/GPU resources (fractional GPUs allowed), on a local Ray or
an existing cluster (``ray_address``). Finished trials are written into the run's Optuna study, so
the leaderboard, the choice of the best trial and the refit are the same as with the Optuna backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from autotransfer.errors import AutoTransferError
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.search.finetune_stage import FinetunePlan
from autotransfer.search.records import best_record, records
from autotransfer.search.space import Range, SearchSpace
from autotransfer.search.trials import config_for, suggest

log = logging.getLogger(__name__)
MIN_SECONDS = 20  # below this, starting Ray and one trial cannot finish anything


def _trainable(config: dict, context: dict) -> None:
    """One Ray trial: fine-tune, reporting validation accuracy after each epoch."""
    import torch
    from ray import tune

    from autotransfer.data.datasets import load_dataset
    from autotransfer.models.zoo import create_backbone
    from autotransfer.transfer.finetune import TrialPruned, finetune

    torch.set_num_threads(max(1, int(context["cpus"])))
    candidate = Candidate.parse(config["candidate"])
    dataset = load_dataset(
        context["data"],
        image_size=candidate.resolution,
        seed=context["seed"],
        val_fraction=context["val_fraction"],
        show_progress=False,
    )
    backbone = create_backbone(candidate.backbone, device=context["device"])
    settings = config_for(config, context["space"], len(backbone.depth_groups), context["seed"])
    folder = Path(context["out"], "trials", f"ray-{tune.get_context().get_trial_id()}")
    tic = time.perf_counter()

    def report(epoch: int, accuracy: float) -> None:
        metrics = {
            "val_accuracy": accuracy,
            "epoch": epoch + 1,
            "checkpoint_dir": str(folder),
            "freeze_groups": settings.freeze_groups,
            "epoch_seconds": (time.perf_counter() - tic) / (epoch + 1),
        }
        tune.report(metrics)
        if time.time() > context["stop_at"]:
            raise TrialPruned("time budget")

    with contextlib.suppress(TrialPruned):  # ASHA or the budget stopped it: its epochs are reported
        finetune(dataset, backbone, settings, report=report, device=context["device"], checkpoint_dir=folder)


class _DefineSpace:
    """The define-by-run space for OptunaSearch (a class, because Ray pickles its searcher)."""

    def __init__(self, space: SearchSpace, candidates: list[Candidate], ranges: dict[str, Range]) -> None:
        self.space, self.candidates, self.ranges = space, candidates, ranges

    def __call__(self, trial) -> dict:
        params = suggest(trial, self.space, self.candidates, self.ranges)
        return {k: v for k, v in params.items() if k not in trial.params}  # fixed values travel as constants


def _distributions(space: SearchSpace, candidates: list[Candidate], ranges: dict[str, Range], params: dict) -> dict:
    fixed = {
        "candidate": [c.key for c in candidates],
        "strategy": list(space.finetune_strategies),
        "label_smoothing": list(space.label_smoothing),
        "augmentation": list(space.augmentation),
    }
    out = {}
    for key in params:
        if key in fixed:
            out[key] = CategoricalDistribution(fixed[key])
        elif key in ranges and ranges[key].low < ranges[key].high:
            out[key] = FloatDistribution(ranges[key].low, ranges[key].high, log=ranges[key].log)
    return out


def _record(study: optuna.Study, space: SearchSpace, plan: FinetunePlan, result) -> None:
    params = {k: v for k, v in result.config.items() if not k.startswith("_")}
    history = result.metrics_dataframe
    attrs = {"backend": "ray", "stage": "finetune", "strategy": params.get("strategy")}
    if result.error is not None or history is None or history.empty:
        attrs["error"] = str(result.error)[:400] if result.error else "no epoch finished"
        user_attrs = {**attrs, **{f"param_{k}": v for k, v in params.items()}}
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, params={}, distributions={}, user_attrs=user_attrs
        )
        study.add_trial(trial)
        return
    candidate = Candidate.parse(params["candidate"])
    best_row = history["val_accuracy"].idxmax()
    last = history.iloc[-1]
    attrs.update(
        backbone=candidate.backbone,
        resolution=candidate.resolution,
        tap=candidate.tap,
        best_epoch=int(history["epoch"][best_row]) - 1,
        epochs_run=int(last["epoch"]),
        best_val_accuracy=float(history["val_accuracy"].max()),
        epoch_seconds=float(last["epoch_seconds"]),
        checkpoint_dir=str(last["checkpoint_dir"]),
        freeze_groups=int(last["freeze_groups"]),
        seconds=float(last.get("time_total_s", 0.0)),
    )
    stopped_early = attrs["epochs_run"] < space.epochs
    if stopped_early:
        attrs["stopped"] = f"ASHA or budget stop after epoch {attrs['epochs_run']}"
    distributions = _distributions(space, plan.candidates, plan.ranges, params)
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED if stopped_early else optuna.trial.TrialState.COMPLETE,
            value=None if stopped_early else attrs["best_val_accuracy"],
            params={k: v for k, v in params.items() if k in distributions},
            distributions=distributions,
            user_attrs={**attrs, **{k: v for k, v in params.items() if k not in distributions}},
            intermediate_values={int(r["epoch"]): float(r["val_accuracy"]) for _, r in history.iterrows()},
        )
    )


class RayBackend:
    """Fine-tuning trials as Ray Tune trials, recorded in ``plan.studies.finetune`` when they end."""

    def run(self, plan: FinetunePlan, context: RunContext) -> None:
        try:
            import ray
            from ray import tune
            from ray.tune.schedulers import ASHAScheduler
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as error:
            raise AutoTransferError(
                "The Ray backend needs Ray Tune.", fix="pip install 'autotransfer[ray]'."
            ) from error
        settings, space = context.settings, context.settings.space
        seconds = context.deadline.left() - context.reserve(best_record(records(plan.studies)))
        if seconds < MIN_SECONDS:
            log.info("time budget: no room for Ray trials")
            return
        context.progress.stage("fine-tuning", total=space.max_trials, detail="on Ray Tune")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if not ray.is_initialized():
            local = {} if settings.ray_address else {"num_cpus": os.cpu_count()}
            ray.init(
                address=settings.ray_address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                **local,
            )
        trial_context = {
            "data": str(context.data.resolve()),
            "seed": settings.seed,
            "val_fraction": settings.val_fraction,
            "device": settings.device or ("cuda" if settings.gpus_per_trial > 0 else "cpu"),
            "space": space,
            "out": str(context.out.resolve()),
            "cpus": settings.cpus_per_trial,
            "stop_at": time.time() + seconds,
        }
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, context=trial_context),
            {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
        )
        searcher = OptunaSearch(
            space=_DefineSpace(space, plan.candidates, plan.ranges),
            metric="val_accuracy",
            mode="max",
            seed=settings.seed,
        )
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=space.epochs,
            grace_period=space.min_epochs,
            reduction_factor=space.reduction_factor,
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                metric="val_accuracy",
                mode="max",
                num_samples=space.max_trials,
                time_budget_s=seconds,
            ),
            run_config=tune.RunConfig(storage_path=str((context.out / "ray").resolve()), name="finetune", verbose=0),
        )
        for result in tuner.fit():
            _record(plan.studies.finetune, space, plan, result)
