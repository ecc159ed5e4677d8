"""The final pipeline from the best record: a probe's head refit on train+val, a fine-tuned
configuration retrained on train+val when the budget allows (its own weights otherwise), then
evaluated on validation (the configuration trained on train only) and test, and described in words."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autotransfer.cpu_threads import use_free_cpus
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.models.zoo import COMBINED_TAP, Backbone
from autotransfer.search import planner
from autotransfer.search.context import RunContext
from autotransfer.search.evaluate import evaluate_split
from autotransfer.search.records import TrialRecord
from autotransfer.search.trials import HYPERPARAMETERS, PIPELINE_HYPERPARAMETERS, config_for, describe
from autotransfer.transfer.checkpoint import load_checkpoint
from autotransfer.transfer.feature_rows import tap_rows
from autotransfer.transfer.finetune import finetune
from autotransfer.transfer.probes import ProbeOptions, refit_head
from autotransfer.transfer.strategies import STRATEGIES
from autotransfer.transfer.transfer_model import TransferModel

log = logging.getLogger(__name__)


@dataclass
class FinalModel:
    """A trained model and its backbone; ``refit``: trained on train+val (else on train only)."""

    model: TransferModel
    backbone: Backbone
    refit: bool


def probe_model(context: RunContext, best: TrialRecord, splits: tuple[str, ...]) -> FinalModel:
    """The probe's head fit on ``splits`` of the cached tap features."""
    dataset = context.dataset(best.resolution)
    backbone = context.backbone(best.backbone)
    # The pipeline classifies in fp32 (predict, export), so its head is fit on fp32 features. The search's
    # bf16 features rank the probes well but are not the pipeline's: a head fit on them can miss what it
    # scored on its own training images (tests/test_refit.py).
    rows = np.concatenate([dataset.indices(s) for s in splits])
    features = tap_rows(dataset, backbone, best.tap, bf16=False).take(rows)  # read batch by batch, never copied
    context.fp32_features.add((best.backbone, best.resolution, best.tap))
    weight = None if (best.class_weight or "none") == "none" else best.class_weight
    options = ProbeOptions(seed=context.settings.options.seed, class_weight=weight)
    # no deadline: a head cut short after a few batches is worse than a refit a little past the reserve,
    # which counts the probe's estimate of this fit (RunContext.reserve)
    head = refit_head(options, best.head, best.C, features, dataset.labels[rows], n_classes=len(dataset.classes))
    model = TransferModel(backbone, best.tap, len(dataset.classes)).set_linear_head(head)
    device = next(backbone.model.parameters()).device
    return FinalModel(model.to(device).eval(), backbone, refit="val" in splits)


def trial_model(context: RunContext, best: TrialRecord) -> FinalModel:
    """A fine-tuning trial's own best weights (trained on train only)."""
    backbone = context.backbone(best.backbone)
    model = TransferModel(backbone, best.tap, len(context.dataset(best.resolution).classes))
    state, _ = load_checkpoint(Path(best.checkpoint_dir))
    model.load_state_dict(state, strict=False)  # a cached-prefix trial saved no (frozen, pretrained) prefix
    return FinalModel(model.eval(), backbone, refit=False)


def refit_finetune(context: RunContext, best: TrialRecord, *, keep: float | None = None) -> FinalModel | None:
    """The best trial's configuration again, on train+val, for as many epochs as its best one.

    None when the budget stops it before its last epoch (a load that came up after the estimate):
    a partly trained refit is no better than the trial's own weights, which are kept instead.
    The refit must leave the evaluation (or ``keep`` seconds of other work) and saving their time, so its
    deadline is the run's less that.
    """
    dataset = context.dataset(best.resolution)
    splits = np.where(dataset.splits == "test", "test", "train")
    splits[dataset.indices("val")[:1]] = "val"  # the trainer reports on a val split: one image, not selected on
    backbone = context.backbone(best.backbone)
    params = best.hyperparameters(HYPERPARAMETERS)
    settings = context.settings
    epochs = (best.best_epoch or 0) + 1
    metric = context.objective.metric
    rotate = float(context.objective.rotate)
    n_groups = len(backbone.depth_groups)
    config = config_for(params, space=settings.space, n_groups=n_groups, seed=settings.options.seed, epochs=epochs,
                        metric=metric, rotate=rotate)  # fmt: skip
    config = replace(config, keep="last", patience=config.epochs)
    keep = context.evaluation_seconds(best) if keep is None else keep
    deadline = context.deadline.less(planner.SAVE_SECONDS + keep)
    result = finetune(replace(dataset, splits=splits), backbone, config, device=context.device, deadline=deadline)
    if len(result.history) < config.epochs:
        log.info(
            "time budget: the refit on train+val stopped after %d of %d epochs; keeping the trial's own weights",
            len(result.history),
            config.epochs,
        )
        return None
    return FinalModel(result.model, backbone, refit=True)


