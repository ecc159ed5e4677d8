"""The export formats, checked without importing torch (`export --format` is answered at once)."""

from __future__ import annotations

from autotransfer.errors import AutoTransferError

FORMATS = ("onnx", "torchscript")


def check_export_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AutoTransferError(
            f"Unknown export format {fmt!r}.", where="{option}", fix=f"use one of {', '.join(FORMATS)}.",
            option="format",
        )  # fmt: skip
    return fmt
