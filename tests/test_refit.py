"""The final refit on train+val: bounded by the run's deadline less the evaluation and saving, and
dropped for the trial's own weights when a load that came up after the estimate stops it early."""

from dataclasses import replace
from functools import partial
from types import SimpleNamespace

import pytest
from conftest import make_imagefolder

from autotransfer.budget import Deadline
from autotransfer.data.datasets import load_dataset
from autotransfer.models.zoo import create_backbone
from autotransfer.options import RunOptions
from autotransfer.search import planner, refit
from autotransfer.search.context import RunContext
from autotransfer.search.objective import Objective
from autotransfer.search.records import TrialRecord
from autotransfer.search.space import load_search_space

BEST = TrialRecord(stage="finetune", trial=0, status="complete", strategy="finetune_all",
                   backbone="test_efficientnet", resolution=32, tap="head", candidate="test_efficientnet@32/head",
                   best_epoch=2, epoch_seconds=1.0, head_lr=1e-3, backbone_lr_ratio=0.1,
                   weight_decay=1e-3)  # fmt: skip


@pytest.fixture
def context(tmp_path):
    make_imagefolder(tmp_path / "d", {"a": 8, "b": 8})
    dataset = load_dataset(tmp_path / "d", image_size=32, show_progress=False)
    backbone = create_backbone("test_efficientnet", pretrained=False)
    context = SimpleNamespace(
        dataset=lambda size: dataset,
        backbone=lambda name: backbone,
        settings=SimpleNamespace(space=load_search_space("default"), options=RunOptions(seed=0)),
        objective=Objective(metric="accuracy", reason=""),
        evaluation_seconds=lambda best: 5.0,
        split_sizes=lambda size: (len(dataset.indices("train")), len(dataset.indices("val"))),
        deadline=Deadline(600.0),
        device="cpu",
        fp32_features=set(),
    )
    context.refit_fits = partial(RunContext.refit_fits, context)  # the real estimate, on this stand-in
    context.refit_estimate = partial(RunContext.refit_estimate, context)
    return context


def _fake_finetune(epochs_run: int, seen: dict):
    def finetune(dataset, backbone, config, *, device, deadline):
        seen.update(deadline=deadline, epochs=config.epochs, splits=set(dataset.splits))
        return SimpleNamespace(model="refit model", history=[object()] * epochs_run)

    return finetune


def test_the_refit_trains_on_train_val_within_the_deadline_less_evaluation_and_saving(context, monkeypatch):
    seen: dict = {}
    monkeypatch.setattr(refit, "finetune", _fake_finetune(3, seen))
    final = refit.final_model(context, BEST)
    assert final.refit and final.model == "refit model"
    assert seen["epochs"] == 3 and seen["splits"] == {"train", "val"}  # val: one image the trainer reports on
    assert seen["deadline"].seconds == pytest.approx(600.0 - planner.SAVE_SECONDS - 5.0)
    assert seen["deadline"].start == context.deadline.start


def test_a_refit_the_budget_stopped_early_gives_way_to_the_trials_weights(context, monkeypatch):
    monkeypatch.setattr(refit, "finetune", _fake_finetune(1, {}))
    monkeypatch.setattr(refit, "trial_model", lambda context, best: "trial weights")
    assert refit.final_model(context, BEST) == "trial weights"


def test_no_refit_starts_when_its_estimate_does_not_fit(context, monkeypatch):
    called = []
    monkeypatch.setattr(refit, "finetune", lambda *a, **k: called.append(1))
    monkeypatch.setattr(refit, "trial_model", lambda context, best: "trial weights")
    context.deadline = Deadline(planner.SAVE_SECONDS + 5.0 + 1.0)  # the refit's ~4 s estimate x 1.2 does not fit
    assert refit.final_model(context, BEST) == "trial weights" and not called


def test_the_summary_names_the_class_weighting_of_a_chosen_probe():
    """The fresh-user trial: a probe chosen with balanced class weights said so only in the report's CSV."""
    from autotransfer.search.refit import summary_words

    best = TrialRecord(stage="probe", trial=0, status="complete", strategy="linear_probe", head="softmax", C=1.0,
                       tap="head", backbone="mobilenetv2_100", resolution=128)  # fmt: skip
    assert summary_words(best, 9).endswith("at 128px, backbone frozen")
    assert summary_words(replace(best, class_weight="none"), 9).endswith("backbone frozen")
    assert summary_words(replace(best, class_weight="balanced"), 9).endswith("backbone frozen, balanced class weights")


def test_a_refit_probe_is_fit_on_the_features_the_pipeline_computes(context, monkeypatch):
    """The search probes bf16 features where the CPU has bf16; the saved pipeline classifies in fp32.
    A head fit on bf16 features once scored 1.0 in cross-validation and missed 4 of its own 5 minority
    images once saved: the final head must be fit on fp32 features, and give the pipeline's answers."""
    import numpy as np
    import torch

    from autotransfer.models import features

    asked = []
    real = features.extract_features
    monkeypatch.setattr(
        features, "extract_features", lambda *a, **k: asked.append(k.get("bf16", True)) or real(*a, **k)
    )
    best = TrialRecord(stage="probe", trial=0, status="complete", backbone="test_efficientnet", resolution=32,
                       tap="head", head="torch", C=1.0, class_weight="none")  # fmt: skip
    final = refit.probe_model(context, best, ("train", "val"))
    assert asked == [False]
    assert context.fp32_features == {("test_efficientnet", 32, "head")}  # a second refit reads them (reserve)
    dataset = context.dataset(32)
    fp32 = real(dataset, context.backbone("x"), ["head"], bf16=False, show_progress=False)["head"]
    x = torch.from_numpy(np.array(dataset.images[:6])).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(final.backbone.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(final.backbone.preprocess.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = final.model((x - mean) / std)
        head = final.model.head(torch.from_numpy(np.asarray(fp32[:6])).float())
    torch.testing.assert_close(logits, head, atol=1e-4, rtol=1e-4)
