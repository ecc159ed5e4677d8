"""``predict``'s ``size`` checked without torch: ``native``, ``original`` or a shorter side in pixels.

The CLI checks ``--size`` before the pipeline (and torch) is loaded; Pipeline.shorter_side checks the
Python API's ``size=`` with the same function. A number of pixels is held to the one range every
``--size`` of the CLI accepts (data/image_size.py's IMAGE_SIZE_RANGE, with its message).
"""

from __future__ import annotations

from autotransfer.data.image_size import check_image_size
from autotransfer.errors import AutoTransferError


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
