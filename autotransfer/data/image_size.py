"""The decode size a dataset may be loaded at, checked without numpy, PIL or torch: the CLI checks
``--size`` with it before any heavy import, and load_dataset checks ``image_size`` with it."""

from __future__ import annotations

from autotransfer.errors import AutoTransferError

IMAGE_SIZE_RANGE = (8, 1024)  # pixels of the shorter side the images are decoded at


def check_image_size(size: int, *, option: str | None = None) -> int:
    """``size`` when it lies within ``IMAGE_SIZE_RANGE``; AutoTransferError naming ``option`` (a command's
    option such as ``"size"``, written ``--size``) or, without one, load_dataset's ``image_size``."""
    low, high = IMAGE_SIZE_RANGE
    if low <= size <= high:
        return size
    where = "{option}" if option else "image_size="
    raise AutoTransferError(
        f"The image size must be between {low} and {high} pixels; got {size}.",
        where=where,
        fix=f"give {where} a size within {low}..{high}, such as 128.",
        option=option,
    )
