"""Whatever a user hands to ``predict``, as a list of named RGB images (or the reason one is unusable).

Accepted: a path, a directory (its image files, recursively, sorted), a list of those, PIL images,
numpy arrays (HxW, HxWx3/4 or NxHxWx3; uint8, or float in 0..1) and torch tensors (CxHxW or NxCxHxW).
Unreadable files become entries with an error, so one bad file never stops the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from autotransfer.data.images import IMAGE_EXTENSIONS, ResizeRecipe, open_rgb, read_file, resize, to_rgb
from autotransfer.errors import AutoTransferError


@dataclass
class Loaded:
    name: str
    image: Image.Image | None
    error: str | None = None


def _from_array(array: np.ndarray, name: str) -> Loaded:
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        return Loaded(name, None, f"array of shape {array.shape} is not an image (HxW, HxWx3 or HxWx4)")
    if array.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array.astype(np.float64) * scale + 0.5, 0, 255).astype(np.uint8)
    return Loaded(name, to_rgb(Image.fromarray(array)))


def _from_path(path: Path) -> list[Loaded]:
    if path.is_dir():
        # Every image-named entry but folders: a broken link or a pipe gets its own error row, not silence.
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
        if not files:
            return [Loaded(str(path), None, "directory holds no image files")]
        return [item for f in files for item in _from_path(f)]
    if not path.exists():
        return [Loaded(str(path), None, "no such file")]
    data = read_file(path)
    opened = data if isinstance(data, str) else open_rgb(data)
    return [Loaded(str(path), None, opened)] if isinstance(opened, str) else [Loaded(str(path), opened.image)]


def non_image_files(paths: list[str | os.PathLike]) -> list[Path]:
    """The files below the folders among ``paths`` that a folder's expansion leaves out because their names
    are not images' (notes.txt, labels.csv), for a note to the user; hidden files are not counted."""
    found = []
    for folder in (Path(p) for p in paths if Path(p).is_dir()):
        for path in sorted(folder.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if not hidden and path.suffix.lower() not in IMAGE_EXTENSIONS and path.is_file():
                found.append(path)
    return found


def load_inputs(inputs: Any) -> list[Loaded]:
    """Flatten ``inputs`` into named images, in the order given."""
    if isinstance(inputs, (str, os.PathLike)):
        return _from_path(Path(inputs))
    if isinstance(inputs, Image.Image):
        return [Loaded("<image>", to_rgb(inputs))]
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu()
        if inputs.ndim == 4:
            return [_from_array(x.permute(1, 2, 0).numpy(), f"<tensor {i}>") for i, x in enumerate(inputs)]
        return [_from_array(inputs.numpy(), "<tensor>")]
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4:
            return [_from_array(x, f"<array {i}>") for i, x in enumerate(inputs)]
        return [_from_array(inputs, "<array>")]
    if isinstance(inputs, (list, tuple)):
        return [item for x in inputs for item in load_inputs(x)]
    raise AutoTransferError(
        f"Cannot predict on a {type(inputs).__name__}.",
        fix="pass paths, a directory, PIL images, numpy arrays or torch tensors.",
    )


def to_pixels(image: Image.Image, recipe: ResizeRecipe, keep_aspect: int | None | bool = False) -> np.ndarray:
    """uint8 HxWx3 pixels for the network.

    ``keep_aspect=False``: the training recipe (square, as the decode cache did). Otherwise the image
    keeps its aspect ratio, with its shorter side set to ``keep_aspect`` pixels, or (None) left as it
    is unless smaller than the training size.
    """
    if keep_aspect is False:
        return np.asarray(resize(image, recipe), dtype=np.uint8)
    shorter = min(image.size)
    target = keep_aspect if keep_aspect is not None else max(shorter, recipe.size)
    if target != shorter:
        scale = target / shorter
        size = (max(target, round(image.width * scale)), max(target, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)
