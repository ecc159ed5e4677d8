"""Prove that a backbone's weights are really ImageNet weights, mapped correctly.

The PyPI package ``foolbox`` ships 20 real ImageNet validation images whose file names carry the
true class index (``imagenet_<i>_<label>.jpg``). A correctly mapped ImageNet-1k classifier gets
about 17-18 of them right; a mis-mapped or random one gets about 0. We read them out of the wheel
(see wheel_assets) rather than installing foolbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autotransfer.data.images import DecodedImage, ResizeRecipe, decode_file
from autotransfer.models import wheel_assets
from autotransfer.models.features import normalisation, to_input
from autotransfer.models.wheel_assets import WheelAsset
from autotransfer.models.zoo import Backbone, Preprocess, create_backbone

FOOLBOX_IMAGES = WheelAsset(
    "foolbox", "3.3.4", "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb", "foolbox/data/"
)


@dataclass(frozen=True)
class Top1Result:
    name: str
    correct: int
    total: int
    weights: str


def imagenet_samples() -> list[tuple[Path, int]]:
    """The 20 labelled ImageNet images, as (path, class index)."""
    folder = wheel_assets.fetch(FOOLBOX_IMAGES)
    files = sorted(folder.glob("imagenet_*.jpg"))
    return [(f, int(f.stem.split("_")[-1])) for f in files]


def eval_pixels(paths: list[Path], preprocess: Preprocess) -> np.ndarray:
    """The standard evaluation crop as uint8 NHWC: resize to size/crop_pct, then centre crop."""
    size = preprocess.input_size
    recipe = ResizeRecipe(int(round(size / preprocess.crop_pct)), "crop", preprocess.interpolation)
    arrays = []
    for path in paths:
        decoded = decode_file(path, recipe)
        if not isinstance(decoded, DecodedImage):
            raise RuntimeError(f"{path}: {decoded}")
        offset = (recipe.size - size) // 2
        arrays.append(decoded.pixels[offset : offset + size, offset : offset + size])
    return np.stack(arrays)


def imagenet_top1(name: str, weights: str | Path | None = None) -> Top1Result:
    """Top-1 of ``name``'s ImageNet classifier on the 20 foolbox images."""
    backbone: Backbone = create_backbone(name, pretrained=True, weights=weights, keep_classifier=True)
    samples = imagenet_samples()
    cpu = torch.device("cpu")
    inputs = to_input(eval_pixels([p for p, _ in samples], backbone.preprocess), *normalisation(backbone, cpu), cpu)
    with torch.inference_mode():
        predicted = backbone.model(inputs).argmax(dim=1).tolist()
    correct = sum(int(p == label) for p, (_, label) in zip(predicted, samples))
    return Top1Result(name, correct, len(samples), backbone.weights.describe())
