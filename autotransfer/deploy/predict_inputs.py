"""Whatever a user hands to ``predict``, as a list of named sources decoded one at a time, when needed.

Accepted: a path, a directory (its image files, recursively, sorted; symbolic links to folders and
files are followed, a link loop is visited once: the same walk as ``fit`` and ``inspect``, see
data/sources.py), a list of those, PIL images, numpy arrays (HxW, HxWx3/4 or NxHxWx3; uint8, or float
in 0..1) and torch tensors (CxHxW or NxCxHxW). Listing is cheap (names only); ``Source.pixels``
decodes a file when its batch comes, JPEGs in draft mode near the size the network needs, so that
memory does not grow with the number of inputs. Unreadable files give a reason, never an exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from autotransfer.data.images import ResizeRecipe, open_rgb, read_file, resize, to_rgb
from autotransfer.data.sources import SkippedFile, walk_images
from autotransfer.deploy.predict_size import ORIGINAL_MAX_SCALE
from autotransfer.errors import AutoTransferError

_NOT_AN_IMAGE = "not an image file"  # the reasons data/sources.py gives: a note, not a row
_VISITED = "folder already visited"  # a link loop, or a folder linked twice: its images are listed once


@dataclass(frozen=True)
class Source:
    """One input by name: a file decoded on demand, an in-memory image, or the reason it cannot be used."""

    name: str
    path: Path | None = None
    image: Image.Image | None = None
    error: str | None = None

    def open(self, draft_to: int | None) -> Image.Image | str:
        """The upright RGB image (a JPEG file decoded near ``draft_to`` px when given), or why not."""
        if self.error is not None:
            return self.error
        if self.image is not None:
            return self.image
        data = read_file(self.path)
        opened = data if isinstance(data, str) else open_rgb(data, draft_to=draft_to)
        return opened if isinstance(opened, str) else opened.image


@dataclass(frozen=True)
class Sources:
    """The inputs in order, and the files the folders held that are not images by name (for a note)."""

    items: list[Source]
    not_images: list[Path]


def _from_array(array: np.ndarray, name: str) -> Source:
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        return Source(name, error=f"array of shape {array.shape} is not an image (HxW, HxWx3 or HxWx4)")
    if array.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array.astype(np.float64) * scale + 0.5, 0, 255).astype(np.uint8)
    return Source(name, image=to_rgb(Image.fromarray(array)))


def _from_path(path: Path, not_images: list[Path]) -> list[Source]:
    if path.is_dir():
        skipped: list[SkippedFile] = []
        found = [Source(str(p), path=p) for p in walk_images(path, skipped)]
        # a broken link or a pipe with an image's name gets its own error row, not silence
        found += [Source(s.path, error=s.reason) for s in skipped if not s.reason.startswith((_NOT_AN_IMAGE, _VISITED))]
        not_images += [Path(s.path) for s in skipped if s.reason.startswith(_NOT_AN_IMAGE)]
        if not found:
            return [Source(str(path), error="directory holds no image files")]
        return sorted(found, key=lambda s: s.name)
    if not path.exists():
        return [Source(str(path), error="broken symbolic link" if path.is_symlink() else "no such file")]
    return [Source(str(path), path=path)]


def _collect(inputs: Any, sources: list[Source], not_images: list[Path]) -> None:
    if isinstance(inputs, (str, os.PathLike)):
        sources += _from_path(Path(inputs), not_images)
    elif isinstance(inputs, Image.Image):
        sources.append(Source("<image>", image=to_rgb(inputs)))
    elif isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu()
        if inputs.ndim == 4:
            sources += [_from_array(x.permute(1, 2, 0).numpy(), f"<tensor {i}>") for i, x in enumerate(inputs)]
        else:
            sources.append(_from_array(inputs.numpy(), "<tensor>"))
    elif isinstance(inputs, np.ndarray):
        if inputs.ndim == 4:
            sources += [_from_array(x, f"<array {i}>") for i, x in enumerate(inputs)]
        else:
            sources.append(_from_array(inputs, "<array>"))
    elif isinstance(inputs, (list, tuple)):
        for item in inputs:
            _collect(item, sources, not_images)
    else:
        raise AutoTransferError(
            f"Cannot predict on a {type(inputs).__name__}.",
            fix="pass paths, a directory, PIL images, numpy arrays or torch tensors.",
        )


def list_inputs(inputs: Any) -> Sources:
    """Flatten ``inputs`` into named sources, in the order given; no file is decoded yet."""
    sources: list[Source] = []
    not_images: list[Path] = []
    _collect(inputs, sources, not_images)
    return Sources(sources, sorted(not_images))


def to_pixels(image: Image.Image, recipe: ResizeRecipe, keep_aspect: int | None | bool = False) -> np.ndarray:
    """uint8 HxWx3 pixels for the network.

    ``keep_aspect=False``: the training recipe (square, as the decode cache did). Otherwise the image
    keeps its aspect ratio, with its shorter side set to ``keep_aspect`` pixels, or (None, ``original``)
    left as it is within the training size and ``ORIGINAL_MAX_SCALE`` times it (smaller images are
    scaled up, larger ones down).
    """
    if keep_aspect is False:
        return np.asarray(resize(image, recipe), dtype=np.uint8)
    shorter = min(image.size)
    target = keep_aspect if keep_aspect is not None else min(max(shorter, recipe.size), original_limit(recipe))
    if target != shorter:
        scale = target / shorter
        size = (max(target, round(image.width * scale)), max(target, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def original_limit(recipe: ResizeRecipe) -> int:
    """The largest shorter side ``original`` classifies an image at (larger ones are scaled down to it)."""
    return ORIGINAL_MAX_SCALE * recipe.size


def pixels_of(
    source: Source, recipe: ResizeRecipe, keep_aspect: int | None | bool, *, draft: bool = True
) -> np.ndarray | str:
    """The network's pixels of one source (decoded, resized, the full-size image dropped), or why not.

    Draft mode asks the JPEG decoder for a reduced scale (1/2 .. 1/8) that stays at least twice the
    target size, so a 12-megapixel photo is never decoded at full resolution for a 224 px network."""
    # None ("original"): decoded near its limit, whatever the file's size
    target = original_limit(recipe) if keep_aspect is None else recipe.size if keep_aspect is False else keep_aspect
    image = source.open(target if draft else None)
    if isinstance(image, str):
        return image
    try:
        return to_pixels(image, recipe, keep_aspect)
    except (OSError, ValueError) as error:
        return f"corrupt or truncated image ({type(error).__name__}: {str(error)[:120]})"
