"""Ensembles: greedy selection on validation probabilities, and an ensemble pipeline saved, reloaded,
predicted and exported (ONNX and TorchScript: one graph) with the same labels."""

import json

import numpy as np
import pytest
import torch
from conftest import colour_image, exported_probabilities, make_imagefolder

from autotransfer.data.datasets import load_dataset
from autotransfer.deploy.ensemble import EnsemblePipeline
from autotransfer.deploy.export import export
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.errors import AutoTransferError
from autotransfer.models.zoo import create_backbone
from autotransfer.search.ensemble_selection import greedy_selection, worth_it
from autotransfer.search.ensemble_stage import candidates
from autotransfer.search.records import TrialRecord
from autotransfer.transfer.finetune import FinetuneConfig, finetune


def _accuracy(labels):
    return lambda p: float((p.argmax(1) == labels).mean())


def test_greedy_selection_combines_members_that_err_on_different_images():
    labels = np.array([0, 1, 0, 1, 0, 1])
    right, wrong = [0.9, 0.1], [0.4, 0.6]

    def member(wrong_at):
        rows = [right if y == 0 else right[::-1] for y in labels]
        for i in wrong_at:
            rows[i] = wrong if labels[i] == 0 else wrong[::-1]
        return np.array(rows)

    # each member is wrong on two different images, weakly: any two together are right on all six
    members = [member([0, 1]), member([2, 3]), member([4, 5])]
    choice = greedy_selection(members, _accuracy(labels))
    assert choice.single_score == pytest.approx(4 / 6)
    assert choice.score == 1.0 and len(choice.weights) >= 2
    assert sum(choice.weights.values()) == pytest.approx(1.0)
    assert worth_it(choice, n_val=len(labels))


def test_greedy_selection_keeps_the_best_alone_when_others_add_nothing():
    labels = np.array([0, 1, 0, 1])
    best = np.eye(2)[labels] * 0.8 + 0.1
    worse = np.tile([0.6, 0.4], (4, 1))
    choice = greedy_selection([best, worse], _accuracy(labels))
    assert choice.weights == {0: 1.0}
    assert not worth_it(choice, n_val=4)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """Two members that differ in backbone and input size (tiny timm test models, generated images)."""
    root = make_imagefolder(tmp_path_factory.mktemp("ens") / "d", {"a": 8, "b": 8, "c": 8})
    members = []
    for name, size in (("test_efficientnet", 32), ("test_resnet", 40)):
        dataset = load_dataset(root, image_size=size, show_progress=False)
        torch.manual_seed(0)
        backbone = create_backbone(name, pretrained=False)
        config = FinetuneConfig(strategy="finetune_all", epochs=1, batch_size=8, bf16=False, warmup_epochs=0)
        result = finetune(dataset, backbone, config)
        members.append(
            Pipeline.from_model(
                backbone,
                result.model,
                classes=dataset.classes,
                recipe=dataset.recipe,
                frozen_groups=0,
                head_type="linear",
                strategy="finetune_all",
                hyperparameters={},
                metrics={},
            )  # fmt: skip
        )
    pipeline = EnsemblePipeline.from_members(members, [0.75, 0.25], metrics={"val_score": 1.0}, summary="two")
    folder = pipeline.save(tmp_path_factory.mktemp("ck") / "pipeline")
    return pipeline, folder, members


def _images():
    return [colour_image(seed, size) for seed, size in enumerate([(40, 30), (64, 64), (90, 50), (33, 71)] * 2)]


def test_an_ensemble_averages_its_members_and_reloads_identically(ensemble):
    pipeline, folder, members = ensemble
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["kind"] == "ensemble" and [m["path"] for m in spec["members"]] == ["members/00", "members/01"]
    assert all((folder / m["path"] / "model.safetensors").is_file() for m in spec["members"])
    images = _images()
    expected = 0.75 * members[0].predict_proba(images) + 0.25 * members[1].predict_proba(images)
    # the members classify in streamed batches of another composition than here: float32 sums differ by up to ~2e-5
    np.testing.assert_allclose(pipeline.predict_proba(images), expected, atol=1e-4)
    loaded = Pipeline.load(folder, device="cpu")
    assert isinstance(loaded, EnsemblePipeline)
    np.testing.assert_allclose(loaded.predict_proba(images), expected, atol=1e-4)
    assert list(loaded.predict(images)) == list(pipeline.predict(images))


