"""The bad-input corpus: every odd or broken file a user's folder may hold, through profile, fit and
predict. Everything is generated here (nothing binary is committed). Documented in docs/inputs.md.

Kept: odd but valid images (1x1, a 20000x50 strip, 16-bit, CMYK, palette with transparency,
animated, EXIF-rotated, a PNG named .jpg, unicode/space/newline names, a class of one image).
Skipped with a reason: the rest. Unusable folders (one class, an empty class) are one clear error.
"""

import csv
import json
import os

import pandas as pd
import pytest
from conftest import colour_image, make_imagefolder
from PIL import Image

MAX_PIXELS = "1500000"  # AUTOTRANSFER_MAX_IMAGE_PIXELS for the run: the 2000x2000 'bomb' exceeds it
AS_ROOT = os.geteuid() == 0  # root reads a chmod 000 file anyway


def _exif_rotated() -> Image.Image:
    exif = Image.Exif()
    exif[0x0112] = 6
    return colour_image(40, (40, 20)), {"exif": exif.tobytes()}


def make_corpus(root):
    """A messy ImageFolder; returns (kept file names, {skipped file name: reason fragment})."""
    make_imagefolder(root, {"a": 8, "b": 8, "c": 8})
    kept = {}
    odd = {
        "a/one_pixel.png": (Image.new("RGB", (1, 1), (200, 10, 10)), {}),
        "a/strip.png": (Image.new("RGB", (20000, 50), (10, 200, 10)), {}),
        "a/really_a_png.jpg": (colour_image(41), {"format": "PNG"}),
        "a/naïve photo 🐱.png": (colour_image(42), {}),
        "b/sixteen_bit.png": (Image.new("I;16", (30, 30), 40000), {}),
        "b/cmyk.jpg": (colour_image(43).convert("CMYK"), {}),
        "b/space name (1).png": (colour_image(44), {}),
        "c/palette_transparent.gif": (colour_image(45).convert("P"), {"transparency": 0}),
        "c/new\nline.png": (colour_image(46), {}),
        "c/exif_rotated.jpg": _exif_rotated(),
        "d/the_only_one.png": (colour_image(47), {}),
    }
    (root / "d").mkdir()
    for name, (image, options) in odd.items():
        image.save(root / name, **options)
        kept[name] = True
    frames = [colour_image(48 + i) for i in range(3)]
    frames[0].save(root / "c" / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    kept["c/animated.gif"] = True
    png = (root / "a" / "img_0.png").read_bytes()
    jpeg_path = root / "b" / "img_0.jpg"
    colour_image(49, (200, 200)).save(jpeg_path)
    jpeg = jpeg_path.read_bytes()
    jpeg_path.unlink()
    skipped = {
        "a/zero.jpg": "empty file",
        "a/truncated.jpg": "corrupt or truncated",
        "b/truncated.png": "corrupt or truncated",
        "b/text.jpg": "not an image",
        "c/bomb.png": "too large",
        "c/broken.png": "broken symlink",
        "c/pipe.png": "not a regular file",
        "c/notes.txt": "not an image file",
        "stray.png": "outside any class folder",
        "c/loop": "symlink loop",
    }
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "a" / "truncated.jpg").write_bytes(jpeg[:300])
    (root / "b" / "truncated.png").write_bytes(png[: len(png) // 3])
    (root / "b" / "text.jpg").write_text("I am a text file with an image's name")
    Image.new("L", (2000, 2000)).save(root / "c" / "bomb.png")
    os.symlink(root / "nowhere.png", root / "c" / "broken.png")
    os.mkfifo(root / "c" / "pipe.png")  # opening it would block forever
    (root / "c" / "notes.txt").write_text("notes")
    colour_image(50).save(root / "stray.png")
    os.symlink(root / "c", root / "c" / "loop")
    locked = root / "b" / "locked.png"
    colour_image(51).save(locked)
    locked.chmod(0)
    if AS_ROOT:
        kept["b/locked.png"] = True
    else:
        skipped["b/locked.png"] = "permission denied"
    return kept, skipped


@pytest.fixture
def corpus(tmp_path, fit_env, monkeypatch):
    monkeypatch.setenv("AUTOTRANSFER_MAX_IMAGE_PIXELS", MAX_PIXELS)
    root = tmp_path / "messy"
    kept, skipped = make_corpus(root)
    return root, kept, skipped, fit_env


def _relative(root, path: str) -> str:
    return os.path.relpath(path, root)


def _assert_skipped(root, listed: list[dict], skipped: dict[str, str]) -> None:
    reasons = {_relative(root, s["path"]): s["reason"] for s in listed}
    for name, fragment in skipped.items():
        match = [r for p, r in reasons.items() if p == name or (name == "c/loop" and p.startswith("c/loop"))]
        assert match and fragment in match[0], (name, reasons)
    assert len(reasons) == len(skipped), reasons


def test_profile_lists_every_skipped_file_and_keeps_odd_images(corpus, cli):
    root, kept, skipped, _ = corpus
    result = cli(["profile", str(root), "--backbone", "test_efficientnet", "--size", "32", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    _assert_skipped(root, document["skipped"], skipped)
    assert document["n_images"] == 24 + len(kept) and document["n_classes"] == 4
    assert "Traceback" not in result.output


def test_fit_on_a_messy_folder_completes_and_says_what_it_skipped(corpus, cli, tmp_path):
    root, kept, skipped, env = corpus
    out = tmp_path / "run"
    result = cli(
        [
            "fit",
            str(root),
            "--search-space",
            str(env["space"]),
            "--profile-backbone",
            "test_efficientnet",
            "--time-budget",
            "3m",
            "--out",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    assert f"{len(skipped)} file(s) skipped" in result.output and "skipped.csv" in result.output
    listed = pd.read_csv(out / "skipped.csv").to_dict("records")
    _assert_skipped(root, listed, skipped)
    assert "Skipped files" in (out / "report.html").read_text()
    assert json.loads((out / "pipeline" / "pipeline.json").read_text())["classes"] == ["a", "b", "c", "d"]


def test_predict_on_a_messy_folder_answers_every_file(corpus, cli, tmp_path):
    from autotransfer import AutoTransfer

    root, kept, skipped, env = corpus
    clean = make_imagefolder(tmp_path / "clean", {"a": 6, "b": 6, "c": 6, "d": 6})
    AutoTransfer(
        time_budget="3m", search_space=env["space"], out=tmp_path / "run", profile_backbone="test_efficientnet"
    ).fit(clean)
    result = cli(
        [
            "predict",
            str(tmp_path / "run"),
            str(root),
            str(root / "c" / "pipe.png"),
            str(root / "missing.png"),
            "--json",
            "--csv",
            str(tmp_path / "p.csv"),
        ]
    )
    assert result.exit_code == 0, result.output
    rows = {_relative(root, r["path"]): r for r in map(json.loads, result.stdout.splitlines())}
    for name in kept:
        assert "label" in rows[name] and rows[name]["label"] in "abcd", rows[name]
    for name in (
        "a/zero.jpg",
        "a/truncated.jpg",
        "b/truncated.png",
        "b/text.jpg",
        "c/bomb.png",
        "c/pipe.png",
        "c/broken.png",
        "stray.png",
        "missing.png",
    ):
        assert name in rows and ("error" in rows[name]) != (name == "stray.png"), (name, rows.get(name))
    assert "not a regular file" in rows["c/pipe.png"]["error"] and "too large" in rows["c/bomb.png"]["error"]
    assert "could not be read and were skipped" in result.output
    with open(tmp_path / "p.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows) + 1  # the FIFO was named twice: dir walk + argument


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda r: make_imagefolder(r, {"only": 4}), "at least 2 classes"),
        (lambda r: (make_imagefolder(r, {"a": 3, "b": 3}), (r / "empty").mkdir()), "Class 'empty' has no image files"),
        (
            lambda r: (
                make_imagefolder(r, {"a": 3, "b": 3, "c": 3}),
                [p.write_bytes(b"") for p in (r / "b").iterdir()],
            ),
            "No readable image left in class(es) ['b']",
        ),
    ],
)
@pytest.mark.parametrize("command", ["profile", "fit"])
def test_unusable_folders_are_one_clear_error(tmp_path, cli, fit_env, build, message, command):
    root = tmp_path / "d"
    build(root)
    extra = (
        ["--backbone", "test_efficientnet", "--size", "32"]
        if command == "profile"
        else [
            "--search-space",
            str(fit_env["space"]),
            "--profile-backbone",
            "test_efficientnet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    result = cli([command, str(root), *extra])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_labels_csv_with_missing_paths_duplicates_and_unknown_columns(tmp_path, cli, fit_env):
    root = make_imagefolder(tmp_path / "imgs", {"a": 6, "b": 6})
    rows = [{"path": f"{c}/img_{i}.png", "label": c, "note": "x"} for c in "ab" for i in range(6)]
    rows += [rows[0], {"path": "a/gone.png", "label": "a", "note": ""}]
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "note"])
        writer.writeheader()
        writer.writerows(rows)
    result = cli(["profile", str(root / "labels.csv"), "--backbone", "test_efficientnet", "--size", "32", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["n_images"] == 12
    reasons = " ".join(s["reason"] for s in document["skipped"])
    assert "gone.png" in json.dumps(document["skipped"]) and "duplicate" in reasons, document["skipped"]


def test_api_errors_name_the_estimators_parameters_not_the_clis_options(tmp_path):
    from autotransfer.api import AutoTransfer
    from autotransfer.errors import AutoTransferError, python_argument

    error = AutoTransferError("too small", fix="use {option:8m14s} or more, or --weights PATH.", option="time_budget")
    error = error.in_terms(python_argument)
    assert error.fix == 'use time_budget="8m14s" or more, or --weights PATH.'  # --weights is no parameter
    data = make_imagefolder(tmp_path / "data", {"a": 4, "b": 4})
    (tmp_path / "taken").write_text("a file where the run directory would go")
    with pytest.raises(AutoTransferError, match="choose an out= in a folder you can write to"):
        AutoTransfer(time_budget="1m", out=tmp_path / "taken").fit(data)
