"""The builders of real offline datasets (digits ships with scikit-learn, so it runs in the fast tier)."""

import pytest

from autotransfer.data.datasets import load_dataset
from autotransfer.data.offline_datasets import build


def test_digits_builds_a_subsampled_imagefolder_once(tmp_path):
    target = build("digits", tmp_path, per_class=5, test_per_class=2, seed=1)
    assert target.name == "digits-5-test2-s1"
    ds = load_dataset(target, image_size=16, show_progress=False)
    assert ds.layout == "split-folders" and len(ds.classes) == 10
    assert len(ds.indices("test")) == 20 and len(ds) == 70
    stamp = (target / ".complete").stat().st_mtime_ns
    assert build("digits", tmp_path, per_class=5, test_per_class=2, seed=1) == target
    assert (target / ".complete").stat().st_mtime_ns == stamp


@pytest.mark.slow
@pytest.mark.parametrize("name", ["animal-mnist", "mnist", "fashion-mnist"])
def test_real_offline_datasets(tmp_path, name):
    target = build(name, tmp_path, per_class=3)
    ds = load_dataset(target, image_size=16, show_progress=False)
    assert len(ds.classes) == 10 and len(ds) == 30 and not ds.skipped
