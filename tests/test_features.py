"""Multi-tap extraction: shapes, one pass with early stop, cache hit/miss/invalidation, bf16 vs fp32."""

import numpy as np
import pytest
import torch
from conftest import run_concurrently

from autotransfer.data.datasets import load_dataset
from autotransfer.models.features import (
    FeatureExtractor,
    extract_features,
    features_cached,
    pool,
    recorded_forward_seconds,
)
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import bf16_supported


@pytest.fixture
def small(imagefolder):
    return load_dataset(imagefolder, image_size=32, show_progress=False)


def _backbone(name="test_efficientnet", seed=0):
    torch.manual_seed(seed)
    return create_backbone(name, pretrained=False)


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_vit", "tv:alexnet"])
def test_every_tap_has_the_documented_width(imagefolder, name):
    backbone = _backbone(name)
    size = 160 if name == "test_vit" else (64 if name == "tv:alexnet" else 32)
    ds = load_dataset(imagefolder, image_size=size, show_progress=False)
    features = extract_features(ds, backbone, bf16=False, show_progress=False)
    assert list(features) == [t.name for t in backbone.taps]
    for tap in backbone.taps:
        assert features[tap.name].shape == (len(ds), tap.channels) and features[tap.name].dtype == np.float32
        assert np.isfinite(features[tap.name]).all()


