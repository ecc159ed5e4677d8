"""The pipeline's predict and export speed against the bare forward of the same network.

    python -m benchmarks.predict            # predict on files vs bare forward, ONNX Runtime vs PyTorch

(`fit` against the fixed strategies is `autotransfer bench`, docs/bench.md.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autotransfer import Pipeline
from autotransfer.data.datasets import load_dataset
from autotransfer.data.offline_datasets import build
from autotransfer.machine import describe_machine
from autotransfer.models.zoo import create_backbone
from autotransfer.transfer.transfer_model import TransferModel
from benchmarks.features import WORK

BACKBONE, SIZE = "mobilenetv2_100", 64


def _wrap(backbone, model, dataset) -> Pipeline:
    return Pipeline.from_model(
        backbone,
        model,
        classes=dataset.classes,
        recipe=dataset.recipe,
        frozen_groups=0,
        head_type="linear",
        strategy="fixed",
        hyperparameters={},
        metrics={},
    )


def predict(args: argparse.Namespace) -> None:
    import onnxruntime

    from autotransfer.deploy.export import export

    root = build("animal-mnist", WORK / "fit", per_class=50, test_per_class=0, seed=0)
    dataset = load_dataset(root, image_size=SIZE, show_progress=False)
    torch.manual_seed(0)
    backbone = create_backbone(BACKBONE)
    pipeline = _wrap(backbone, TransferModel(backbone, "head", len(dataset.classes)).eval(), dataset)
    pixels = np.asarray(dataset.images[:256])
    batch = torch.from_numpy(np.array(pixels)).permute(0, 3, 1, 2)  # channels_last memory, as predict gives it
    net = pipeline.network()

    def timed(run, repeats: int = 3) -> float:
        run()
        best = float("inf")
        for _ in range(repeats):
            tic = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - tic)
        return len(pixels) / best

    with torch.inference_mode():
        bare = timed(lambda: [net(batch[i : i + 32]) for i in range(0, len(batch), 32)])
    files = dataset.paths[:256]
    from_files = timed(lambda: pipeline.predict_proba([str(p) for p in files]))
    with tempfile.TemporaryDirectory() as out:
        path = export(pipeline, "onnx", Path(out) / "m.onnx")
        session = onnxruntime.InferenceSession(str(path))
        onnx = timed(
            lambda: [session.run(None, {"images": batch[i : i + 32].numpy()}) for i in range(0, len(batch), 32)]
        )
    print(describe_machine())
    print(f"\n{BACKBONE} at {SIZE}px, batch 32, 256 images, images/s (best of 3)\n")
    print("| path | images/s | ratio to bare forward |")
    print("|---|---|---|")
    for name, value in (
        ("bare PyTorch forward (uint8 tensors in memory)", bare),
        ("Pipeline.predict_proba on files (decode + resize + forward)", from_files),
        ("exported ONNX in onnxruntime (resize inside the graph)", onnx),
    ):
        print(f"| {name} | {value:.0f} | {value / bare:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    predict(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
