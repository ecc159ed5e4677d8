"""`fit` against the recipe's fixed strategies (default settings) on real offline data, and the
pipeline's predict/export speed.

    python -m benchmarks.fit search --dataset animal-mnist --per-class 100 --budget 5m
    python -m benchmarks.fit predict            # predict vs bare forward, ONNX Runtime vs PyTorch

`search` builds a subset with a held-out test split (seen by nothing but the final scoring), runs
`fit` with the budget, then each fixed strategy of the table with default settings on the same
backbone and resolution (the first of the default space), and prints test accuracy and wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autotransfer import AutoTransfer, Pipeline
from autotransfer.budget import parse_duration
from autotransfer.dataset import load_dataset
from autotransfer.features import extract_features
from autotransfer.finetune import FinetuneConfig, TransferModel, finetune
from autotransfer.probes import as_linear, fit_probe
from autotransfer.search import _accuracy
from autotransfer.zoo import create_backbone
from benchmarks.datasets import build
from benchmarks.features import WORK
from benchmarks.machine import describe_machine

BACKBONE, SIZE = "mobilenetv2_100", 64


def _probe_pipeline(dataset, backbone, tap: str, heads: tuple[str, ...]) -> Pipeline:
    features = np.asarray(extract_features(dataset, backbone, [tap], show_progress=False)[tap])
    train, val = dataset.indices("train"), dataset.indices("val")
    probe = fit_probe(features[train], dataset.labels[train], features[val], dataset.labels[val], heads=heads)
    model = TransferModel(backbone, tap, len(dataset.classes))
    weight, bias = as_linear(probe.model, len(dataset.classes))
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    return _wrap(backbone, model.eval(), dataset)


def _wrap(backbone, model, dataset) -> Pipeline:
    return Pipeline.from_model(backbone, model, classes=dataset.classes, recipe=dataset.recipe, frozen_groups=0,
                               head_type="linear", strategy="fixed", hyperparameters={}, metrics={})


def _fixed_strategies(dataset) -> dict:
    """The recipe's table with default settings, as a user would run each by hand."""
    mid = create_backbone(BACKBONE).taps[-3].name
    return {
        "CNN codes + linear SVM": lambda: _probe_pipeline(dataset, create_backbone(BACKBONE), "head", ("svm",)),
        "CNN codes + softmax": lambda: _probe_pipeline(dataset, create_backbone(BACKBONE), "head", ("softmax",)),
        f"mid-layer ({mid}) + linear": lambda: _probe_pipeline(dataset, create_backbone(BACKBONE), mid, ("softmax",)),
        "fine-tune all, pretrained LR x0.01": lambda: _finetuned(dataset, FinetuneConfig(backbone_lr_ratio=0.01)),
        "pretrained init + train all": lambda: _finetuned(dataset, FinetuneConfig(strategy="train_all")),
        "fine-tune all, one LR (typical script)": lambda: _finetuned(dataset, FinetuneConfig(
            backbone_lr_ratio=1.0, head_lr=1e-3, label_smoothing=0.0, warmup_epochs=0)),
    }


def _finetuned(dataset, config: FinetuneConfig) -> Pipeline:
    backbone = create_backbone(BACKBONE)
    return _wrap(backbone, finetune(dataset, backbone, config).model, dataset)


def search(args: argparse.Namespace) -> None:
    root = build(args.dataset, WORK / "fit", per_class=args.per_class, test_per_class=args.test_per_class,
                 seed=args.seed)
    dataset = load_dataset(root, image_size=SIZE, seed=args.seed, show_progress=False)
    test = dataset.indices("test")
    pixels, labels = np.asarray(dataset.images[test]), dataset.labels[test]
    rows = []
    tic = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        pipeline = AutoTransfer(time_budget=args.budget, search_space=args.space, out=Path(out) / "run",
                                seed=args.seed).fit(root, start=tic)
        seconds = time.monotonic() - tic
        rows.append((f"autotransfer fit ({args.space}, {args.budget})", pipeline.spec["metrics"]["test_accuracy"],
                     seconds, pipeline.describe()))
    for name, make in _fixed_strategies(dataset).items():
        tic = time.monotonic()
        fixed = make()
        rows.append((name, _accuracy(fixed, pixels, labels), time.monotonic() - tic, f"{BACKBONE} at {SIZE}px"))
    budget = parse_duration(args.budget)
    print(describe_machine())
    print(f"\n{args.dataset}, {args.per_class} train+val images per class, {args.test_per_class} test per class, "
          f"seed {args.seed}; budget {args.budget} ({budget:.0f} s)\n")
    print("| contender | test accuracy | wall time (s) | within budget +5% | what |")
    print("|---|---|---|---|---|")
    for name, accuracy, seconds, what in rows:
        within = "yes" if seconds <= budget * 1.05 else "no"
        print(f"| {name} | {accuracy:.4f} | {seconds:.0f} | {within} | {what} |")


def predict(args: argparse.Namespace) -> None:
    import onnxruntime

    from autotransfer.export import export

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
        bare = timed(lambda: [net(batch[i:i + 32]) for i in range(0, len(batch), 32)])
    files = dataset.paths[:256]
    from_files = timed(lambda: pipeline.predict_proba([str(p) for p in files]))
    with tempfile.TemporaryDirectory() as out:
        path = export(pipeline, "onnx", Path(out) / "m.onnx")
        session = onnxruntime.InferenceSession(str(path))
        onnx = timed(lambda: [session.run(None, {"images": batch[i:i + 32].numpy()}) for i in range(0, len(batch), 32)])
    print(describe_machine())
    print(f"\n{BACKBONE} at {SIZE}px, batch 32, 256 images, images/s (best of 3)\n")
    print("| path | images/s | ratio to bare forward |")
    print("|---|---|---|")
    for name, value in (("bare PyTorch forward (uint8 tensors in memory)", bare),
                        ("Pipeline.predict_proba on files (decode + resize + forward)", from_files),
                        ("exported ONNX in onnxruntime (resize inside the graph)", onnx)):
        print(f"| {name} | {value:.0f} | {value / bare:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search")
    s.add_argument("--dataset", default="animal-mnist")
    s.add_argument("--per-class", type=int, default=100)
    s.add_argument("--test-per-class", type=int, default=50)
    s.add_argument("--budget", default="5m")
    s.add_argument("--space", default="default")
    s.add_argument("--seed", type=int, default=0)
    sub.add_parser("predict")
    args = parser.parse_args(argv)
    {"search": search, "predict": predict}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
