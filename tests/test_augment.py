"""Training augmentation (transfer/augment.py): one uint8 CHW tensor in, the same shape and type out;
the orientation check that turns rotations on; what each search choice turns on (search/trials.py)."""

import numpy as np
import pytest
import torch

import autotransfer  # noqa: F401  (torchvision fix)
from autotransfer.search.candidates import Candidate
from autotransfer.search.recipe import recipe_params
from autotransfer.search.space import load_search_space
from autotransfer.search.trials import config_for
from autotransfer.transfer.augment import build_transform, canonical_orientation


@pytest.mark.parametrize(
    "options",
    [
        {"flip": True, "crop_scale": None, "rotate": 0.0, "randaugment_magnitude": None},
        {"flip": True, "crop_scale": 0.35, "rotate": 30.0, "randaugment_magnitude": 21},
    ],
)
def test_a_transform_keeps_the_size_and_the_type(options):
    torch.manual_seed(0)
    transform = build_transform(size=24, **options)
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    out = transform(image)
    assert out.shape == image.shape and out.dtype == torch.uint8


def test_no_augmentation_is_no_transform():
    assert build_transform(size=24, flip=False, crop_scale=None, rotate=0.0, randaugment_magnitude=None) is None


def test_rotations_only_without_a_canonical_orientation():
    rng = np.random.default_rng(0)
    upright = np.zeros((20, 32, 32, 3), np.uint8)
    upright[:, :12] = 220  # a bright sky above every image
    upright[:, 12:] = rng.integers(0, 80, (20, 20, 32, 3), dtype=np.uint8)
    top_down = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)  # texture: no "up"
    assert canonical_orientation(upright)
    assert not canonical_orientation(top_down)


def test_the_first_trial_is_the_recipe_with_augmentation_on():
    space = load_search_space("default")
    candidate = Candidate("test_efficientnet", 64, "head")
    params = recipe_params(candidate, space, dict(space.ranges), n_groups=6, imbalanced=True)
    assert params["strategy"] == "lp_ft" and params["augmentation"] == "crop"
    assert params["class_weight"] == "balanced" and params["backbone_lr_ratio"] == pytest.approx(0.1)
    assert params["layer_decay"] < 1.0  # discriminative: lower groups learn slower
    config = config_for(params, space=space, n_groups=6, seed=0, rotate=30.0)
    assert config.flip and config.crop_scale is not None and config.rotate == 30.0
    assert config.warmup_epochs == 1 and config.class_weight == "balanced"
    plain = config_for({**params, "augmentation": "none"}, space=space, n_groups=6, seed=0, rotate=30.0)
    assert not plain.flip and plain.crop_scale is None and plain.rotate == 0.0
