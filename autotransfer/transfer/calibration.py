"""Where a dataset sits between ImageNet photos and noise: the profile's similarity, calibrated on references.

First and second moments of the BN statistics (models/bn_statistics.py) miss some shifts that change what
the images *mean* but hardly their statistics (colour inversion is the clearest case), so a second,
output-level signal is used too: the entropy H of the pretrained ImageNet classifier's predictions on the
sample (unfamiliar images get uncertain predictions).

Both are calibrated per backbone and resolution on references measured the same way (cached):
20 real ImageNet photos (foolbox's; D_in, H_in), 28 Open Clip Art drawings shipped in
``references/`` (D_clip, H_clip) and uniform noise (D_noise, H_noise). Each signal is mapped
piecewise-linearly onto a scale where photos are 1, clip art 0.5 and noise 0 (log distances, since
distances span decades):

    s_bn   = ladder(log D; log D_in -> 1, log D_clip -> 0.5, log D_noise -> 0)
    s_pred = ladder(H;     H_in -> 1,     H_clip -> 0.5,     H_noise -> 0)
    similarity = mean(s_bn, s_pred)        (s_bn alone when the weights have no ImageNet classifier)

Two more references, mildly shifted photos (blur + colour jitter) and grayscale handwritten digits,
are measured as checkpoints: the profile reports where each lands (``reference_similarity``) and
which one the dataset is nearest to. Without a clip-art reference (hand-given ``references``) the
scale is the straight line from photos to noise.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from autotransfer.files import write_text_atomic
from autotransfer.models.bn_statistics import SampleMeasure, mean_distance, measure_sample
from autotransfer.models.features import model_fingerprint
from autotransfer.models.zoo import Backbone
from autotransfer.settings import cache_dir

REFERENCES_DIR = Path(__file__).parent / "references"

# name in the references dict -> what it stands for (docs/profiler.md). Anchors of the scale: photos 1, clip art
# 0.5, noise 0; the other two are checkpoints that show where real transfer situations land on it.
REFERENCE_NAMES = {
    "imagenet_photos": "ImageNet photos (foolbox's 20)",
    "photos_shifted": "the same photos blurred and colour-jittered (a mild shift)",
    "clipart": "Open Clip Art drawings (28, two per category)",
    "digits": "grayscale handwritten digits (scikit-learn's 8x8, upscaled)",
    "noise": "uniform noise",
}

CLIPART_SCORE = 0.5  # where clip art sits on the scale, by definition


def _shifted(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A mild, seeded shift of a photo: Gaussian blur (radius 1.5) and colour/brightness/contrast jitter."""
    image = image.convert("RGB").filter(ImageFilter.GaussianBlur(1.5))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.4, 0.7))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 0.9))


def reference_images(image_size: int) -> dict[str, np.ndarray]:
    """The reference samples (uint8 N x S x S x 3) at ``image_size``, by name of REFERENCE_NAMES."""
    from sklearn.datasets import load_digits

    from autotransfer.data.images import ResizeRecipe, resize, to_rgb
    from autotransfer.models.imagenet_check import imagenet_samples

    recipe = ResizeRecipe(image_size, "crop", "bicubic")

    def prepare(images) -> np.ndarray:
        return np.stack([np.asarray(resize(to_rgb(image), recipe)) for image in images])

    photos = [Image.open(path) for path, _ in imagenet_samples()]
    rng = np.random.default_rng(0)
    digits = np.round(load_digits().images[:64] / 16.0 * 255.0).astype(np.uint8)
    return {
        "imagenet_photos": prepare(photos),
        "photos_shifted": prepare([_shifted(image, rng) for image in photos]),
        "clipart": prepare([Image.open(path) for path in sorted(REFERENCES_DIR.glob("clipart_*.png"))]),
        "digits": prepare([Image.fromarray(d, "L") for d in digits]),
        "noise": rng.integers(0, 256, size=(32, image_size, image_size, 3), dtype=np.uint8),
    }


def reference_distances(backbone: Backbone, image_size: int) -> dict[str, float]:
    """D (mean BN distance) and H (``entropy_<name>``) of every reference, for this model and size; cached."""
    key = hashlib.blake2b(f"v3-{model_fingerprint(backbone.model)}-{image_size}".encode(), digest_size=12).hexdigest()
    path = cache_dir() / "profile-references" / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    references: dict[str, float] = {}
    for name, images in reference_images(image_size).items():
        measured = measure_sample(backbone, images)
        references[name] = mean_distance(measured.layers)
        if measured.entropy is not None:
            references[f"entropy_{name}"] = measured.entropy
    write_text_atomic(path, json.dumps(references))
    return references


def _ladder(value: float, near: float, middle: float | None, far: float) -> float:
    """1 at ``near``, CLIPART_SCORE at ``middle`` (when given), 0 at ``far``: piecewise linear, clipped."""
    if far <= near:  # degenerate references (the same statistics for photos and noise): no scale to place on
        return 1.0 if value <= near else 0.0
    if middle is None or not near < middle < far:  # two anchors (or an out-of-order middle): one straight line
        return float(np.clip((far - value) / (far - near), 0.0, 1.0))
    if value <= middle:
        return float(np.clip(1.0 - (1.0 - CLIPART_SCORE) * (value - near) / (middle - near), CLIPART_SCORE, 1.0))
    return float(np.clip(CLIPART_SCORE * (far - value) / (far - middle), 0.0, CLIPART_SCORE))


def similarity_score(distance: float, references: dict[str, float]) -> float:
    """s_bn of the module docstring (log distances; clip art's anchor is used when measured)."""
    middle = references.get("clipart")
    return _ladder(
        math.log(max(distance, 1e-12)),
        math.log(references["imagenet_photos"]),
        None if middle is None else math.log(middle),
        math.log(references["noise"]),
    )


def similarity_of(measure: SampleMeasure, references: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The overall similarity and its parts (see the module docstring)."""
    return similarity_from(mean_distance(measure.layers), measure.entropy, references)


def similarity_from(
    distance: float, entropy: float | None, references: dict[str, float]
) -> tuple[float, dict[str, float]]:
    parts = {"bn_statistics": similarity_score(distance, references)}
    if entropy is not None and "entropy_noise" in references:
        parts["imagenet_predictions"] = _ladder(
            entropy,
            references["entropy_imagenet_photos"],
            references.get("entropy_clipart"),
            references["entropy_noise"],
        )
    return float(np.mean(list(parts.values()))), parts


def reference_similarities(references: dict[str, float]) -> dict[str, float]:
    """Where each measured reference lands on the similarity scale (photos 1, clip art 0.5, noise 0)."""
    return {
        name: similarity_from(references[name], references.get(f"entropy_{name}"), references)[0]
        for name in REFERENCE_NAMES
        if name in references
    }
