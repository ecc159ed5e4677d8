"""`auto` backbones and resolutions: the rules on their own, and a weights directory with extra backbones."""

import numpy as np
import pytest
import torch
from conftest import make_imagefolder
from safetensors.torch import save_file

from autotransfer.data.resolution import profile_resolution
from autotransfer.search import auto_space
from autotransfer.search.auto_space import (
    choose_resolutions,
    native_side,
    resolution_ladder,
    resolutions_reason,
    resolve_auto,
)


@pytest.mark.parametrize(
    ("native", "cuda", "ladder", "profile"),
    [
        (28, False, (64, 96, 128), 64),  # thumbnails: profiled near their size, probed up to 128 too
        (300, False, (64, 96, 128, 160, 192, 224), 128),  # full-size images: up to 224 on a CPU
        (100, False, (64, 96, 128), 128),
        (300, True, (64, 96, 128, 160, 192, 224, 288, 384), 224),  # a GPU goes past 224 for larger images
        (1000, True, (64, 96, 128, 160, 192, 224, 288, 384, 448), 224),
    ],
)
def test_the_ladder_follows_the_images_and_the_device(native, cuda, ladder, profile):
    assert resolution_ladder(native, cuda) == ladder
    assert profile_resolution([native], device="cuda" if cuda else "cpu") == profile


def test_the_second_size_is_the_largest_the_budget_affords():
    ladder = resolution_ladder(300, False)
    # 2000 images at 5 ms each at 128 px: 10 s; 224 px costs 3.06x that.
    assert choose_resolutions(ladder, 128, 0.005, 2000, budget=600) == (128, 224)
    assert choose_resolutions(ladder, 128, 0.005, 2000, budget=180) == (128, 160)
    assert choose_resolutions(ladder, 128, 0.005, 2000, budget=60) == (96, 128)  # only a smaller one fits
    assert "224 px (the largest larger size whose" in resolutions_reason((128, 224), 128, 300, pinned=False)
    assert "96 px (no larger size's extraction fits" in resolutions_reason((96, 128), 128, 300, pinned=False)
    assert resolutions_reason((64,), 64, 28, pinned=False).endswith("only: no other size on the ladder")
    assert resolutions_reason((96, 128), 128, 300, pinned=True) == "sizes pinned by the search space"


def test_native_side_reads_headers(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"a": 3, "b": 3}, size=(300, 200))
    assert native_side(root) == 200


def _weights_dir(tmp_path, names):
    folder = tmp_path / "weights"
    folder.mkdir()
    from autotransfer.models.zoo import create_backbone

    for name in names:
        torch.manual_seed(0)
        model = create_backbone(name, pretrained=False, keep_classifier=True).model
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / f"{name}.safetensors"))
    return folder


def test_backbones_come_from_the_weights_directory_and_are_timed_here(tmp_path, monkeypatch):
    folder = _weights_dir(tmp_path, ["test_efficientnet", "test_resnet", "test_convnext"])
    monkeypatch.setenv("AUTOTRANSFER_WEIGHTS", str(folder))
    names = auto_space.available_backbones(cuda=False)
    assert names[:3] == ["test_convnext", "test_efficientnet", "test_resnet"]  # the user's first, then the zoo
    candidates = ["test_efficientnet", "test_resnet", "test_convnext", "no_such_model"]
    monkeypatch.setattr(auto_space, "available_backbones", lambda cuda: candidates)
    sample = np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8)
    choice = resolve_auto((), (), sample, native=28, n_images=200, budget=600, device=torch.device("cpu"))
    assert set(choice.seconds_per_image) == {"test_efficientnet", "test_resnet", "test_convnext"}
    assert "no_such_model" in choice.skipped  # with the reason it could not be created
    assert 1 <= len(choice.backbones) <= auto_space.MAX_BACKBONES
    fastest = min(choice.seconds_per_image, key=choice.seconds_per_image.get)
    assert choice.backbones[0] == fastest and choice.resolutions == (64, 128) and choice.profile_resolution == 64
    pinned = resolve_auto(
        ("test_resnet",), (32,), sample, native=28, n_images=200, budget=600, device=torch.device("cpu")
    )
    assert pinned.backbones == ("test_resnet",) and pinned.resolutions == (32,)


