"""``predict``'s ``size`` checked without torch: ``native``, ``original`` or a shorter side in pixels.

The CLI checks ``--size`` before the pipeline (and torch) is loaded; Pipeline.shorter_side checks the
Python API's ``size=`` with the same function. A number of pixels is held to the one range every
``--size`` of the CLI accepts (data/image_size.py's IMAGE_SIZE_RANGE, with its message).
"""

from __future__ import annotations

from autotransfer.data.image_size import check_image_size
from autotransfer.errors import AutoTransferError

# ``original`` keeps an image's own size only up to this many times the training size (its shorter side):
# a network trained at 128 px on photos decoded down from 4000x3000 saw their objects 23x smaller than at
# full size, and misread them there (measured on 12 such photos: 12/12 right at 2x, 10/12 at 3x, 7/12 at
# 4x, 6/12 at 8x and at full size, which also took 5.5 minutes and 3.3 GB). Larger images are scaled down.
ORIGINAL_MAX_SCALE = 2


def checked_size(size: str | int) -> str | int:
    """``"native"``, ``"original"`` or the shorter side as an int within ``IMAGE_SIZE_RANGE``."""
    if size in ("native", "original"):
        return size
    try:
        value = int(size)
    except (TypeError, ValueError):
        raise AutoTransferError(
            f"size must be 'native', 'original' or a number of pixels, got {size!r}.", where="{option}",
            fix="give {option} native, original or a shorter side in pixels such as 224.", option="size",
        ) from None  # fmt: skip
    return check_image_size(value, option="size")
