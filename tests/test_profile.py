"""The profiler: JSON contract, dataset statistics, quadrant thresholds, degenerate inputs (fast tier)."""

import json
import math

import numpy as np
import pytest
from conftest import make_imagefolder
from PIL import Image

from autotransfer.data.datasets import load_dataset
from autotransfer.models.zoo import create_backbone
from autotransfer.transfer.calibration import similarity_score
from autotransfer.transfer.profile import Thresholds, profile_dataset

REFS = {"imagenet_photos": 0.5, "noise": 5.0}
KEYS = {
    "n_images",
    "n_classes",
    "images_per_class",
    "similarity",
    "layer_distance",
    "quadrant",
    "recommended_strategy",
    "prior",
    "problems",
}


@pytest.fixture(scope="module")
def tiny_net():
    import torch

    torch.manual_seed(0)
    net = create_backbone("test_efficientnet", pretrained=False)
    # give the BN layers non-trivial "ImageNet" statistics, as a pretrained network has
    for module in net.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net


def _profile(root, net, **kwargs):
    return profile_dataset(
        root, backbone=net, image_size=kwargs.pop("image_size", 32), references=REFS, show_progress=False, **kwargs
    )


def test_json_contract(imagefolder, tiny_net):
    p = _profile(imagefolder, tiny_net).to_json()
    assert set(p) >= KEYS
    assert p["n_images"] == 17 and p["n_classes"] == 3 and p["images_per_class"] == {"birds": 5, "cats": 6, "dogs": 6}
    assert 0.0 <= p["similarity"] <= 1.0
    assert p["quadrant"] in {"small-similar", "small-different", "large-similar", "large-different"}
    assert [r["layer"] for r in p["layer_distance"]][0].startswith(("bn1", "conv_stem", "blocks.0"))
    assert all(r["distance"] > 0 for r in p["layer_distance"])
    assert set(p["prior"]) >= {"strategies", "taps", "freeze_groups", "head_lr", "backbone_lr_ratio"}
    assert p["recommended_strategy"] == p["prior"]["strategies"][0]
    json.dumps(p, allow_nan=False)  # strict JSON


def test_statistics_duplicates_leakage_and_grayscale(tmp_path, tiny_net):
    root = make_imagefolder(tmp_path / "d" / "train", {"a": 6, "b": 6})
    make_imagefolder(tmp_path / "d" / "test", {"a": 2, "b": 2}, seed=5)
    (root / "a" / "copy.png").write_bytes((root / "a" / "img_0.png").read_bytes())
    (tmp_path / "d" / "test" / "b" / "leak.png").write_bytes((root / "b" / "img_1.png").read_bytes())
    Image.new("L", (50, 10), 128).save(root / "b" / "gray.png")
    p = _profile(tmp_path / "d", tiny_net)
    assert p.exact_duplicates == 2 and p.cross_split_duplicates >= 1
    assert any("leakage" in problem for problem in p.problems)
    assert p.grayscale_share == pytest.approx(1 / p.n_images)
    assert p.resolution["min_short_side"] == 10 and p.resolution["widest_aspect"] == 5.0


def test_test_split_is_never_sampled(tmp_path, tiny_net):
    make_imagefolder(tmp_path / "d" / "train", {"a": 3, "b": 3})
    make_imagefolder(tmp_path / "d" / "test", {"a": 50, "b": 50}, seed=2)
    profile = _profile(tmp_path / "d", tiny_net, sample_size=500)
    assert profile.sample_size == 6 and profile.n_images == 6  # nor counted: it never steers the search
    assert profile.images_per_class == {"a": 3, "b": 3}


def test_quadrant_size_follows_the_documented_threshold(tmp_path, tiny_net):
    small = make_imagefolder(tmp_path / "small", {"a": 20, "b": 20}, size=(8, 8))
    large = tmp_path / "large"
    for label in ("a", "b"):
        (large / label).mkdir(parents=True)
        rng = np.random.default_rng(len(label))
        for i in range(Thresholds().large_images_per_class + 40):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(large / label / f"{i}.png")
    assert _profile(small, tiny_net, image_size=16).size_class == "small"
    assert _profile(large, tiny_net, image_size=16, sample_size=64).size_class == "large"
    custom = _profile(small, tiny_net, image_size=16, thresholds=Thresholds(large_images_per_class=10))
    assert custom.size_class == "large" and "10" in custom.rationale


@pytest.mark.parametrize("case", ["one_per_class", "identical", "grayscale"])
def test_degenerate_inputs_give_finite_json(tmp_path, tiny_net, case):
    root = tmp_path / "d"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        count = 1 if case == "one_per_class" else 4
        for i in range(count):
            if case == "identical":
                image = Image.new("RGB", (20, 20), (90, 30, 200))
            elif case == "grayscale":
                image = Image.fromarray(
                    np.random.default_rng(i + ord(label)).integers(0, 256, (20, 20), dtype=np.uint8)
                )
            else:
                image = Image.new("RGB", (20, 20), (i * 40, 100, ord(label)))
            image.save(root / label / f"{i}.png")
    p = _profile(root, tiny_net).to_json()
    text = json.dumps(p, allow_nan=False)
    assert "NaN" not in text and set(p) >= KEYS
    if case == "grayscale":
        assert p["grayscale_share"] == 1.0
    if case == "one_per_class":
        assert any("fewer than 5 images" in problem for problem in p["problems"])


