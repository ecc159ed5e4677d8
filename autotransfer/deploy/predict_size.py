"""``predict``'s ``size`` checked without torch: ``native``, ``original`` or a shorter side in pixels.

The CLI checks ``--size`` before the pipeline (and torch) is loaded; Pipeline.shorter_side checks the
Python API's ``size=`` with the same function.
"""

from __future__ import annotations

from autotransfer.errors import AutoTransferError

SIZE_RANGE = (16, 4096)


def checked_size(size: str | int) -> str | int:
    """``"native"``, ``"original"`` or the shorter side as an int within ``SIZE_RANGE``."""
    if size in ("native", "original"):
        return size
    try:
        value = int(size)
    except (TypeError, ValueError):
        raise AutoTransferError(
            f"size must be 'native', 'original' or a number of pixels, got {size!r}.", where="{option}",
            fix="give --size native, original or a shorter side in pixels such as 224.", option="size",
        ) from None  # fmt: skip
    low, high = SIZE_RANGE
    if not low <= value <= high:
        raise AutoTransferError(
            f"size {value} is outside {low}..{high} pixels.", where="{option}",
            fix=f"give a size within {low}..{high}.", option="size",
        )  # fmt: skip
    return value
