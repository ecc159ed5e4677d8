"""The profiler on the real offline datasets: profiles side by side, time, and stability across seeds.

    python -m benchmarks.profile [--per-class 1000] [--seeds 5]

Each dataset is profiled once with a cold decode cache (includes decoding every image) and again
warm; then with several sampling seeds, to show how stable the similarity is for a 256-image sample.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from autotransfer.data.datasets import load_dataset
from autotransfer.data.offline_datasets import build
from autotransfer.machine import describe_machine
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import tune_allocator
from autotransfer.transfer.profile import profile_dataset
from benchmarks.features import WORK

DATASETS = ("fashion-mnist", "animal-mnist", "mnist", "digits")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    tune_allocator()
    net = create_backbone("mobilenetv2_100", keep_classifier=True)
    rows = []
    for name in DATASETS:
        folder = build(name, WORK / "datasets", per_class=args.per_class)
        start = time.perf_counter()
        dataset = load_dataset(folder, image_size=args.size, show_progress=False)
        decode = time.perf_counter() - start
        runs = []
        for seed in range(args.seeds):
            tic = time.perf_counter()
            runs.append(profile_dataset(dataset, backbone=net, seed=seed, show_progress=False))
            runs[-1].seconds = time.perf_counter() - tic
        first = runs[0]
        similarities = [r.similarity for r in runs]
        rows.append(
            (name, first, decode, np.mean([r.seconds for r in runs]), np.mean(similarities), np.std(similarities))
        )
    print(describe_machine())
    print(
        f"mobilenetv2_100 at {args.size}px, 256-image sample; time = profile with the decode cache warm "
        f"(mean of {args.seeds} seeds); decode = first load of the folder"
    )
    print(
        "| dataset | images | classes | quadrant | similarity (mean ± std over seeds) | s_bn | s_pred "
        "| kNN acc (top features) "
        "| gray | dup. | strategy | early→late group distance | decode (s) | profile (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, p, decode, seconds, mean, std in rows:
        curve = " ".join(f"{g['distance']:.2f}" for g in p.group_distance)
        print(
            f"| {name} | {p.n_images} | {p.n_classes} | {p.quadrant} | {mean:.3f} ± {std:.3f} | "
            f"{p.similarity_parts['bn_statistics']:.2f} | "
            f"{p.similarity_parts.get('imagenet_predictions', float('nan')):.2f} | "
            f"{p.separability['knn_accuracy']:.2f} | {p.grayscale_share:.0%} | {p.exact_duplicates} | "
            f"{p.recommended_strategy} | {curve} | {decode:.1f} | {seconds:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