def test_head_tap_equals_the_models_pooled_output(small):
    backbone = _backbone()
    head = extract_features(small, backbone, ["head"], bf16=False, use_cache=False, show_progress=False)["head"]
    x = torch.from_numpy(np.array(small.images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.preprocess.std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = backbone.model(x).numpy()
    np.testing.assert_allclose(head, expected, rtol=1e-4, atol=1e-5)


def test_extraction_stops_after_the_deepest_requested_tap(small):
    backbone = _backbone()
    called = []
    backbone.model.conv_head.register_forward_hook(lambda *a: called.append(1))
    extractor = FeatureExtractor(backbone, torch.device("cpu"), bf16=False)
    out = extractor.batch(np.array(small.images[:4]), ["blocks.1", "blocks.0"])
    assert set(out) == {"blocks.0", "blocks.1"} and not called


def test_pooling_variants():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert pool(maps, "avg").shape == (2, 3) and pool(maps, "avgmax").shape == (2, 6)
    assert torch.equal(pool(maps, "max"), maps.amax(dim=(2, 3)))
    assert pool(torch.ones(2, 5, 7), "avg").shape == (2, 7)  # ViT tokens
    assert pool(torch.ones(2, 9), "max").shape == (2, 9)  # FC vectors pass through


def test_cache_hit_and_invalidation(small, imagefolder, isolated_cache):
    backbone = _backbone()
    first = extract_features(small, backbone, ["blocks.2"], bf16=False, show_progress=False)["blocks.2"]
    again = extract_features(small, backbone, ["blocks.2"], bf16=False, show_progress=False)["blocks.2"]
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(first, again)
    files = sorted(isolated_cache.rglob("*.npy"))
    feature_files = [f for f in files if "features" in f.parts]
    assert len(feature_files) == 1
    # other weights -> other entry
    extract_features(small, _backbone(seed=1), ["blocks.2"], bf16=False, show_progress=False)
    # other data -> other entry
    from conftest import colour_image

    colour_image(123).save(imagefolder / "cats" / "extra.png")
    bigger = load_dataset(imagefolder, image_size=32, show_progress=False)
    assert extract_features(bigger, backbone, ["blocks.2"], bf16=False, show_progress=False)["blocks.2"].shape[0] == 18
    assert len([f for f in isolated_cache.rglob("*.npy") if "features" in f.parts]) == 3


def test_features_cached_says_whether_every_tap_would_only_be_read(small, isolated_cache):
    """The probe stage times the load from its extraction only where the features were computed."""
    backbone = _backbone()
    assert not features_cached(small, backbone, bf16=False)
    extract_features(small, backbone, ["head"], bf16=False, show_progress=False)
    assert not features_cached(small, backbone, bf16=False)  # one tap of several
    extract_features(small, backbone, bf16=False, show_progress=False)
    assert features_cached(small, backbone, bf16=False)
    assert not features_cached(small, backbone, bf16=False, pooling="max")


def test_the_forward_pass_that_filled_the_cache_is_recorded_for_the_runs_that_read_it(small, isolated_cache):
    """long-cpu reruns read every pair's features from the cache, timed no forward pass, and planned fine-tuning
    from `auto`'s timing of a few small batches (about 4x a whole pass's cost per image): Fashion-MNIST's first
    trial was estimated at 15 minutes and never started. The pass that filled the cache is kept with it."""
    from autotransfer.transfer.ranking import RankingConfig, rank_backbone

    backbone = _backbone()
    assert recorded_forward_seconds(small, backbone, bf16=False) is None
    first = rank_backbone(small, backbone, RankingConfig(bf16=False, heads=("torch",)), show_progress=False)
    recorded = recorded_forward_seconds(small, backbone, bf16=False)
    assert recorded is not None and recorded > 0 and not first[0]["extract_cached"]
    assert first[0]["extract_recorded"] is None  # computed here: its own time is the measurement
    again = rank_backbone(small, backbone, RankingConfig(bf16=False, heads=("torch",)), show_progress=False)
    assert again[0]["extract_cached"] and again[0]["extract_recorded"] == recorded  # read: the filling pass's time


def test_damaged_cache_file_is_recomputed(small, isolated_cache):
    backbone = _backbone()
    extract_features(small, backbone, ["head"], bf16=False, show_progress=False)
    path = next(f for f in isolated_cache.rglob("head-*.npy"))
    path.write_bytes(b"garbage")
    values = extract_features(small, backbone, ["head"], bf16=False, show_progress=False)["head"]
    assert values.shape[0] == len(small) and np.load(path).shape[0] == len(small)


def test_concurrent_writers_do_not_corrupt_the_cache(imagefolder, isolated_cache):
    code = (
        "import sys, torch, numpy as np; from autotransfer.data.datasets import load_dataset;"
        "from autotransfer.models.zoo import create_backbone;"
        "from autotransfer.models.features import extract_features;"
        "torch.manual_seed(0); b = create_backbone('test_efficientnet', pretrained=False);"
        "d = load_dataset(sys.argv[1], image_size=32, show_progress=False);"
        "print(float(np.asarray(extract_features(d, b, bf16=False, show_progress=False)['head']).sum()))"
    )
    assert len(run_concurrently(code, str(imagefolder), isolated_cache)) == 1
    assert not [f for f in isolated_cache.rglob(".*") if f.is_file()]  # no temporary file left


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="no native bf16 on this CPU")
def test_bf16_features_agree_with_fp32(small):
    backbone = _backbone("test_resnet")
    fp32 = extract_features(small, backbone, ["head"], bf16=False, use_cache=False, show_progress=False)["head"]
    bf16 = extract_features(small, backbone, ["head"], bf16=True, use_cache=False, show_progress=False)["head"]
    cosine = (fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    assert cosine.min() > 0.99


def test_a_combined_tap_gives_its_parts_side_by_side_and_caches_only_them(small, isolated_cache):
    backbone = _backbone()
    got = extract_features(small, backbone, ["blocks.2+head", "head"], bf16=False, show_progress=False)
    parts = extract_features(small, backbone, ["blocks.2", "head"], bf16=False, show_progress=False)
    np.testing.assert_array_equal(got["blocks.2+head"], np.hstack([parts["blocks.2"], parts["head"]]))
    np.testing.assert_array_equal(got["head"], parts["head"])
    cached = sorted(p.name.split("-")[0] for p in (isolated_cache / "features").rglob("*.npy"))
    assert cached == ["blocks.2", "head"]