def test_an_edited_ensemble_checkpoint_is_refused(ensemble, tmp_path):
    _, folder, _ = ensemble
    spec = json.loads((folder / "pipeline.json").read_text())
    spec["members"][0]["weight"] = 0.1
    copy = tmp_path / "edited"
    copy.mkdir()
    (copy / "pipeline.json").write_text(json.dumps(spec))
    with pytest.raises(AutoTransferError, match="hash mismatch"):
        Pipeline.load(copy, device="cpu")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_ensemble_is_one_graph_with_the_same_labels(ensemble, tmp_path, fmt):
    _, folder, _ = ensemble
    pipeline = Pipeline.load(folder, device="cpu")
    path = export(pipeline, fmt, tmp_path / f"model.{fmt}")
    images = _images()
    expected = pipeline.predict_proba(images)
    got = exported_probabilities(path, fmt, images)
    assert list(got.argmax(1)) == list(expected.argmax(1))
    np.testing.assert_allclose(got, expected, atol=5e-4)


def test_ensemble_candidates_are_diverse_best_first(tmp_path):
    def probe(trial, backbone, tap, score):
        return TrialRecord(stage="probe", trial=trial, status="complete", backbone=backbone, resolution=64, tap=tap,
                           val_score=score)  # fmt: skip

    rows = [probe(0, "a", "head", 0.9), probe(1, "a", "head", 0.85), probe(2, "b", "head", 0.8),
            probe(3, "a", "blocks.3", 0.7), probe(4, "c", "head", None)]  # fmt: skip
    chosen = candidates(rows, rows[0])
    assert [r.trial for r in chosen] == [0, 2, 3]  # the same (backbone, size, tap) once; unscored left out


def test_a_run_saves_the_ensemble_when_selection_says_it_wins(fit_env, monkeypatch):
    """The wiring from the search to the saved pipeline: with the gain test forced, `fit` saves an
    ensemble of its best configurations, which reloads and predicts; `--no-ensemble` keeps one."""
    from autotransfer import AutoTransfer
    from autotransfer.search import ensemble_stage

    monkeypatch.setattr(ensemble_stage, "worth_it", lambda choice, n_val: True)
    monkeypatch.setattr(ensemble_stage, "greedy_selection", lambda probabilities, scorer: _halves(probabilities))
    estimator = AutoTransfer(time_budget="3m", search_space=fit_env["space"], out=fit_env["out"],
                             profile_backbone="test_efficientnet", verbose=0)  # fmt: skip
    estimator.fit(fit_env["data"])
    spec = json.loads((fit_env["out"] / "pipeline" / "pipeline.json").read_text())
    assert spec["kind"] == "ensemble" and len(spec["members"]) == 2
    loaded = Pipeline.load(fit_env["out"], device="cpu")
    assert isinstance(loaded, EnsemblePipeline)
    assert list(loaded.predict(fit_env["data"])) == list(estimator.predict(fit_env["data"]))
    assert "test" in spec["metrics"] or "val" in spec["metrics"]


def _halves(probabilities):
    from autotransfer.search.ensemble_selection import EnsembleChoice

    return EnsembleChoice({0: 0.5, 1: 0.5}, score=1.0, single_score=0.5)


def test_the_ensembles_reason_compares_like_with_like_and_names_the_leaderboards_cv_means():
    """The fresh-user trial: "against 0.85 for the best alone" (validation split) sat beside the ★'s 0.93, a CV
    mean, as if the two were one kind of figure."""
    from autotransfer.search.ensemble_selection import EnsembleChoice
    from autotransfer.search.ensemble_stage import Ensemble, selection_words

    probe = TrialRecord(stage="probe", trial=0, status="complete", val_score=0.93, score_source="cv")
    tuned = TrialRecord(stage="finetune", trial=1, status="complete", val_score=0.86, score_source="val")
    words = selection_words(Ensemble([probe, tuned], EnsembleChoice({0: 0.5, 1: 0.5}, 0.9, 0.85), []))
    assert "0.9000 on the validation split against 0.8500 for the best member alone on the same split" in words
    assert "the leaderboard's search scores of probes are CV means on train+val, not these" in words
    assert "CV" not in selection_words(Ensemble([tuned], EnsembleChoice({0: 1.0}, 0.9, 0.85), []))