def test_similarity_is_calibrated_on_the_references():
    assert similarity_score(0.5, REFS) == 1.0 and similarity_score(5.0, REFS) == 0.0
    assert similarity_score(math.sqrt(0.5 * 5.0), REFS) == pytest.approx(0.5)
    assert similarity_score(100.0, REFS) == 0.0 and similarity_score(0.01, REFS) == 1.0


def test_backbone_without_batchnorm_is_a_clear_error(imagefolder):
    from autotransfer.errors import AutoTransferError

    vit = create_backbone("test_vit", pretrained=False)
    with pytest.raises(AutoTransferError, match="no BatchNorm layers"):
        profile_dataset(
            load_dataset(imagefolder, image_size=160, show_progress=False),
            backbone=vit,
            references=REFS,
            show_progress=False,
        )


def test_the_scale_runs_through_photos_clip_art_and_noise():
    from autotransfer.transfer.calibration import reference_similarities, similarity_from

    refs = {
        "imagenet_photos": 0.2,
        "clipart": 0.5,
        "noise": 0.9,
        "entropy_imagenet_photos": 0.5,
        "entropy_clipart": 2.5,
        "entropy_noise": 5.0,
        "digits": 0.6,
        "entropy_digits": 3.0,
    }
    ladder = reference_similarities(refs)
    assert ladder["imagenet_photos"] == 1.0 and ladder["clipart"] == 0.5 and ladder["noise"] == 0.0
    assert 0.0 < ladder["digits"] < 0.5
    distances = np.geomspace(0.1, 1.2, 30)
    scores = [similarity_from(d, 2.0, refs)[1]["bn_statistics"] for d in distances]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0 and scores[-1] == 0.0
    # without a clip-art anchor: the straight line of two references
    assert similarity_score(math.sqrt(0.5 * 5.0), REFS) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "sides, device, choices, expected",
    [
        ([28] * 9, "cpu", None, 64),  # MNIST-sized: never below 64
        ([100, 90, 80], "cpu", None, 96),  # small images: the median, rounded up to a multiple of 32
        ([800, 1200, 500], "cpu", None, 128),  # large: the CPU default
        ([800, 1200, 500], "cuda", None, 224),  # large on a GPU
        ([(1024, 768), (640, 480)], "cpu", None, 128),  # (width, height) pairs
        ([800], "cpu", (64, 96, 160), 96),  # the search space's resolutions: the largest at or below
        ([28], "cpu", (96, 160), 96),  # all above: the smallest
    ],
)
def test_one_resolution_for_profile_and_fit(sides, device, choices, expected):
    from autotransfer.data.resolution import choose_resolution, profile_resolution

    size, reason = choose_resolution(sides, device=device, choices=choices)
    assert size == expected == profile_resolution(sides, device=device, choices=choices)
    assert reason.startswith(f"{expected}px")


def test_profile_picks_and_records_its_resolution_and_majority_chance(tmp_path, tiny_net):
    root = make_imagefolder(tmp_path / "d", {"a": 12, "b": 4}, size=(40, 30))
    p = profile_dataset(root, backbone=tiny_net, references=REFS, show_progress=False).to_json()
    assert p["image_size"] == 64 == p["resolution"]["profiled_at"]  # 30 px images: 64, not 128
    assert "small" in p["resolution"]["profiled_at_reason"]
    assert p["separability"]["chance"] == pytest.approx(0.75)  # majority share, not 1/K
    assert set(p["reference_similarity"]) == {"imagenet_photos", "noise"} and p["nearest_reference"]
    from autotransfer.data.resolution import choose_resolution

    assert choose_resolution(root)[0] == 64  # read from the headers, before anything is decoded


def test_the_same_image_in_two_classes_is_a_label_conflict_not_a_plain_duplicate(tmp_path, tiny_net):
    """The fresh-user trial: `profile` called it a plain duplicate (and fit/inspect said nothing: tests/test_cli.py)."""
    root = make_imagefolder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "b" / "also-a.png").write_bytes((root / "a" / "img_0.png").read_bytes())
    p = _profile(root, tiny_net)
    assert p.exact_duplicates == 0
    assert p.label_conflicts == [{"paths": [str(root / "a" / "img_0.png"), str(root / "b" / "also-a.png")],
                                  "labels": ["a", "b"]}]  # fmt: skip
    assert any(problem.startswith("1 label conflict(s)") and "also-a.png (b)" in problem for problem in p.problems)
    from autotransfer.report.terminal import duplicates_text

    # the fresh-user trial: "duplicates 0 exact" beside 3 label conflicts read as a contradiction
    assert duplicates_text(p.to_json()).startswith("1 exact (same bytes): 0 within a class, [bold red]1 label conflict")
    assert p.separability["chance"] == pytest.approx(7 / 13)  # the majority class's share (b: 6 + the copy)
