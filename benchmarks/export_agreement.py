"""Do exported models label raw images as `autotransfer predict` does? (deploy/graph_resize.py)

    python -m benchmarks.export_agreement RUN:TEST_FOLDER [RUN:TEST_FOLDER ...] [--format onnx|torchscript]

For each fit run directory and a folder of test images (any sizes), exports the pipeline, feeds every
image whole (uint8, its own size) to the exported graph and counts the labels equal to `predict`'s
(PIL's crop and resize). Prints one row per run: images, non-square ones, agreeing labels, and the
graph's seconds per image at 400x300, 1920x1080 and 4000x3000 (random pixels, one thread, best of 3).
E.g. the real-cpu suite's clip art: benchmarks/results/real-cpu/work/openclipart-300-s0--fit/run with
benchmarks/results/real-cpu/data/openclipart-300-test15/test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autotransfer.data.images import open_rgb, read_file
from autotransfer.data.sources import index_dataset
from autotransfer.deploy.export import export
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.machine import describe_machine

SIZES = ((300, 400), (1080, 1920), (3000, 4000))  # (height, width) of the timed inputs


def load_exported(path: Path, fmt: str):
    """A function from uint8 pixels (N x 3 x H x W) to the graph's output, on one thread."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options)
        return lambda pixels: session.run(None, {"images": pixels})[0]
    torch.set_num_threads(1)
    model = torch.jit.load(str(path))
    return lambda pixels: model(torch.from_numpy(pixels)).numpy()


def exported_labels(run, classes: np.ndarray, images: list) -> list[str]:
    """The exported graph's label of each image, fed one at a time at its own size."""
    return [str(classes[run(np.asarray(image).transpose(2, 0, 1)[None].copy()).argmax()]) for image in images]


def seconds_per_image(run, height: int, width: int) -> float:
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, height, width), dtype=np.uint8)
    run(pixels)  # warm-up
    times = []
    for _ in range(3):
        tic = time.perf_counter()
        run(pixels)
        times.append(time.perf_counter() - tic)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", help="RUN:TEST_FOLDER")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torchscript"))
    args = parser.parse_args(argv)
    print(f"Machine: {describe_machine()}\n")
    timed = " | ".join(f"s/image {w}x{h}" for h, w in SIZES)
    print(f"| run | images | non-square | {args.format} labels equal to predict's | {timed} |")
    print("|---|---|---|---|" + "---|" * len(SIZES))
    for pair in args.pairs:
        run, test = (Path(part) for part in pair.split(":", 1))
        pipeline = Pipeline.load(run / "pipeline" if (run / "pipeline").is_dir() else run, device="cpu")
        images = [open_rgb(read_file(path)).image for path in index_dataset(test).paths]
        predicted = pipeline.predict(images)
        with tempfile.TemporaryDirectory() as scratch:
            path = export(pipeline, args.format, Path(scratch) / f"model.{args.format}")
            graph = load_exported(path, args.format)
            labels = exported_labels(graph, pipeline.classes_, images)
            seconds = " | ".join(f"{seconds_per_image(graph, h, w):.3f}" for h, w in SIZES)
        agree = sum(a == b for a, b in zip(labels, predicted))
        square = sum(image.width == image.height for image in images)
        print(f"| {run} | {len(images)} | {len(images) - square} | {agree} ({agree / len(images):.1%}) | {seconds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
