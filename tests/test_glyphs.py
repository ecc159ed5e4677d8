"""The glyphs dataset: letters rendered from fonts (the fast tier uses the fonts matplotlib ships)."""

import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from autotransfer.data import glyphs, offline_datasets
from autotransfer.data.datasets import load_dataset

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def test_one_image_per_font_and_letter_and_unusable_fonts_are_skipped(tmp_path):
    copy = tmp_path / "copy-of-sans.ttf"
    shutil.copyfile(FONTS / "DejaVuSans.ttf", copy)
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font at all" * 10)
    fonts = [
        FONTS / "DejaVuSans.ttf",
        copy,  # the same drawings again: counted once
        FONTS / "DejaVuSerif-Bold.ttf",
        FONTS / "LastResortHE-Regular.ttf",  # maps every letter to one box picture: no letter is usable
        FONTS / "STIXSizOneSymReg.ttf",  # no Latin letters in its character map
        broken,
    ]
    images, labels, classes = glyphs.render_glyphs(fonts)
    assert classes == list("ABCDEFGHIJ")
    assert images.shape == (20, 96, 96) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [2] * 10
    border = np.concatenate([images[:, :2].reshape(20, -1), images[:, -2:].reshape(20, -1)], axis=1)
    assert (border == 255).all()  # white canvas, the glyph within it
    assert (images.reshape(20, -1).min(axis=1) < 64).all()  # every image has dark ink
    again, _, _ = glyphs.render_glyphs(fonts)
    assert np.array_equal(images, again)  # size and position jitter are seeded
    assert len({image.tobytes() for image in images}) == 20


def test_glyphs_build_an_imagefolder_from_the_command_line(tmp_path, monkeypatch, capsys):
    fonts = [FONTS / name for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "cmr10.ttf")]
    monkeypatch.setattr(glyphs, "font_files", lambda: fonts)
    args = ["glyphs", "--per-class", "2", "--test-per-class", "1", "--out", str(tmp_path)]
    assert offline_datasets.main(args) == 0
    target = Path(capsys.readouterr().out.strip())
    assert target == tmp_path / "glyphs-2-test1" and (target / ".complete").exists()
    ds = load_dataset(target, image_size=32, show_progress=False)
    assert ds.classes == list("ABCDEFGHIJ") and len(ds.indices("test")) == 10 and len(ds) == 30
    with Image.open(next((target / "train" / "A").iterdir())) as image:
        assert image.size == (96, 96)


@pytest.mark.slow
def test_glyphs_build_from_the_pinned_debian_font_packages(tmp_path):
    target = offline_datasets.build("glyphs", tmp_path, per_class=None, test_per_class=40)
    ds = load_dataset(target, image_size=32, show_progress=False)
    counts = ds.counts()
    assert len(ds.classes) == 10 and not ds.skipped and len(ds.indices("test")) == 400
    assert min(counts.values()) >= 470  # 485 fonts; a few lack a letter or repeat another font


def test_a_debian_package_whose_sha256_differs_from_the_pin_is_not_unpacked(tmp_path, monkeypatch):
    import subprocess

    from autotransfer.data import debian
    from autotransfer.errors import AutoTransferError

    monkeypatch.setenv("AUTOTRANSFER_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_run(argv, cwd=None, **kwargs):  # "apt-get download" leaves a .deb of other content
        calls.append(argv)
        (Path(cwd) / "fonts-x_1.0_all.deb").write_bytes(b"other content")
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(debian.subprocess, "run", fake_run)
    with pytest.raises(AutoTransferError, match="not the pinned"):
        debian.debian_package("fonts-x", version="1.0", sha256="0" * 64)
    assert calls == [["apt-get", "download", "fonts-x=1.0"]]  # never dpkg-deb
    assert not (tmp_path / "cache" / "debian" / "fonts-x").exists()
