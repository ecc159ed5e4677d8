"""Decode-cache speed-up: the first pass (decode + write) against the second (memory-mapped read).

    python -m benchmarks.decode_cache [--photos 300] [--fashion-per-class 200]

Two datasets: Fashion-MNIST PNGs (tiny files, decode is cheap) and synthetic colour JPEG photos at
640x480 (decode dominates, as with real photo folders). Each is decoded into a fresh cache, then
read again; "read" includes touching every pixel, as a training epoch would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from autotransfer.data.decode_cache import decode_all
from autotransfer.data.images import ResizeRecipe
from autotransfer.data.offline_datasets import build
from autotransfer.data.sources import index_dataset
from autotransfer.machine import describe_machine


def _photos(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        photo = Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
        noise = rng.integers(-12, 12, size=(480, 640, 3))
        photo = Image.fromarray(np.clip(np.asarray(photo, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        photo.save(folder / f"photo_{i:04d}.jpg", quality=90)
    return root


def _timed_pass(paths: list[Path], size: int, cache: Path) -> tuple[float, bool]:
    """Seconds to get every pixel of the dataset in memory, through the decode cache."""
    start = time.perf_counter()
    decoded = decode_all(paths, ResizeRecipe(size), cache_root=cache, show_progress=False)
    assert int(decoded.pixels.sum(dtype=np.uint64)) > 0  # touch every pixel, as an epoch would
    return time.perf_counter() - start, decoded.cache_hit


def _measure(name: str, root: Path, size: int, cache: Path) -> dict:
    paths = index_dataset(root).paths
    first, first_hit = _timed_pass(paths, size, cache)
    second, second_hit = _timed_pass(paths, size, cache)
    assert second_hit and not first_hit
    return {"dataset": name, "images": len(paths), "size": size, "first_s": first, "second_s": second}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--fashion-per-class", type=int, default=200)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        fashion = build("fashion-mnist", tmp_path / "ds", per_class=args.fashion_per_class)
        photos = _photos(tmp_path / "photos", args.photos)
        for name, root, size in (("fashion-mnist png 28px", fashion, 96), ("colour jpeg 640x480", photos, 128)):
            rows.append(_measure(name, root, size, tmp_path / f"cache-{size}"))
    print(describe_machine())
    print(f"| {'dataset':24} | images | size | first pass (s) | second pass (s) | speed-up |")
    print(f"|{'-' * 26}|--------|------|----------------|-----------------|----------|")
    for r in rows:
        print(
            f"| {r['dataset']:24} | {r['images']:6} | {r['size']:4} | {r['first_s']:14.2f} | "
            f"{r['second_s']:15.3f} | {r['first_s'] / r['second_s']:7.0f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
