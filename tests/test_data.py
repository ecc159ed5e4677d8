"""Sources, splits and bad folders: every case is either loaded with a warning or a clear error."""

import logging
import os

import numpy as np
import pytest
from conftest import colour_image, make_imagefolder
from PIL import Image

from autotransfer.data.datasets import load_dataset
from autotransfer.data.sources import index_dataset, split_indices
from autotransfer.errors import AutoTransferError


def test_imagefolder(imagefolder):
    ds = load_dataset(imagefolder, image_size=24, show_progress=False)
    assert ds.layout == "imagefolder" and ds.classes == ["birds", "cats", "dogs"]
    assert ds.images.shape == (17, 24, 24, 3) and ds.images.dtype == np.uint8
    assert set(ds.splits) == {"train", "val"}
    assert ds.counts("val") == {"birds": 1, "cats": 1, "dogs": 1}


def test_split_folders_keep_test_out_of_selection(tmp_path):
    make_imagefolder(tmp_path / "d" / "train", {"a": 10, "b": 10})
    make_imagefolder(tmp_path / "d" / "test", {"a": 3, "b": 3}, seed=1)
    ds = load_dataset(tmp_path / "d", image_size=16, show_progress=False)
    assert ds.layout == "split-folders"
    assert len(ds.indices("test")) == 6 and len(ds.indices("val")) == 4 and len(ds.indices("train")) == 16
    assert all("test" in str(ds.paths[i]) for i in ds.indices("test"))


def test_given_val_split_is_used_as_is(tmp_path):
    make_imagefolder(tmp_path / "d" / "train", {"a": 5, "b": 5})
    make_imagefolder(tmp_path / "d" / "validation", {"a": 2, "b": 2}, seed=1)
    ds = load_dataset(tmp_path / "d", image_size=16, show_progress=False)
    assert len(ds.indices("val")) == 4 and all("validation" in str(ds.paths[i]) for i in ds.indices("val"))


def test_csv_with_relative_paths_duplicates_missing_and_unknown_columns(imagefolder, caplog):
    rows = [
        "Path,label,split,notes",
        "cats/img_0.png,cat,,x",
        "cats/img_1.png,cat,test,",
        "dogs/img_0.png,dog,,",
        "dogs/img_1.png,dog,,",
        "dogs/img_1.png,dog,,",
        "dogs/missing.png,dog,,",
        ",dog,,",
    ]
    csv = imagefolder / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        index = index_dataset(csv)
    assert index.layout == "csv" and index.labels == ["cat", "cat", "dog", "dog"]
    assert index.given_splits == [None, "test", None, None]
    reasons = " | ".join(s.reason for s in index.skipped)
    assert "duplicate row" in reasons and "missing file" in reasons and "without a path" in reasons
    assert "unknown CSV column(s) ['notes']" in caplog.text


@pytest.mark.parametrize(
    "content,match",
    [
        ("file,class\na.png,x\n", r"lacks the column\(s\) \['label', 'path'\]"),
        ("path,label\nx.png,a\nx.png,b\n", "listed twice with different labels"),
        ("path,label,split\nx.png,a,holdout\n", "Unknown split 'holdout'"),
    ],
)
def test_bad_csv_is_a_clear_error(tmp_path, content, match):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(AutoTransferError, match=match):
        index_dataset(tmp_path / "l.csv")


def test_odd_file_names_and_nested_folders(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"é class": 2, "b": 2})
    colour_image(9).save(root / "é class" / "naïve photo (1) 🐱.png")
    (root / "b" / "sub dir").mkdir()
    colour_image(10).save(root / "b" / "sub dir" / "line\nbreak.png")
    ds = load_dataset(root, image_size=16, show_progress=False)
    assert ds.counts() == {"b": 3, "é class": 3}


def test_messy_folder_loads_with_a_warning_listing_skipped_files(imagefolder, caplog):
    (imagefolder / "cats" / "empty.jpg").write_bytes(b"")
    (imagefolder / "cats" / "notes.jpg").write_text("not an image")
    (imagefolder / "dogs" / "readme.txt").write_text("hello")
    (imagefolder / "dogs" / ".DS_Store").write_bytes(b"\0\0")
    (imagefolder / "stray.png").write_bytes(b"x")
    data = (imagefolder / "dogs" / "img_0.png").read_bytes()
    (imagefolder / "dogs" / "truncated.png").write_bytes(data[: len(data) // 3])
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(imagefolder, image_size=16, show_progress=False)
    assert len(ds) == 17
    assert "Skipped 5 file(s)" in caplog.text
    for name in ("empty.jpg", "notes.jpg", "readme.txt", "stray.png", "truncated.png"):
        assert name in caplog.text
    assert ".DS_Store" not in caplog.text


def test_symlink_loop_and_broken_symlink(imagefolder):
    os.symlink(imagefolder / "cats", imagefolder / "cats" / "loop")
    os.symlink(imagefolder / "nowhere.png", imagefolder / "dogs" / "broken.png")
    index = index_dataset(imagefolder)
    assert len(index) == 17
    reasons = {s.reason for s in index.skipped}
    assert "broken symlink" in reasons and any("symlink loop" in r for r in reasons)


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda r: make_imagefolder(r, {"only": 3}), "at least 2 classes"),
        (lambda r: r.mkdir(), "at least 2 classes"),
        (lambda r: (make_imagefolder(r, {"a": 2, "b": 2}), (r / "empty").mkdir()), "Class 'empty' has no image files"),
    ],
)
def test_unusable_folders_are_clear_errors(tmp_path, setup, match):
    setup(tmp_path / "d")
    with pytest.raises(AutoTransferError, match=match):
        load_dataset(tmp_path / "d", image_size=16, show_progress=False)


def test_class_whose_every_file_is_corrupt_is_an_error(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "c").mkdir()
    (root / "c" / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(AutoTransferError, match=r"No readable image left in class\(es\) \['c'\]"):
        load_dataset(root, image_size=16, show_progress=False)


def test_not_a_dataset_paths(tmp_path):
    with pytest.raises(AutoTransferError, match="does not exist"):
        index_dataset(tmp_path / "missing")
    (tmp_path / "image.png").write_bytes(b"x")
    with pytest.raises(AutoTransferError, match="not a CSV"):
        index_dataset(tmp_path / "image.png")


def test_splits_are_deterministic_stratified_and_keep_singletons_in_train():
    labels = np.array([0] * 50 + [1] * 10 + [2])
    given = [None] * 60 + [None]
    a = split_indices(labels, given, val_fraction=0.2, seed=3)
    assert (a == split_indices(labels, given, val_fraction=0.2, seed=3)).all()
    assert not (a == split_indices(labels, given, val_fraction=0.2, seed=4)).all()
    assert ((labels == 0) & (a == "val")).sum() == 10 and ((labels == 1) & (a == "val")).sum() == 2
    assert a[-1] == "train"
    with_test = split_indices(labels, ["test"] * 5 + [None] * 56, seed=3)
    assert (with_test[:5] == "test").all()
    with pytest.raises(AutoTransferError, match="--val-fraction must be between 0 and 1") as refused:
        split_indices(labels, given, val_fraction=1.5)
    assert refused.value.where == "--val-fraction"  # named as errors.py names options (the API: val_fraction=)


def test_class_with_one_image_is_kept(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"a": 4, "b": 1})
    ds = load_dataset(root, image_size=16, show_progress=False)
    assert ds.counts("train")["b"] == 1
