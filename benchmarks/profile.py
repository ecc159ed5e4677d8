"""The profiler on the real offline datasets: profiles side by side, time, and stability across seeds.

    python -m benchmarks.profile [--per-class 1000] [--seeds 5]
    python -m benchmarks.profile validate [--suites cpu-small real-cpu] [--results benchmarks/results]
    python -m benchmarks.profile references [--sizes 64 128] [--sample 96]

Each dataset is profiled once with a cold decode cache (includes decoding every image) and again
warm; then with several sampling seeds, to show how stable the similarity is for a 256-image sample.

``validate`` profiles the training folder of every dataset x regime of the suites (seed 0, the
bench's own folders) at the resolution profile_resolution picks, and tabulates similarity,
quadrant and the first strategy of the prior next to the fixed strategy that won that cell in a
bench results CSV (``bench-<suite>.csv`` under --results), when there is one: does the prior start
where the benchmark says it should?

``references`` prints the similarity scale's references and real datasets (96-image samples) on
the current scale and on the first version's photos-to-noise line, per size (docs/profiler.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from autotransfer.data.datasets import load_dataset
from autotransfer.data.offline_datasets import build
from autotransfer.machine import describe_machine
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import tune_allocator
from autotransfer.transfer.profile import profile_dataset
from benchmarks.features import WORK

DATASETS = ("fashion-mnist", "animal-mnist", "mnist", "digits")
# the bench's fixed-strategy contenders, by the strategy of autotransfer.transfer.strategies they run
FIXED = {
    "codes_svm": "linear_probe",
    "codes_softmax": "linear_probe",
    "mid_layer": "mid_layer_probe",
    "finetune_all": "finetune_all",
    "train_all": "train_all",
    "one_lr": "finetune_all",
}


def winners(csv: Path) -> dict[tuple[str, int], tuple[str, float]]:
    """(dataset, per_class) -> (fixed contender with the best mean test accuracy over seeds, that accuracy)."""
    import pandas as pd

    table = pd.read_csv(csv)
    table = table[table["contender"].isin(FIXED) & table["test_accuracy"].notna()]
    means = table.groupby(["dataset", "per_class", "contender"])["test_accuracy"].mean().reset_index()
    best = means.loc[means.groupby(["dataset", "per_class"])["test_accuracy"].idxmax()]
    return {(r.dataset, int(r.per_class)): (r.contender, float(r.test_accuracy)) for r in best.itertuples()}


def validate(argv: list[str]) -> int:
    from autotransfer.bench.data import split_folders
    from autotransfer.bench.suite import load_suite
    from autotransfer.transfer.profile import choose_resolution

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile validate")
    parser.add_argument("--suites", nargs="+", default=["cpu-small", "real-cpu"])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--sample", type=int, default=256)
    args = parser.parse_args(argv)
    tune_allocator()
    net = create_backbone("mobilenetv2_100", keep_classifier=True)
    print(describe_machine())
    print(f"mobilenetv2_100, {args.sample}-image sample of each training folder (seed 0), at profile_resolution")
    print(
        "| suite | dataset | per class | images | imbalance | px | similarity | s_bn | s_pred | nearest reference "
        "| kNN / chance | quadrant | prior starts with | winning fixed strategy (test acc.) | agrees |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.suites:
        suite = load_suite(name)
        csv = args.results / f"bench-{suite.name}.csv"
        won = winners(csv) if csv.is_file() else {}
        for spec in suite.datasets:
            for per_class in spec.per_class:
                train, _ = split_folders(spec, per_class, 0, WORK / "datasets")
                size, _ = choose_resolution(train)
                dataset = load_dataset(train, image_size=size, show_progress=False)
                p = profile_dataset(dataset, backbone=net, sample_size=args.sample, show_progress=False)
                winner = won.get((spec.name, per_class))
                verdict = "" if winner is None else ("yes" if FIXED[winner[0]] == p.recommended_strategy else "no")
                print(
                    f"| {suite.name} | {spec.name} | {per_class} | {p.n_images} | "
                    f"{p.class_balance['imbalance_ratio']:.0f}:1 | {p.image_size} | {p.similarity:.2f} | "
                    f"{p.similarity_parts['bn_statistics']:.2f} | "
                    f"{p.similarity_parts.get('imagenet_predictions', float('nan')):.2f} | {p.nearest_reference} | "
                    f"{p.separability['knn_accuracy']:.2f} / {p.separability['chance']:.2f} | {p.quadrant} | "
                    f"{p.recommended_strategy} | "
                    + ("—" if winner is None else f"{winner[0]} → {FIXED[winner[0]]} ({winner[1]:.3f})")
                    + f" | {verdict} |",
                    flush=True,
                )
    return 0


def references(argv: list[str]) -> int:
    from autotransfer.transfer.profile import (
        _mean_distance,
        _similarity,
        measure_sample,
        reference_distances,
        reference_similarities,
    )

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile references")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--sample", type=int, default=96)
    args = parser.parse_args(argv)
    tune_allocator()
    net = create_backbone("mobilenetv2_100", keep_classifier=True)
    rng = np.random.default_rng(0)
    print(describe_machine())
    print("| size | sample | D | H | similarity | first version (photos-to-noise line) |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        refs = reference_distances(net, size)
        line = {k: v for k, v in refs.items() if "clipart" not in k}  # without the middle anchor
        rows = [(f"reference {k}", refs[k], refs.get(f"entropy_{k}")) for k in reference_similarities(refs)]
        for name in ("openclipart", "openclipart-gray", "fashion-mnist", "animal-mnist", "digits", "mnist"):
            dataset = load_dataset(build(name, WORK / "datasets", per_class=10), image_size=size, show_progress=False)
            chosen = np.sort(rng.choice(len(dataset), size=min(args.sample, len(dataset)), replace=False))
            measured = measure_sample(net, np.asarray(dataset.images[chosen]))
            rows.append((name, _mean_distance(measured.layers), measured.entropy))
        for name, distance, entropy in rows:
            print(
                f"| {size} | {name} | {distance:.3f} | {entropy:.2f} | {_similarity(distance, entropy, refs)[0]:.2f} "
                f"| {_similarity(distance, entropy, line)[0]:.2f} |",
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["validate"]:
        return validate(argv[1:])
    if argv[:1] == ["references"]:
        return references(argv[1:])
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