def final_model(context: RunContext, best: TrialRecord) -> FinalModel:
    if best.stage == "probe":
        return probe_model(context, best, ("train", "val"))
    if not context.refit_fits(best):
        log.info("time budget: keeping the trial's own weights (no room to refit on train+val)")
        return trial_model(context, best)
    return refit_finetune(context, best) or trial_model(context, best)


def summary_words(best: TrialRecord, n_groups: int) -> str:
    if best.stage == "probe":
        kind = {"softmax": "softmax", "svm": "linear SVM"}.get(best.head, best.head)
        parts = best.tap.split(COMBINED_TAP)
        taps = f"tap `{parts[0]}`" if len(parts) == 1 else "taps " + " + ".join(f"`{p}`" for p in parts) + " together"
        weighted = best.class_weight not in (None, "none")
        return (
            f"{best.strategy}: {kind} (C={best.C:g}) on {taps} of {best.backbone} "
            f"at {best.resolution}px, backbone frozen" + (f", {best.class_weight} class weights" if weighted else "")
        )
    return describe(best.hyperparameters(HYPERPARAMETERS), n_groups)


def to_pipeline(context: RunContext, best: TrialRecord, final: FinalModel, metrics: dict) -> Pipeline:
    dataset = context.dataset(best.resolution)
    n_groups = len(final.backbone.depth_groups)
    frozen = STRATEGIES[best.strategy].frozen_groups(n_groups, best.freeze_groups or 0)
    return Pipeline.from_model(
        final.backbone,
        final.model,
        classes=dataset.classes,
        recipe=dataset.recipe,
        frozen_groups=frozen,
        head_type=best.head if best.stage == "probe" else "linear",
        strategy=best.strategy,
        hyperparameters=best.hyperparameters(PIPELINE_HYPERPARAMETERS),
        metrics=metrics,
        summary=summary_words(best, n_groups),
    )


def build_pipeline(context: RunContext, best: TrialRecord, selection: str = "") -> tuple[Pipeline, bool]:
    """The final pipeline (metrics included) and whether it was refit on train+val; ``selection``: why
    ``best`` is not the top score, when the small-data rule chose it (search/selection.py)."""
    use_free_cpus()
    final = final_model(context, best)
    objective = context.objective
    cross_validated = best.stage == "probe" and bool(objective.cv_folds)  # trials use the val split
    metrics = {"metric": objective.metric, "metric_reason": objective.reason, "val_score": best.val_score,
               "val_score_from": "cross-validation" if cross_validated else "validation split",
               "val_accuracy": best.val_accuracy, "refit_on_train_val": final.refit}  # fmt: skip
    if selection:
        metrics["selection"] = selection
    pipeline = to_pipeline(context, best, final, metrics)
    dataset = context.dataset(best.resolution)
    if len(dataset.indices("val")):
        chosen = probe_model(context, best, ("train",)) if best.stage == "probe" else None
        if chosen is None and final.refit:
            chosen = trial_model(context, best)
        validating = to_pipeline(context, best, chosen, {}) if chosen is not None else pipeline
        metrics["val"] = evaluate_split(validating, dataset, "val", context.out, objective.metric)
    if len(dataset.indices("test")):
        metrics["test"] = evaluate_split(pipeline, dataset, "test", context.out, objective.metric)
        metrics["test_accuracy"] = metrics["test"]["accuracy"]
    return pipeline, final.refit
