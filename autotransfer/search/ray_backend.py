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
from autotransfer.search.space import Range
from autotransfer.search.trials import config_for, parse_candidate, suggest

log = logging.getLogger(__name__)


def _trainable(config: dict) -> None:
    """One Ray trial: fine-tune, reporting validation accuracy after each epoch."""
    import torch
    from ray import tune

    from autotransfer.data.datasets import load_dataset
    from autotransfer.models.zoo import create_backbone
    from autotransfer.transfer.finetune import TrialPruned, finetune

    context = config.pop("_context")
    torch.set_num_threads(max(1, int(context["cpus"])))
    backbone_name, resolution, _ = parse_candidate(config["candidate"])
    dataset = load_dataset(
        context["data"],
        image_size=resolution,
        seed=context["seed"],
        val_fraction=context["val_fraction"],
        show_progress=False,
    )
    backbone = create_backbone(backbone_name, device=context["device"])
    settings = config_for(config, context["space"], len(backbone.depth_groups), context["seed"])
    folder = Path(context["out"], "trials", f"ray-{tune.get_context().get_trial_id()}")
    tic = time.perf_counter()

    def report(epoch: int, accuracy: float) -> None:
        tune.report(
            {
                "val_accuracy": accuracy,
                "epoch": epoch + 1,
                "checkpoint_dir": str(folder),
                "freeze_groups": settings.freeze_groups,
                "epoch_seconds": (time.perf_counter() - tic) / (epoch + 1),
            }
        )
        if time.time() > context["stop_at"]:
            raise TrialPruned("time budget")

    with contextlib.suppress(TrialPruned):  # ASHA or the budget stopped it: its epochs are reported
        finetune(dataset, backbone, settings, report=report, device=context["device"], checkpoint_dir=folder)


def _distributions(space, candidates: list[str], ranges: dict[str, Range], params: dict) -> dict:
    fixed = {
        "candidate": candidates,
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


def run_ray_stage(search, candidates: list[str], ranges: dict[str, Range]) -> None:
    """Run the fine-tuning trials as Ray Tune trials and record them in ``search.finetune_study``."""
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as error:
        raise AutoTransferError("The Ray backend needs Ray Tune.", fix="pip install 'autotransfer[ray]'.") from error
    settings, space = search.settings, search.space
    seconds = search.deadline.left() - search._reserve(search.best_record())
    if seconds < 20:
        log.info("time budget: no room for Ray trials")
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(
            address=settings.ray_address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            **({} if settings.ray_address else {"num_cpus": os.cpu_count()}),
        )

    context = {
        "data": str(search.data.resolve()),
        "seed": settings.seed,
        "val_fraction": settings.val_fraction,
        "device": settings.device or ("cuda" if settings.gpus_per_trial > 0 else "cpu"),
        "space": space,
        "out": str(search.out.resolve()),
        "cpus": settings.cpus_per_trial,
        "stop_at": time.time() + seconds,
    }
    trainable = tune.with_resources(
        tune.with_parameters(_trainable_with_context, context=context),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                space=_DefineSpace(space, candidates, ranges), metric="val_accuracy", mode="max", seed=settings.seed
            ),
            scheduler=ASHAScheduler(
                time_attr="epoch",
                max_t=space.epochs,
                grace_period=space.min_epochs,
                reduction_factor=space.reduction_factor,
            ),
            metric="val_accuracy",
            mode="max",
            num_samples=space.max_trials,
            time_budget_s=seconds,
        ),
        run_config=tune.RunConfig(storage_path=str((search.out / "ray").resolve()), name="finetune", verbose=0),
    )
    results = tuner.fit()
    for result in results:
        _record(search.finetune_study, space, candidates, ranges, result)


class _DefineSpace:
    """The define-by-run space for OptunaSearch (a class, because Ray pickles its searcher)."""

    def __init__(self, space, candidates: list[str], ranges: dict[str, Range]) -> None:
        self.space, self.candidates, self.ranges = space, candidates, ranges

    def __call__(self, trial) -> dict:
        params = suggest(trial, self.space, self.candidates, self.ranges)
        return {k: v for k, v in params.items() if k not in trial.params}  # fixed values travel as constants


def _trainable_with_context(config: dict, context: dict) -> None:
    _trainable({**config, "_context": context})


def _record(study: optuna.Study, space, candidates, ranges, result) -> None:
    params = {k: v for k, v in result.config.items() if not k.startswith("_")}
    history = result.metrics_dataframe
    attrs = {"backend": "ray", "stage": "finetune", "strategy": params.get("strategy")}
    if result.error is not None or history is None or history.empty:
        attrs["error"] = str(result.error)[:400] if result.error else "no epoch finished"
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                params={},
                distributions={},
                user_attrs={**attrs, **{f"param_{k}": v for k, v in params.items()}},
            )
        )
        return
    backbone, resolution, tap = parse_candidate(params["candidate"])
    best_row = history["val_accuracy"].idxmax()
    last = history.iloc[-1]
    attrs.update(
        backbone=backbone,
        resolution=resolution,
        tap=tap,
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
    distributions = _distributions(space, candidates, ranges, params)
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