def test_an_ensembles_fine_tuned_members_are_retrained_on_train_val_heaviest_first_while_it_fits(monkeypatch):
    """The reserve keeps the best trial's refit on train+val; an ensemble that replaced it used to keep every
    fine-tuned member's train-only weights and leave that time unused (a 15-minute glyphs cell: 26%)."""
    from types import SimpleNamespace

    from autotransfer.budget import Deadline
    from autotransfer.search import ensemble_stage, planner
    from autotransfer.search.refit import FinalModel

    deadline = Deadline(100.0)
    calls = []

    def refit(context, record, keep):  # uses the time left: none remains for the next member
        calls.append((record.trial, keep))
        deadline.seconds = 0.0
        return FinalModel(None, None, True)

    monkeypatch.setattr(ensemble_stage, "refit_finetune", refit)
    monkeypatch.setattr(ensemble_stage, "trial_model", lambda context, record: FinalModel(None, None, False))
    monkeypatch.setattr(ensemble_stage, "probe_model", lambda context, record, splits: FinalModel(None, None, True))
    held_out = SimpleNamespace(indices=lambda split: range(10 if split == "val" else 30))
    # one forward over val+test is 1 s a member, 0.75 s over the test split: 2.25 s kept for the three
    one_refit = deadline.left() - 2.25 - planner.SAVE_SECONDS - 1.0  # fits, without the 20% margin
    context = SimpleNamespace(deadline=deadline, evaluation_seconds=lambda record: 2.0,
                              dataset=lambda resolution: held_out, refit_estimate=lambda record: one_refit)  # fmt: skip
    light = TrialRecord(stage="finetune", trial=3, status="complete")
    probe = TrialRecord(stage="probe", trial=0, status="complete")
    heavy = TrialRecord(stage="finetune", trial=5, status="complete")
    finals = ensemble_stage._saved_members(context, [light, probe, heavy], [0.3, 0.2, 0.5])
    assert [f.refit for f in finals] == [False, True, True]  # in the members' order
    assert calls == [(5, pytest.approx(2.25))]  # the heaviest, leaving the members' test forwards their time


def test_the_ensemble_starts_with_the_best_whenever_the_reserve_is_left(monkeypatch):
    """The fifth fresh-user trial: "ensemble: no time for more candidates (85s left, 74s kept for the final
    pipeline, about 25s needed for the next)" before the first candidate, the best itself, whose fp32 features
    and held-out forwards the reserve already holds for the final pipeline; 25% of the budget went unused."""
    from types import SimpleNamespace

    from autotransfer.budget import Deadline
    from autotransfer.search import ensemble_stage

    built = []
    monkeypatch.setattr(ensemble_stage, "member_pipeline", lambda context, record, splits: built.append(record.trial))
    monkeypatch.setattr(ensemble_stage, "split_probabilities", lambda pipeline, dataset, split: np.eye(2)[[0, 1]])
    monkeypatch.setattr(ensemble_stage, "greedy_selection", lambda probabilities, scorer: _halves(probabilities))
    monkeypatch.setattr(ensemble_stage, "worth_it", lambda choice, n_val: True)
    dataset = SimpleNamespace(indices=lambda split: np.arange(2), labels=np.array([0, 1]), classes=["a", "b"])
    settings = SimpleNamespace(options=SimpleNamespace(ensemble=True), space=SimpleNamespace(ensemble=True))
    context = SimpleNamespace(settings=settings, dataset=lambda resolution: dataset, deadline=Deadline(100.0),
                              objective=SimpleNamespace(metric="accuracy"), evaluation_seconds=lambda record: 12.5,
                              reserve=lambda best: 80.0)  # fmt: skip
    rows = [TrialRecord(stage="probe", trial=i, status="complete", backbone=name, resolution=64, tap="head",
                        val_score=0.9 - i / 10) for i, name in enumerate("ab")]  # fmt: skip
    ensemble = ensemble_stage.choose_ensemble(context, rows, rows[0])
    assert built == [0, 1] and ensemble is not None and len(ensemble.members) == 2
    context.reserve = lambda best: 100.0  # not even the reserve is left: nothing starts
    built.clear()
    assert ensemble_stage.choose_ensemble(context, rows, rows[0]) is None and built == []


def test_members_trained_at_the_same_size_share_one_resize_in_the_graph():
    """An exported ensemble of four members resized a 12-MP photo four times (about 0.66 s each on 2 cores):
    members with the same training resize now share one, and the probabilities are unchanged."""
    from torch import nn

    from autotransfer.deploy.ensemble import EnsembleNet
    from autotransfer.deploy.graph_resize import GraphResize

    class Member(nn.Module):  # a classifier as ConvClassifier is: its resize first, then scores
        def __init__(self, size: int, scale: float) -> None:
            super().__init__()
            self.resize, self.scale = GraphResize(size, crop=True, interpolation="bicubic"), scale

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            pixels = images if self.resize is None else self.resize(images)
            return pixels.mean(dim=(2, 3)) * self.scale

    images = torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8)
    members = [Member(32, 0.01), Member(32, 0.02), Member(40, 0.03)]
    alone = [torch.softmax(m(images.float()), dim=1) for m in members]
    net = EnsembleNet(members, [0.5, 0.3, 0.2])
    assert len(net.resizes) == 2 and net.resize_of == [0, 0, 1]
    expected = torch.log(0.5 * alone[0] + 0.3 * alone[1] + 0.2 * alone[2])
    torch.testing.assert_close(net(images), expected)
