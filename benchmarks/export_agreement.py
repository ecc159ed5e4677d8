"""Do exported models label raw images as `autotransfer predict` does? (deploy/graph_resize.py)

    python -m benchmarks.export_agreement RUN:TEST_FOLDER [RUN:TEST_FOLDER ...] [--format onnx|torchscript]

For each fit run directory and a folder of test images (any sizes), exports the pipeline, feeds every
image whole (uint8, its own size) to the exported graph and counts the labels equal to `predict`'s
(PIL's crop and resize). Prints one row per run: images, non-square ones, agreeing labels.
E.g. the real-cpu suite's clip art: benchmarks/results/real-cpu/work/openclipart-300-s0--fit/run with
benchmarks/results/real-cpu/data/openclipart-300-test15/test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from autotransfer.data.images import open_rgb, read_file
from autotransfer.data.sources import index_dataset
from autotransfer.deploy.export import export
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.machine import describe_machine


def exported_labels(path: Path, fmt: str, classes: np.ndarray, images: list) -> list[str]:
    """The exported graph's label of each image, fed one at a time at its own size."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        run = lambda pixels: session.run(None, {"images": pixels})[0]  # noqa: E731
    else:
        model = torch.jit.load(str(path))
        run = lambda pixels: model(torch.from_numpy(pixels)).numpy()  # noqa: E731
    return [str(classes[run(np.asarray(image).transpose(2, 0, 1)[None].copy()).argmax()]) for image in images]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", help="RUN:TEST_FOLDER")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torchscript"))
    args = parser.parse_args(argv)
    print(f"Machine: {describe_machine()}\n")
    print(f"| run | images | non-square | {args.format} labels equal to predict's |\n|---|---|---|---|")
    for pair in args.pairs:
        run, test = (Path(part) for part in pair.split(":", 1))
        pipeline = Pipeline.load(run / "pipeline" if (run / "pipeline").is_dir() else run, device="cpu")
        images = [open_rgb(read_file(path)).image for path in index_dataset(test).paths]
        predicted = pipeline.predict(images)
        with tempfile.TemporaryDirectory() as scratch:
            path = export(pipeline, args.format, Path(scratch) / f"model.{args.format}")
            labels = exported_labels(path, args.format, pipeline.classes_, images)
        agree = sum(a == b for a, b in zip(labels, predicted))
        square = sum(image.width == image.height for image in images)
        print(f"| {run} | {len(images)} | {len(images) - square} | {agree} ({agree / len(images):.1%}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
