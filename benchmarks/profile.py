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
    # every layer at the head's LR (backbone_lr_ratio 1.0): the table's train_all ("tunes_backbone_lr"
    # False, "the backbone trains at the head's LR"), though the contender runs it through finetune_all's
    # code path; issue 17's first table (2026-11-30) counted it as finetune_all: 5 of 9 cells within 2 points
    "one_lr": "train_all",
}


def fixed_scores(csv: Path) -> dict[tuple[str, int], dict[str, float]]:
    """(dataset, per_class) -> {strategy: best mean test accuracy over seeds of the fixed contenders running it}."""
    import pandas as pd

    table = pd.read_csv(csv)
    table = table[table["contender"].isin(FIXED) & table["test_accuracy"].notna()]
    table = table.assign(strategy=table["contender"].map(FIXED))
    means = table.groupby(["dataset", "per_class", "strategy", "contender"])["test_accuracy"].mean()
    best = means.groupby(["dataset", "per_class", "strategy"]).max()
    scores: dict[tuple[str, int], dict[str, float]] = {}
    for (dataset, per_class, strategy), accuracy in best.items():
        scores.setdefault((dataset, int(per_class)), {})[strategy] = float(accuracy)
    return scores


def tap_scores(train: Path, test: Path, net, size: int) -> dict[str, float]:
    """Test accuracy of a linear probe (torch head, C chosen on the val split) on every tap of ``net``.

    Features are pooled at ``size`` px like the search's probes; the probe is the one `fit` uses.
    """
    from autotransfer.models.features import extract_features
    from autotransfer.transfer.probes import DEFAULT_C_GRID, ProbeOptions, fit_probe

    train_set = load_dataset(train, image_size=size, show_progress=False)
    test_set = load_dataset(test, image_size=size, show_progress=False)
    taps = [t.name for t in net.taps]
    train_x = extract_features(train_set, net, taps, show_progress=False)
    test_x = extract_features(test_set, net, taps, show_progress=False)
    fit_idx, val_idx = train_set.indices("train"), train_set.indices("val")
    scores = {}
    for tap in taps:
        x = np.asarray(train_x[tap])
        probe = fit_probe(
            x[fit_idx],
            train_set.labels[fit_idx],
            x[val_idx],
            train_set.labels[val_idx],
            ProbeOptions(heads=("torch",), c_grid=tuple(DEFAULT_C_GRID), class_weight="balanced"),
        )
        scores[tap] = float(probe.model.score(np.asarray(test_x[tap]), test_set.labels))
    return scores


def validate(argv: list[str]) -> int:
    """Issue 17's table: is the prior's first strategy within 2 points of the best fixed strategy, and is
    the deepest tap the profile calls generic within one tap of the best probe tap?"""
    from autotransfer.bench.data import split_folders
    from autotransfer.bench.suite import load_suite
    from autotransfer.data.resolution import choose_resolution

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile validate")
    parser.add_argument("--suites", nargs="+", default=["cpu-small", "real-cpu"])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--sample", type=int, default=256)
    args = parser.parse_args(argv)
    tune_allocator()
    net = create_backbone("mobilenetv2_100", keep_classifier=True)
    print(describe_machine())
    print(
        f"mobilenetv2_100, {args.sample}-image sample of each training folder (seed 0), at profile_resolution. "
        "Strategy: test accuracy of the fixed bench contenders (mean over seeds, best contender per strategy); "
        "gap = best fixed strategy - the prior's first strategy. Taps: a torch linear probe (balanced class "
        "weights, C on val) on every tap, test accuracy; distance = taps between the deepest tap the profile "
        "calls generic and the best one."
    )
    print(
        "| suite | dataset | per class | images | imbalance | px | similarity | nearest reference | kNN / chance "
        "| quadrant | prior starts with (test acc.) | best fixed strategy (test acc.) | gap | within 2 pts "
        "| deepest generic tap | best probe tap (test acc.) | tap distance |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    names = [t.name for t in net.taps]
    strategy_hits, tap_hits = [], []
    for name in args.suites:
        suite = load_suite(name)
        csv = args.results / f"bench-{suite.name}.csv"
        scores = fixed_scores(csv) if csv.is_file() else {}
        for spec in suite.datasets:
            for per_class in spec.per_class:
                train, test = split_folders(spec, per_class, 0, WORK / "datasets")
                size, _ = choose_resolution(train)
                dataset = load_dataset(train, image_size=size, show_progress=False)
                p = profile_dataset(dataset, backbone=net, sample_size=args.sample, show_progress=False)
                first = p.recommended_strategy
                cell = scores.get((spec.name, per_class), {})
                if cell and first in cell:
                    best = max(cell, key=cell.get)
                    gap = cell[best] - cell[first]
                    strategy_hits.append(gap <= 0.02)
                    strategy = (
                        f"{first} ({cell[first]:.3f}) | {best} ({cell[best]:.3f}) | {gap:+.3f} | "
                        f"{'yes' if gap <= 0.02 else 'no'}"
                    )
                else:
                    strategy = f"{first} | — | | "
                generic = [t for t in p.prior.taps if t != "head"][-1]
                taps = tap_scores(train, test, net, size)
                best_tap = max(taps, key=taps.get)
                distance = abs(names.index(generic) - names.index(best_tap))
                tap_hits.append(distance <= 1)
                print(
                    f"| {suite.name} | {spec.name} | {per_class} | {p.n_images} | "
                    f"{p.class_balance['imbalance_ratio']:.0f}:1 | {p.image_size} | {p.similarity:.2f} | "
                    f"{p.nearest_reference} | "
                    f"{p.separability['knn_accuracy']:.2f} / {p.separability['chance']:.2f} | {p.quadrant} | "
                    f"{strategy} | {generic} | {best_tap} ({taps[best_tap]:.3f}) | {distance} |",
                    flush=True,
                )
    print()
    print(
        f"prior's first strategy within 2 points of the best fixed strategy: {sum(strategy_hits)}/{len(strategy_hits)}"
        f" cells; deepest generic tap within one tap of the best probe tap: {sum(tap_hits)}/{len(tap_hits)} cells"
        f" (targets: 75% each, issue 17)"
    )
    return 0


def references(argv: list[str]) -> int:
    from autotransfer.models.bn_statistics import mean_distance, measure_sample
    from autotransfer.transfer.calibration import reference_distances, reference_similarities, similarity_from

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
            rows.append((name, mean_distance(measured.layers), measured.entropy))
        for name, distance, entropy in rows:
            print(
                f"| {size} | {name} | {distance:.3f} | {entropy:.2f} "
                f"| {similarity_from(distance, entropy, refs)[0]:.2f} "
                f"| {similarity_from(distance, entropy, line)[0]:.2f} |",
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
