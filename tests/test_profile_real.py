"""Slow tier: the profiler with real ImageNet weights orders domains as it must."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from autotransfer.data.images import ResizeRecipe, decode_file
from autotransfer.data.offline_datasets import build
from autotransfer.models.bn_statistics import group_distances, mean_distance, measure_sample
from autotransfer.models.imagenet_check import imagenet_samples
from autotransfer.models.zoo import create_backbone
from autotransfer.transfer.calibration import reference_distances, similarity_of
from autotransfer.transfer.profile import profile_dataset

pytestmark = pytest.mark.slow
SIZE = 128


@pytest.fixture(autouse=True)
def real_cache(monkeypatch):
    monkeypatch.delenv("AUTOTRANSFER_CACHE")


@pytest.fixture(scope="module")
def net():
    return create_backbone("mobilenetv2_100", keep_classifier=True)


@pytest.fixture(scope="module")
def photos():
    return np.stack([decode_file(p, ResizeRecipe(SIZE)).pixels for p, _ in imagenet_samples()])


def _distance(net, images):
    return mean_distance(measure_sample(net, images).layers)


def similarity_from(net, images):
    return similarity_of(measure_sample(net, images), reference_distances(net, SIZE))[0]


def _shifted(photos, kind, strength):
    """blur radius, noise sigma and desaturation grow with strength; inversion: the share of images inverted."""
    out = []
    for i, array in enumerate(photos):
        image = Image.fromarray(array)
        if kind == "blur":
            image = image.filter(ImageFilter.GaussianBlur(radius=strength * 4))
        elif kind == "gray":
            image = Image.blend(image, image.convert("L").convert("RGB"), strength)
        elif kind == "invert" and i < round(strength * len(photos)):
            image = Image.fromarray(255 - array)
        elif kind == "noise":
            rng = np.random.default_rng(i)
            noisy = array.astype(np.float64) + rng.normal(0, 80 * strength, array.shape)
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        out.append(np.asarray(image))
    return np.stack(out)


def test_imagenet_photos_closer_than_fashion_mnist_closer_than_noise(net, photos, tmp_path):
    fashion = build("fashion-mnist", tmp_path, per_class=10)
    from autotransfer.data.datasets import load_dataset

    fashion_images = np.asarray(load_dataset(fashion, image_size=SIZE, show_progress=False).images)
    noise = np.random.default_rng(1).integers(0, 256, size=(40, SIZE, SIZE, 3), dtype=np.uint8)
    d_photos, d_fashion, d_noise = (_distance(net, x) for x in (photos, fashion_images, noise))
    assert d_photos < d_fashion < d_noise
    profile = profile_dataset(fashion, backbone=net, image_size=SIZE, show_progress=False)
    assert 0.0 < profile.similarity < 1.0 and profile.domain == "different"


@pytest.mark.parametrize("kind", ["blur", "noise", "gray", "invert"])
def test_similarity_falls_monotonically_with_shift_strength(net, photos, kind):
    similarity = [similarity_from(net, _shifted(photos, kind, s)) for s in (0.0, 0.33, 0.66, 1.0)]
    assert similarity == sorted(similarity, reverse=True), similarity
    assert similarity[-1] < similarity[0] - 0.02


def test_input_noise_raises_early_layers_first(net, photos):
    clean = group_distances(net, measure_sample(net, photos).layers)
    noisy = group_distances(net, measure_sample(net, _shifted(photos, "noise", 0.5)).layers)
    ratios = [n["distance"] / c["distance"] for n, c in zip(noisy, clean)]
    early, late = np.mean(ratios[:3]), np.mean(ratios[-3:])
    assert early > late, ratios


def test_profile_command_writes_the_documented_json(tmp_path):
    import json
    import os
    import subprocess
    import sys

    folder = build("digits", tmp_path, per_class=20)
    out = tmp_path / "profile.json"
    env = {k: v for k, v in os.environ.items() if k != "AUTOTRANSFER_CACHE"}
    result = subprocess.run(
        [sys.executable, "-m", "autotransfer.cli", "profile", str(folder), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "quadrant" in result.stdout and "distance to ImageNet by depth" in result.stdout
    document = json.loads(out.read_text())
    assert document["quadrant"] == "small-different" and document["n_classes"] == 10
    assert document["images_per_class"]["3"] == 20 and len(document["layer_distance"]) > 20


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "digits"])
def test_grayscale_non_photo_data_at_native_resolution_reads_as_different(net, tmp_path, name):
    """profile_resolution puts 28 px (and 8 px) images at 64 px, where the old photos-vs-noise scale
    called Fashion-MNIST and digits "similar" (0.74 and 0.62); on the clip-art-anchored scale they are not."""
    profile = profile_dataset(build(name, tmp_path, per_class=20), backbone=net, show_progress=False)
    assert profile.image_size == 64 and profile.resolution["profiled_at"] == 64
    assert profile.domain == "different" and profile.similarity < 0.7, profile.similarity


@pytest.mark.parametrize("size", [64, 128])
def test_references_land_where_docs_profiler_says(net, size):
    from autotransfer.transfer.calibration import reference_similarities
    from autotransfer.transfer.profile import Thresholds

    ladder = reference_similarities(reference_distances(net, size))
    assert ladder["imagenet_photos"] == 1.0 and ladder["clipart"] == 0.5 and ladder["noise"] == 0.0
    assert ladder["photos_shifted"] >= Thresholds().similar_at + 0.1  # a mild shift stays "similar"
    assert ladder["digits"] < 0.5  # gray handwritten digits are farther than clip art
