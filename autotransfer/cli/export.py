"""`autotransfer export`: a pipeline as one ONNX or TorchScript graph, preprocessing included."""

from __future__ import annotations

from pathlib import Path

import typer

from autotransfer.cli.common import check_checkpoint_path, out, output_error, prepare_output
from autotransfer.files import disk_full_error, is_disk_full


def export(
    checkpoint: Path = typer.Argument(..., help="run directory of `fit`, or a checkpoint directory"),
    fmt: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
    out_file: Path = typer.Option(..., "--out", help="file to write (a .json with classes goes next to it)"),
) -> None:
    """Export a pipeline, preprocessing included (uint8 images of any size in, logits out)."""
    from autotransfer.deploy.export_formats import check_export_format

    check_export_format(fmt)  # the cheap checks before torch is imported
    check_checkpoint_path(checkpoint)
    prepare_output(out_file, "--out")
    from autotransfer.deploy.export import export as export_pipeline
    from autotransfer.deploy.pipeline import Pipeline

    try:
        path = export_pipeline(Pipeline.load(checkpoint, device="cpu"), fmt, out_file)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(error, out_file) from error
        raise output_error(out_file, "--out", error) from error
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path}.json")
