"""The one resolution that ``profile`` and ``fit`` decode at: from the images' native sizes and the device."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autotransfer.data.datasets import Dataset
from autotransfer.runtime import default_device

CPU_RESOLUTION = 128  # docs/profiler.md: 3x the throughput of 224 px on 2 cores, and the fine details mostly kept

GPU_RESOLUTION = 224  # the pretrained weights' own size

MIN_RESOLUTION = 64  # a stride-32 network's last feature map is 2x2 here; below it, 1x1


def native_short_sides(data: str | Path | Dataset, sample: int = 512, seed: int = 0) -> list[int]:
    """Short sides (pixels) of the images of ``data``: from a Dataset's records, or the headers of a seeded sample."""
    if isinstance(data, Dataset):
        return [min(r["width"], r["height"]) for r in data.records if "width" in r]
    from autotransfer.data.sources import index_dataset

    paths = index_dataset(data).paths
    chosen = np.random.default_rng(seed).permutation(len(paths))[:sample]
    sides = []
    for i in chosen:
        try:
            with Image.open(paths[i]) as image:  # reads the header only
                sides.append(min(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return sides


def choose_resolution(
    sizes: str | Path | Dataset | list[int] | list[tuple[int, int]],
    *,
    device: str | torch.device | None = None,
    choices: tuple[int, ...] | list[int] | None = None,
) -> tuple[int, str]:
    """The one resolution that both ``profile`` and ``fit`` measure/train at, and why (a sentence).

    ``sizes``: a dataset (folder, CSV or Dataset) or its native sizes (short sides, or (width, height)).
    The target is 128 px on a CPU and 224 px on a GPU, lowered to the median short side rounded up to a
    multiple of 32 (never below 64) when the images are smaller: upscaling invents no detail. With
    ``choices`` (the search space's resolutions) it is the largest choice at or below that target, or
    the smallest choice when all are above it.
    """
    if isinstance(sizes, (str, Path, Dataset)):
        sides = native_short_sides(sizes)
    else:
        sides = [min(s) if isinstance(s, (tuple, list)) else int(s) for s in sizes]
    device = torch.device(device) if device is not None else default_device()
    cap, where = (GPU_RESOLUTION, "GPU") if device.type == "cuda" else (CPU_RESOLUTION, "CPU")
    median = float(np.median(sides)) if sides else float(cap)
    target = min(cap, max(MIN_RESOLUTION, 32 * math.ceil(median / 32)))
    reason = (
        f"{target}px: {where} default"
        if target == cap
        else f"{target}px: images are small (median short side {median:.0f}px), upscaling adds no detail"
    )
    if choices:
        below = [c for c in sorted(choices) if c <= target]
        picked = below[-1] if below else min(choices)
        if picked != target:
            reason = f"{picked}px: the search space's resolution nearest below {reason}"
        target = picked
    return int(target), reason


def profile_resolution(
    sizes: str | Path | Dataset | list[int] | list[tuple[int, int]],
    *,
    device: str | torch.device | None = None,
    choices: tuple[int, ...] | list[int] | None = None,
) -> int:
    """choose_resolution without the reason: the resolution ``profile`` and ``fit`` share."""
    return choose_resolution(sizes, device=device, choices=choices)[0]
