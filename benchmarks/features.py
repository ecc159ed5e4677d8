"""The cheap stage, measured: extraction throughput, cache, scoring time, and how far the proxies hold.

    python -m benchmarks.features throughput   # extraction vs bare forward, bf16 + channels_last, allocator
    python -m benchmarks.features cache        # second extraction of the same features (cache hit)
    python -m benchmarks.features scoring      # all taps x 4 offline backbones, 5k images, cold cache
    python -m benchmarks.features table        # (backbone, tap) probe accuracy vs zero-cost scores

Uses the four offline backbones and the real offline datasets (autotransfer/offline_datasets.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autotransfer.data.datasets import load_dataset
from autotransfer.data.offline_datasets import build
from autotransfer.machine import describe_machine
from autotransfer.models.features import FeatureExtractor, extract_features, to_input
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import autocast, tune_allocator
from autotransfer.transfer.ranking import RankingConfig, proxy_agreement, rank_backbone

BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
WORK = Path(os.environ.get("BENCH_WORK", tempfile.gettempdir())) / "autotransfer-bench"


def _best_rates(runs: dict, n_images: int, repeats: int = 4) -> dict[str, float]:
    """Images/s of each run, best of ``repeats``; the runs are interleaved so drift hits all equally."""
    for run in runs.values():
        run()  # warm-up: allocations, oneDNN kernels
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: n_images / seconds for name, seconds in best.items()}


def _throughput_row(name: str, size: int, images: np.ndarray, batch: int) -> dict:
    backbone = create_backbone(name)
    row = {"backbone": name, "px": size}
    for bf16 in (False, True):
        extractor = FeatureExtractor(backbone, torch.device("cpu"), batch_size=batch, bf16=bf16)
        inputs = [
            to_input(images[i : i + batch], extractor.mean, extractor.std, extractor.device)
            for i in range(0, len(images), batch)
        ]

        def forward() -> None:
            with torch.inference_mode(), autocast(extractor.device, bf16):
                for x in inputs:
                    extractor.model(x)

        def extract() -> None:
            extractor.run(images, [t.name for t in backbone.taps])

        tag = "bf16" if bf16 else "fp32"
        rates = _best_rates({"forward": forward, "extract": extract}, len(images))
        row[f"forward_{tag}"], row[f"extract_{tag}"] = rates["forward"], rates["extract"]
    return row


def throughput(args: argparse.Namespace) -> None:
    tune_allocator()
    data = build("fashion-mnist", WORK / "datasets", per_class=args.images // 10)
    print(describe_machine())
    print(
        f"batch {args.batch}, {args.images} Fashion-MNIST images from the decode cache; "
        "images/s, best of 4, interleaved"
    )
    print(
        "| backbone | px | forward fp32 | extract fp32 | ratio | forward bf16+CL | extract bf16+CL | ratio "
        "| bf16 gain |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        images = np.asarray(load_dataset(data, image_size=size, show_progress=False).images)
        for name in args.backbones:
            r = _throughput_row(name, size, images, args.batch)
            print(
                f"| {name} | {size} | {r['forward_fp32']:.0f} | {r['extract_fp32']:.0f} | "
                f"{r['extract_fp32'] / r['forward_fp32']:.2f} | {r['forward_bf16']:.0f} | {r['extract_bf16']:.0f} | "
                f"{r['extract_bf16'] / r['forward_bf16']:.2f} | {r['extract_bf16'] / r['extract_fp32']:.2f}x |"
            )
    allocator(args, data)


def allocator(args: argparse.Namespace, data: Path) -> None:
    """Extraction speed with and without the malloc tuning, each in a fresh process."""
    code = (
        "import sys, time, numpy as np; from autotransfer.data.datasets import load_dataset;"
        "from autotransfer.models.features import FeatureExtractor; from autotransfer.runtime import tune_allocator;"
        "from autotransfer.models.zoo import create_backbone; import torch; tune_allocator();"
        f"b = create_backbone('{args.backbones[0]}'); x = np.asarray(load_dataset(sys.argv[1], image_size=128,"
        " show_progress=False).images); e = FeatureExtractor(b, torch.device('cpu'), bf16=False);"
        "e.run(x[:64], ['head']); t = time.perf_counter(); e.run(x, ['head']); "
        "print(len(x) / (time.perf_counter() - t))"
    )
    speeds = {}
    for setting in ("0", "1"):
        env = {**os.environ, "AUTOTRANSFER_MALLOC_TUNING": setting}
        result = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, env=env)
        speeds[setting] = float(result.stdout.strip().splitlines()[-1])
    print(
        f"\nallocator ({args.backbones[0]}, 128 px, fp32): default glibc {speeds['0']:.0f} images/s, "
        f"tuned {speeds['1']:.0f} images/s, gain {speeds['1'] / speeds['0']:.2f}x"
    )


def cache(args: argparse.Namespace) -> None:
    data = build("fashion-mnist", WORK / "datasets", per_class=100)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_dataset(data, image_size=96, cache_root=Path(tmp), show_progress=False)
        backbone = create_backbone(args.backbones[0])
        times = []
        for _ in range(2):
            start = time.perf_counter()
            extract_features(dataset, backbone, cache_root=Path(tmp), show_progress=False)
            times.append(time.perf_counter() - start)
    print(describe_machine())
    print(
        f"feature cache, {args.backbones[0]}, all taps, {len(dataset)} images at 96 px: "
        f"cold {times[0]:.2f}s, warm {times[1]:.3f}s, ratio {times[0] / times[1]:.0f}x"
    )


def scoring(args: argparse.Namespace) -> None:
    tune_allocator()
    data = build("fashion-mnist", WORK / "datasets", per_class=500)
    print(describe_machine())
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AUTOTRANSFER_CACHE"] = tmp  # cold feature cache
        dataset = load_dataset(data, image_size=args.sizes[0], show_progress=False)
        config = RankingConfig(probe=False)
        start = time.perf_counter()
        rows = []
        for name in args.backbones:
            rows += rank_backbone(dataset, create_backbone(name), config, show_progress=False)
        total = time.perf_counter() - start
    extract = sum(r["extract_seconds"] for r in rows)
    score = sum(r["score_seconds"] for r in rows)
    print(
        f"zero-cost scoring of {len(rows)} (backbone, tap) candidates, {len(dataset)} images at {args.sizes[0]} px, "
        f"cold cache: {total:.0f}s in all (extraction {extract:.0f}s, LogME+kNN+H-score {score:.0f}s)"
    )


def table(args: argparse.Namespace) -> None:
    tune_allocator()
    print(describe_machine())
    for name in ("fashion-mnist", "animal-mnist"):
        data = build(name, WORK / "datasets", per_class=args.per_class)
        dataset = load_dataset(data, image_size=args.sizes[0], show_progress=False)
        rows = []
        for backbone in args.backbones:
            rows += rank_backbone(dataset, create_backbone(backbone), RankingConfig(), show_progress=False)
        import pandas as pd

        frame = pd.DataFrame(rows).sort_values("probe_accuracy", ascending=False)
        print(f"\n{name}, {args.per_class} images per class (80/20 train/val), {args.sizes[0]} px")
        print("| backbone | tap | channels | probe val acc | head | LogME | kNN | H-score |")
        print("|---|---|---|---|---|---|---|---|")
        for r in frame.itertuples():
            print(
                f"| {r.backbone} | {r.tap} | {r.channels} | {r.probe_accuracy:.3f} | {r.probe_head} | "
                f"{r.logme:.3f} | {r.knn:.3f} | {r.hscore:.2f} |"
            )
        print("\n| score | Kendall tau | weighted tau |\n|---|---|---|")
        for r in proxy_agreement(frame).itertuples():
            print(f"| {r.score} | {r.kendall_tau:.3f} | {r.weighted_tau:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["throughput", "cache", "scoring", "table"])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[96, 128])
    parser.add_argument("--images", type=int, default=320, help="throughput: images per measurement")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=100, help="table: training images per class")
    args = parser.parse_args(argv)
    {"throughput": throughput, "cache": cache, "scoring": scoring, "table": table}[args.part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
