"""The linear heads of the cheap stage, measured: seconds for a C grid and the accuracy they reach.

    python -m benchmarks.probes            # mobilenetv2_100 at 64 px, Animal- and Fashion-MNIST, 25 and 250/class

For each dataset and regime, on the features the search probes (the head tap and the best mid-layer
tap by kNN), every head kind fits the same C grid on train, is chosen on val and scored on held-out
test images. With `autotransfer bench` (what `fit` reaches in its budget) it decided `probe.heads` in
autotransfer/search/spaces/default.yaml (benchmarks/results/probes-cpu.md).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from autotransfer.data.datasets import load_dataset
from autotransfer.data.offline_datasets import build
from autotransfer.machine import describe_machine
from autotransfer.models.features import extract_features
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import tune_allocator
from autotransfer.transfer.probes import DEFAULT_C_GRID, ProbeOptions, fit_probe
from autotransfer.transfer.ranking import RankingConfig, rank_backbone

WORK = Path(os.environ.get("BENCH_WORK", tempfile.gettempdir())) / "autotransfer-bench"


def _rows(name: str, per_class: int, backbone_name: str, resolution: int, heads: list[str]) -> list[dict]:
    folder = build(name, WORK / "datasets", per_class=per_class, test_per_class=50)
    train_set = load_dataset(folder / "train", image_size=resolution, show_progress=False)
    test_set = load_dataset(folder / "test", image_size=resolution, show_progress=False)  # every split: test
    backbone = create_backbone(backbone_name)
    scores = rank_backbone(train_set, backbone, RankingConfig(probe=False), show_progress=False)
    mid = max((r for r in scores if r["tap"] != "head"), key=lambda r: r["knn"])["tap"]
    rows = []
    for tap in ("head", mid):
        train_x = np.asarray(extract_features(train_set, backbone, [tap], show_progress=False)[tap])
        test_x = np.asarray(extract_features(test_set, backbone, [tap], show_progress=False)[tap])
        train, val = train_set.indices("train"), train_set.indices("val")
        for head in heads:
            probe = fit_probe(
                train_x[train],
                train_set.labels[train],
                train_x[val],
                train_set.labels[val],
                ProbeOptions(heads=(head,), c_grid=tuple(DEFAULT_C_GRID)),
            )
            test_accuracy = float(probe.model.score(test_x, test_set.labels))
            rows.append(
                {
                    "dataset": f"{name} {per_class}/class",
                    "tap": tap,
                    "n_train": len(train),
                    "dims": train_x.shape[1],
                    "head": head,
                    "seconds": probe.seconds,
                    "C": probe.C,
                    "val": probe.val_accuracy,
                    "test": test_accuracy,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--datasets", nargs="+", default=["animal-mnist", "fashion-mnist"])
    parser.add_argument("--per-class", nargs="+", type=int, default=[25, 250])
    parser.add_argument("--heads", nargs="+", default=["softmax", "svm", "torch"])
    args = parser.parse_args(argv)
    tune_allocator()
    print(describe_machine())
    print(
        f"{args.backbone} at {args.resolution} px; C grid {list(DEFAULT_C_GRID)} per head, chosen on val "
        "(20% of train), scored on 50 held-out test images per class; seconds = the whole grid"
    )
    print("| data | tap | train x dims | head | grid seconds | C | val | test |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        for per_class in args.per_class:
            for r in _rows(name, per_class, args.backbone, args.resolution, args.heads):
                print(
                    f"| {r['dataset']} | {r['tap']} | {r['n_train']} x {r['dims']} | {r['head']} | "
                    f"{r['seconds']:.1f} | {r['C']:g} | {r['val']:.3f} | {r['test']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