def test_a_short_budget_times_one_backbone_only(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTRANSFER_WEIGHTS", str(_weights_dir(tmp_path, ["test_efficientnet", "test_resnet"])))
    monkeypatch.setattr(auto_space, "DEFAULT_BACKBONE", "test_efficientnet")
    monkeypatch.setattr(auto_space, "available_backbones", lambda cuda: ["test_resnet", "test_efficientnet"])
    sample = np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8)
    choice = resolve_auto(
        (), (), sample, native=28, n_images=200, budget=auto_space.SHORT_BUDGET - 1, device=torch.device("cpu")
    )
    assert choice.backbones == ("test_efficientnet",) and "test_resnet" in choice.skipped
    assert choice.skipped["test_resnet"].startswith("59 s were left for the search, under 60 s: one backbone")


def test_a_reason_shared_by_the_backbones_left_out_is_said_once(monkeypatch, caplog):
    """The fifth fresh user: at a 1-minute budget the same long sentence came once per backbone left out."""
    from autotransfer.report.search_choices import describe_auto

    names = ["net_a", "net_b", "net_c", auto_space.DEFAULT_BACKBONE]
    monkeypatch.setattr(auto_space, "available_backbones", lambda cuda: names)
    monkeypatch.setattr(auto_space, "time_backbones", lambda names, sample, device: (dict.fromkeys(names, 0.01), {}))
    sample = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    with caplog.at_level("INFO", logger="autotransfer.search.auto_space"):
        choice = resolve_auto((), (), sample, native=64, n_images=40, budget=30, device=torch.device("cpu"))
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]
    assert line.count("30 s were left for the search") == 1
    assert "; left out net_a, net_b, net_c: 30 s were left for the search, under 60 s: one backbone" in line
    said = describe_auto(choice.to_json(), [])
    assert said.count("30 s were left") == 1 and "left out: net_a, net_b, net_c: 30 s were left" in said


def test_the_second_size_goes_to_the_best_backbone_of_the_first():
    import optuna

    from autotransfer.search.probe_stage import pair_order

    study = optuna.create_study(direction="maximize")
    order = pair_order(study, (224, 128), ("a", "b", "c"))
    first = [next(order) for _ in range(3)]
    assert first == [(128, "a"), (128, "b"), (128, "c")]  # the first size: auto's order (fastest first)
    for name, score in (("a", 0.5), ("b", 0.7), ("b", 0.6), ("c", 0.6)):  # probes of the first size end
        study.add_trial(optuna.trial.create_trial(value=score, user_attrs={"backbone": name}))
    assert list(order) == [(224, "b"), (224, "c"), (224, "a")]


def test_a_backbone_left_out_for_the_extraction_share_says_which_share(monkeypatch):
    """The fresh-user trial: "extracting its features (about 26 s here) does not fit the budget" read as
    wrong beside a 180 s budget; the rule is the backbones' cumulative share of it."""
    monkeypatch.setattr(auto_space, "available_backbones", lambda cuda: ["fast_net", "slow_net"])
    monkeypatch.setattr(
        auto_space, "time_backbones", lambda names, sample, device: ({"fast_net": 0.01, "slow_net": 1.0}, {})
    )
    sample = np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8)
    choice = resolve_auto((), (), sample, native=64, n_images=200, budget=120, device=torch.device("cpu"))
    assert choice.backbones == ("fast_net",)
    reason = choice.skipped["slow_net"]
    assert "past its share of the budget (35%: 42 s; the faster ones take" in reason, reason
    # the sixth fresh-user trial: this sentence came once per backbone it left out (each with its own cost)
    monkeypatch.setattr(auto_space, "available_backbones", lambda cuda: ["fast_net", "slow_net", "slower_net"])
    timed = {"fast_net": 0.01, "slow_net": 1.0, "slower_net": 2.0}
    monkeypatch.setattr(auto_space, "time_backbones", lambda names, sample, device: (timed, {}))
    choice = resolve_auto((), (), sample, native=64, n_images=200, budget=120, device=torch.device("cpu"))
    assert choice.skipped["slow_net"] == choice.skipped["slower_net"]  # one reason, said once (reasons_once)
