"""`autotransfer predict`: classify images with a trained pipeline, streamed batch by batch."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from autotransfer.cli.common import check_checkpoint_path, check_inputs_exist, err, out, output_error, prepare_output
from autotransfer.errors import AutoTransferError
from autotransfer.files import disk_full_error, is_disk_full

if TYPE_CHECKING:
    from autotransfer.deploy.predict_rows import CsvRows, PredictionRow


def predict(  # noqa: PLR0913 (typer reads a command's options from its parameters: one per option)
    checkpoint: Path = typer.Argument(..., metavar="RUN", help="run directory of `fit`, or a checkpoint directory"),
    inputs: list[Path] = typer.Argument(
        ..., metavar="IMAGES", help="image files and folders (recursive; links followed, loops once)"
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines on stdout, one object per image"),
    csv_file: Path | None = typer.Option(
        None, "--csv", metavar="FILE", help="also write the rows to this CSV (its folder must exist)"
    ),
    top_k: int = typer.Option(1, "--top-k", min=1, metavar="K", help="classes listed per image (clamped to all)"),
    size: str = typer.Option("native", metavar="SIZE", help="native | original | N (shorter side, 8..1024 px)"),
    reduce: str = typer.Option("mean", metavar="mean|max", help="how a large image's score map is reduced"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="images decoded at a time"),
    device: str | None = typer.Option(None, metavar="DEVICE", help="cpu or cuda (default: cuda when present)"),
) -> None:
    """Classify images with a trained pipeline; unreadable files are reported and skipped.

    Images are decoded, classified and written in batches: memory does not grow with their number,
    large JPEGs are decoded near the size the network needs, --json lines and --csv rows appear as
    each batch is done (with the --top-k columns), and a progress bar shows on a terminal. Folders
    are walked as `fit` walks them: symbolic links are followed, a link loop is visited once.

    --size native resizes and crops each image as in training. --size original keeps each image's own
    size and aspect ratio, its shorter side held within 1-2x the training size: larger images are
    scaled down (a network misreads objects many times larger than those it was trained on).

    Exit status: 0 when at least one image was classified, 2 when none was (or the CSV could not
    be written; the rows before the failure are kept).
    """
    from autotransfer.deploy.predict_size import checked_size
    from autotransfer.option_checks import check_device_name

    check_checkpoint_path(checkpoint)  # the argument errors, before torch is imported
    checked_size(size)
    check_device_name(device)
    if csv_file is not None:
        prepare_output(csv_file, "--csv")
    check_inputs_exist(list(inputs))
    from autotransfer.deploy.pipeline import Pipeline
    from autotransfer.deploy.predict_inputs import list_inputs

    pipeline = Pipeline.load(checkpoint, device=device)
    sources = list_inputs([str(p) for p in inputs])
    k = pipeline.clamp_top_k(top_k)
    if k < top_k:
        err.print(f"note: --top-k {top_k} is more than the pipeline's {k} classes: listing all {k}.")
    sink = _Rows(as_json=as_json, k=k, batch_size=batch_size)
    try:
        sink.open_csv(csv_file)
        _classify(pipeline, sources.items, sink, size=size, reduce=reduce)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(error, csv_file or Path.cwd()) from error
        raise output_error(csv_file, "--csv", error, " The rows before the failure are kept.") from error
    finally:
        sink.close()
    if not as_json:
        _print_prediction_table(pipeline, sink.table_rows, k)
        for row in sink.failed:
            err.print(f"[yellow]skipped[/] {escape(row.path)}: {escape(row.error)}", highlight=False)
    if not sink.n_classified:
        raise AutoTransferError(
            f"No image was classified: {len(sink.failed)} input(s), none readable as an image.",
            where=", ".join(str(p) for p in inputs[:3]) + (", ..." if len(inputs) > 3 else ""),
            fix="give image files (JPEG, PNG, ...) or folders holding them.",
        )
    _print_notes(pipeline, sink, size, sources.not_images)


@dataclass
class _Rows:
    """Where the rows go as they come: --json lines on stdout, --csv rows, and (without --json) the table;
    JSON lines and CSV rows are flushed once per batch."""

    as_json: bool
    k: int
    batch_size: int
    table_rows: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    n_classified: int = 0
    number: int = 0
    csv_handle: IO[str] | None = None
    writer: CsvRows | None = None

    def open_csv(self, path: Path | None) -> None:
        from autotransfer.deploy.predict_rows import CsvRows

        if path is not None:
            self.csv_handle = open(path, "w", newline="")  # noqa: SIM115 (closed by close(); rows flushed per batch)
            self.writer = CsvRows(self.csv_handle, self.k)

    def add(self, row: PredictionRow) -> None:
        from autotransfer.deploy.predict_rows import json_line

        self.number += 1
        end_of_batch = self.number % self.batch_size == 0
        if row.error:
            self.failed.append(row)
        else:
            self.n_classified += 1
            if not self.as_json:  # with --json nothing is kept for a table
                self.table_rows.append(row)
        if self.as_json:
            print(json_line(row), flush=end_of_batch)
        if self.writer is not None:
            self.writer.write(row)
            if end_of_batch:
                self.writer.flush()

    def close(self) -> None:
        sys.stdout.flush()
        if self.csv_handle is not None:
            self.csv_handle.close()


def _classify(pipeline, items: list, sink: _Rows, *, size: str, reduce: str) -> None:
    """Every input through the pipeline in batches, each row to ``sink``, with a progress bar on a terminal."""
    from rich.progress import Progress

    from autotransfer.deploy.predict_rows import prediction_row
    from autotransfer.deploy.predict_stream import stream_predictions

    stream = stream_predictions(pipeline, items, size=size, reduce=reduce, batch_size=sink.batch_size)
    show = err.is_terminal and not (sink.as_json and out.is_terminal)
    with Progress(console=err, transient=True, disable=not show) as progress:
        task = progress.add_task("Classifying", total=len(items))
        for result in stream:
            sink.add(prediction_row(result, pipeline, sink.k))
            progress.advance(task)


def _print_notes(pipeline, sink: _Rows, size: str, ignored: list) -> None:
    """What the user should know besides the rows: skipped inputs, a --size unlike training's, non-images."""
    from autotransfer.deploy.predict_size import ORIGINAL_MAX_SCALE

    if sink.failed:
        err.print(f"{len(sink.failed)} input(s) could not be read and were skipped.")
    if size != "native":
        trained = pipeline.spec["preprocess"]["size"]
        scale = (f", its shorter side within {trained}..{ORIGINAL_MAX_SCALE * trained} px (larger images scaled "
                 "down)" if size == "original" else " and scale")  # fmt: skip
        err.print(
            f"note: --size {escape(str(size))} classifies each image at its own aspect ratio{scale}, not as in "
            f"training ({trained} px, {pipeline.spec['preprocess']['resize_mode']}): "
            "answers can differ from the default --size native's; check them on labelled images first.",
            highlight=False,
        )
    if ignored:
        names = ", ".join(str(p) for p in ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        err.print(f"note: {len(ignored)} file(s) in the folders given are not images by name and were not read: "
                  f"{escape(names)}", highlight=False)  # fmt: skip


def _print_prediction_table(pipeline, rows: list, k: int) -> None:
    if not rows:
        return
    table = Table(title=f"{len(rows)} image(s) classified by {escape(pipeline.describe())}")
    for column in ("path", "label", "probability" if k == 1 else f"top {k}"):
        table.add_column(column, overflow="fold")
    for row in rows:
        detail = ", ".join(f"{name} {p:.3f}" for name, p in row.top_k) if k > 1 else f"{row.probability:.3f}"
        table.add_row(escape(row.path), escape(row.label), escape(detail))
    out.print(table)
