"""The cheap stage end to end: every (backbone, tap) scored, probes on train/val only, agreement."""

import numpy as np
import pytest
import torch
from conftest import make_imagefolder

from autotransfer.data.datasets import load_dataset
from autotransfer.models.zoo import create_backbone
from autotransfer.transfer.ranking import RankingConfig, proxy_agreement, rank_backbone


def test_every_tap_gets_scores_and_a_probe(tmp_path):
    root = make_imagefolder(tmp_path / "d" / "train", {"a": 10, "b": 10, "c": 10})
    make_imagefolder(tmp_path / "d" / "test", {"a": 3, "b": 3, "c": 3}, seed=7)
    ds = load_dataset(tmp_path / "d", image_size=32, show_progress=False)
    torch.manual_seed(0)
    backbone = create_backbone("test_efficientnet", pretrained=False)
    rows = rank_backbone(ds, backbone, RankingConfig(c_grid=(0.1, 1.0)), show_progress=False)
    assert [r["tap"] for r in rows] == [t.name for t in backbone.taps]
    for row in rows:
        assert {"logme", "knn", "hscore", "probe_accuracy", "probe_head", "probe_C"} <= set(row)
        assert np.isfinite([row["logme"], row["knn"], row["hscore"]]).all()
        assert 0 <= row["probe_accuracy"] <= 1
    assert root.exists()
    agreement = proxy_agreement(__import__("pandas").DataFrame(rows))
    assert list(agreement["score"]) == ["logme", "knn", "hscore"]


def _ranked(tmp_path, **config) -> list[dict]:
    """rank_backbone on a 3-class folder with a random-weight test_efficientnet (seeded), C fixed."""
    folder = tmp_path / "d"
    if not folder.exists():
        make_imagefolder(folder, {"a": 10, "b": 10, "c": 10})
    ds = load_dataset(folder, image_size=32, show_progress=False)
    torch.manual_seed(0)
    backbone = create_backbone("test_efficientnet", pretrained=False)
    return rank_backbone(ds, backbone, RankingConfig(c_grid=(1.0,), **config), show_progress=False)


def test_probe_top_probes_only_the_taps_with_the_best_knn_score(tmp_path):
    rows = _ranked(tmp_path, probe_top=2)
    probed = [r for r in rows if "probe_accuracy" in r]
    assert len(probed) == 2 and len(rows) > 2
    assert min(r["knn"] for r in probed) >= max(r["knn"] for r in rows if "probe_accuracy" not in r)
    worst = min(rows, key=lambda r: r["knn"])["tap"]
    rows = _ranked(tmp_path, probe_top=2, also_probe=(worst, "no-such-tap"))
    assert sorted(r["tap"] for r in rows if "probe_accuracy" in r) == sorted([t["tap"] for t in probed] + [worst])


def test_an_extraction_that_ends_past_the_deadline_probes_only_the_head_and_skips_the_scores(tmp_path):
    from autotransfer.budget import Deadline

    rows = _ranked(tmp_path, probe_top=2, also_probe=("head",), deadline=Deadline(0.0, start=0.0))
    probed = [r for r in rows if "probe_accuracy" in r]
    assert [r["tap"] for r in probed] == ["head"] and len(rows) > 1
    assert all(np.isnan(r["knn"]) and np.isnan(r["logme"]) for r in rows)


def test_test_split_is_never_used(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "d" / "train", {"a": 6, "b": 6})
    make_imagefolder(tmp_path / "d" / "test", {"a": 4, "b": 4}, seed=3)
    ds = load_dataset(tmp_path / "d", image_size=32, show_progress=False)
    seen = []
    import autotransfer.transfer.ranking as ranking

    real = ranking.all_scores
    monkeypatch.setattr(ranking, "all_scores", lambda f, y: seen.append(len(y)) or real(f, y))
    torch.manual_seed(0)
    rank_backbone(ds, create_backbone("test_resnet", pretrained=False), RankingConfig(probe=False), show_progress=False)
    assert set(seen) == {len(ds.indices("train"))}


@pytest.mark.slow
def test_real_weights_beat_random_weights_by_a_clear_margin(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOTRANSFER_CACHE")
    from autotransfer.data.offline_datasets import build

    ds = load_dataset(build("animal-mnist", tmp_path, per_class=40), image_size=64, show_progress=False)
    config = RankingConfig(c_grid=(0.1, 1.0))
    pretrained = rank_backbone(ds, create_backbone("mobilenetv2_100"), config, show_progress=False)
    torch.manual_seed(0)
    random = rank_backbone(ds, create_backbone("mobilenetv2_100", pretrained=False), config, show_progress=False)
    best = lambda rows: max(r["probe_accuracy"] for r in rows)  # noqa: E731
    assert best(pretrained) > best(random) + 0.15, (best(pretrained), best(random))


def test_a_passed_deadline_probes_one_tap_the_last_when_none_is_named(tmp_path):
    from autotransfer.budget import Deadline

    rows = _ranked(tmp_path, probe_top=3, deadline=Deadline(0.0))
    probed = [r for r in rows if "probe_accuracy" in r]
    assert [r["tap"] for r in probed] == [rows[-1]["tap"]]  # the deepest tap: the CNN codes


def test_probe_combined_probes_the_taps_side_by_side(tmp_path):
    from autotransfer.transfer.ranking import probe_combined

    rows = _ranked(tmp_path, probe_top=2, also_probe=("head",))
    probed = [r for r in rows if "probe_accuracy" in r]
    folder = tmp_path / "d"
    ds = load_dataset(folder, image_size=32, show_progress=False)
    torch.manual_seed(0)
    backbone = create_backbone("test_efficientnet", pretrained=False)
    row = probe_combined(ds, backbone, [r["tap"] for r in probed], RankingConfig(c_grid=(1.0,)))
    names = [t.name for t in backbone.taps]
    assert row["tap"] == "+".join(sorted((r["tap"] for r in probed), key=names.index))
    assert row["channels"] == sum(r["channels"] for r in probed) and 0 <= row["probe_score"] <= 1
    assert np.isnan(row["knn"]) and row["probe_head"] == probed[0]["probe_head"]
