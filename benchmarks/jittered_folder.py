"""A class-folder of any size made from Fashion-MNIST's 70,000 images (issue 27's 200,000-image fit).

    python -m benchmarks.jittered_folder OUT --images 200000

Fashion-MNIST has 7,000 images per class; beyond that each image is written again shifted by up to 2 pixels
in x and y (a seeded random choice per copy), so no two files share their bytes: the profiler's duplicate
check sees a folder of distinct images, and the decode, feature and probe costs are those of N real files.
The first copy of each image is unshifted. PNG, 28 x 28, gray, about 0.5 KB a file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from autotransfer.data.offline_datasets import load_fashion_mnist


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``image`` (H, W) moved by (dx, dy) pixels, the uncovered border filled with black (the background)."""
    out = np.zeros_like(image)
    height, width = image.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def write_folder(out: Path, images_wanted: int, seed: int = 0) -> int:
    """Write ``images_wanted`` PNGs into ``out/<class>/`` (balanced); return how many were written."""
    images, labels, classes = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    per_class = images_wanted // len(classes)
    offsets = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3) if (dx, dy) != (0, 0)]
    written = 0
    for label, name in enumerate(classes):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        members = np.flatnonzero(labels == label)
        for k in range(per_class):
            source = images[members[k % len(members)]]
            copy = k // len(members)
            dx, dy = offsets[rng.integers(len(offsets))] if copy else (0, 0)
            Image.fromarray(shifted(source, dx, dy)).save(folder / f"{k:06d}.png", optimize=False)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {write_folder(args.out, args.images, args.seed)} images under {args.out}")


if __name__ == "__main__":
    main()
