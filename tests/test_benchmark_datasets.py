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


def _fileset(tmp_path, gray=False, balanced=False, sizes=(("a", 20), ("b", 8))):
    """Classes of generated RGBA files (two by default); class 'a' holds a family of 6 numbered variants."""
    import numpy as np
    from conftest import colour_image

    from autotransfer.data.offline_datasets import FileSet

    paths, labels, groups = [], [], []
    for label, (name, n) in enumerate(sizes):
        for i in range(n):
            path = tmp_path / "src" / name / f"{name}{i}_{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            colour_image(100 * label + i, (60, 50), "RGBA").save(path)
            family = "family" if name == "a" and i < 6 else path.stem
            paths, labels, groups = paths + [path], labels + [label], groups + [family]
    return FileSet(paths, np.array(labels), [name for name, _ in sizes], groups, balanced=balanced, gray=gray)


def test_file_datasets_keep_families_out_of_train_cap_and_convert(tmp_path, monkeypatch):
    from PIL import Image

    from autotransfer.data import offline_datasets

    monkeypatch.setitem(offline_datasets.LOADERS, "files", lambda: _fileset(tmp_path))
    monkeypatch.setitem(offline_datasets.LOADERS, "files-gray", lambda: _fileset(tmp_path, gray=True))
    monkeypatch.setitem(offline_datasets.LOADERS, "files-even", lambda: _fileset(tmp_path, balanced=True))
    for seed in range(4):
        target = build("files", tmp_path / "out", per_class=10, test_per_class=3, seed=seed)
        test_a = {p.name.split("-", 1)[1] for p in (target / "test" / "a").iterdir()}
        train_a = {p.name.split("-", 1)[1] for p in (target / "train" / "a").iterdir()}
        assert len(test_a) == 3 and not test_a & train_a and len(train_a) <= 10
        family = {f"a{i}_{i:02d}.png" for i in range(6)}
        assert not (test_a & family and train_a & family)  # a family never straddles the split
        assert len(list((target / "train" / "b").iterdir())) == 5  # imbalance kept under the cap
        with Image.open(next((target / "train" / "b").iterdir())) as image:
            assert image.mode == "RGBA" and image.size == (60, 50)  # files copied as they are
    gray = build("files-gray", tmp_path / "out", per_class=4, test_per_class=3)
    with Image.open(next((gray / "train" / "a").iterdir())) as image:
        assert image.mode == "L" and image.size == (60, 50)
    even = build("files-even", tmp_path / "out", per_class=6, test_per_class=2)
    assert sorted(p.name for p in (even / "train").iterdir()) == ["a", "b"]
    assert all(len(list(c.iterdir())) == 6 for c in (even / "train").iterdir())
    with pytest.raises(ValueError, match="only 1 class"):  # 'b' has 6 left: dropped, and one class is no dataset
        build("files-even", tmp_path / "out", per_class=7, test_per_class=2)


def test_a_balanced_set_names_the_classes_it_leaves_out(tmp_path, monkeypatch, capsys):
    """The fresh-user trial: `openclipart-fewshot --per-class 100` silently kept 9 of 14 classes."""
    from autotransfer.data import offline_datasets

    sizes = (("a", 20), ("b", 8), ("c", 12))
    monkeypatch.setitem(offline_datasets.LOADERS, "files-even", lambda: _fileset(tmp_path, balanced=True, sizes=sizes))
    for _ in range(2):  # built, then found complete: said both times
        assert offline_datasets.main(["files-even", "--per-class", "7", "--test-per-class", "2",
                                      "--out", str(tmp_path / "out")]) == 0  # fmt: skip
        printed = capsys.readouterr()
        assert sorted(p.name for p in (tmp_path / "out" / "files-even-7-test2" / "train").iterdir()) == ["a", "c"]
        assert "note: kept 2 of 3 classes: left out, with fewer than 7 training images: b (6)" in printed.err


@pytest.mark.slow
def test_openclipart_builds_from_the_debian_package(tmp_path):
    import hashlib

    from PIL import Image

    target = build("openclipart", tmp_path, per_class=30, test_per_class=10)
    ds = load_dataset(target, image_size=32, show_progress=False)
    assert len(ds.classes) == 14 and "unsorted" not in ds.classes and not ds.skipped
    counts = ds.counts()
    assert max(counts.values()) / min(counts.values()) >= 1.0 and len(ds.indices("test")) == 140
    files = [p for p in target.rglob("*.png")]
    digests = [hashlib.blake2b(p.read_bytes()).hexdigest() for p in files]
    assert len(set(digests)) == len(digests)  # exact duplicates removed, none crosses a split
    with Image.open(max(files, key=lambda p: p.stat().st_size)) as image:
        assert max(image.size) > 64  # native size kept
    assert {Image.open(p).mode for p in files[:200]} & {"RGBA", "LA", "P"}  # alpha kept
    everything = build("openclipart", tmp_path, per_class=None, test_per_class=10)
    full = load_dataset(everything, image_size=16, show_progress=False).counts()
    assert max(full.values()) / min(full.values()) > 20  # naturally imbalanced
    gray = build("openclipart-gray", tmp_path, per_class=5, test_per_class=2)
    assert {Image.open(p).mode for p in gray.rglob("*.png")} == {"L"}
    few = build("openclipart-fewshot", tmp_path, per_class=10, test_per_class=10)
    assert {len(list(c.iterdir())) for c in (few / "train").iterdir()} == {10}
