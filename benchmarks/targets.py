"""The bench targets of issues 16 and 18, checked from `autotransfer bench` result CSVs.

    python -m benchmarks.targets benchmarks/results/real-cpu/leaderboard.csv [more CSVs ...] [--seeds 0,1]

For each suite CSV (the bench's ``leaderboard.csv``) it prints, per dataset x regime: `fit`'s test
accuracy (mean over the seeds that ran), the best of the recipe's fixed strategies, the 128-px codes
logistic-regression baseline, the best peer, and the checks:

- fit - best fixed strategy, in points (issue 16: >= +3 on the imbalanced set);
- fit - codes128_logreg, in points (issue 16: >= -1 on every dataset);
- the cells that ended later than budget + 5% (issue 16: none), for every contender but the grid
  (it probes without a budget, by design);
- mean rank and mean normalised regret of `fit` and of every peer (issue 18: fit better than each).

The test sets of the bench are balanced per class (``test_per_class``), so test accuracy there is also
balanced accuracy. Nothing is hard-coded: a contender missing from a CSV shows as "—".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from autotransfer.bench.contenders import FIXED

RECIPE = [name for name in FIXED if name != "codes128_logreg"]  # the recipe's fixed strategies
BASELINE = "codes128_logreg"
PEERS = ["autogluon", "fastai", "timm-script"]


def _mean(frame: pd.DataFrame, contender: str) -> float:
    values = frame.loc[frame["contender"] == contender, "test_accuracy"].dropna()
    return float(values.mean()) if len(values) else float("nan")


def _points(value: float) -> str:
    return "—" if pd.isna(value) else f"{100 * value:+.1f}"


def _accuracy(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3f}"


def dataset_rows(frame: pd.DataFrame) -> list[str]:
    """One markdown row per dataset x regime."""
    lines = []
    for group, part in frame.groupby("group", sort=False):
        fit = _mean(part, "fit")
        fixed = {name: _mean(part, name) for name in RECIPE}
        fixed = {k: v for k, v in fixed.items() if not pd.isna(v)}
        best_fixed = max(fixed, key=fixed.get) if fixed else None
        peers = {name: _mean(part, name) for name in PEERS}
        peers = {k: v for k, v in peers.items() if not pd.isna(v)}
        best_peer = max(peers, key=peers.get) if peers else None
        baseline = _mean(part, BASELINE)
        seeds = part.loc[part["contender"] == "fit", "test_accuracy"].notna().sum()
        fixed_text = "—" if best_fixed is None else f"{best_fixed} {fixed[best_fixed]:.3f}"
        peer_text = "—" if best_peer is None else f"{best_peer} {peers[best_peer]:.3f}"
        lines.append(
            f"| {group} | {seeds} | {_accuracy(fit)} | {fixed_text} | "
            f"{_points(fit - fixed[best_fixed]) if best_fixed else '—'} | {_accuracy(baseline)} | "
            f"{_points(fit - baseline)} | {peer_text} | {_points(fit - peers[best_peer]) if best_peer else '—'} |"
        )
    return lines


def standing(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean rank and mean regret per contender over the cells it ran, best mean rank first."""
    ran = frame[frame["test_accuracy"].notna()]
    table = ran.groupby("contender").agg(
        mean_rank=("rank", "mean"), mean_regret=("regret", "mean"), cells=("rank", "count")
    )
    return table.sort_values("mean_rank")


def report(csv: Path, seeds: list[int] | None = None) -> None:
    frame = pd.read_csv(csv)
    if seeds is not None:  # compare on the seeds every contender ran (ranks are per dataset and seed)
        frame = frame[frame["seed"].isin(seeds)]
    print(f"## {csv}" + (f" (seeds {', '.join(map(str, seeds))})" if seeds is not None else ""))
    print()
    print(
        "| dataset | fit seeds | fit | best fixed strategy | fit − fixed (pts) | codes128 logreg "
        "| fit − codes128 (pts) | best peer | fit − peer (pts) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(dataset_rows(frame)))
    print()
    table = standing(frame)
    print("| contender | cells | mean rank | mean regret |")
    print("|---|---|---|---|")
    for name, row in table.iterrows():
        regret = "—" if pd.isna(row["mean_regret"]) else f"{row['mean_regret']:+.3f}"
        print(f"| {name} | {row['cells']:.0f} | {row['mean_rank']:.2f} | {regret} |")
    print()
    budgeted = frame[frame["contender"] != "grid"]
    over = budgeted[budgeted["within_budget"] == False]  # noqa: E712 (bools and NaN)
    ran = budgeted["test_accuracy"].notna().sum()
    print(f"cells over budget + 5%: {len(over)} of {ran}")
    for row in over.itertuples():
        print(f"- {row.group} seed {row.seed}, {row.contender}: {row.seconds:.0f} s")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csvs", nargs="+", type=Path, help="leaderboard.csv files written by autotransfer bench")
    parser.add_argument("--seeds", nargs="+", help="only these seeds, e.g. 0 1 or 0,1 as `bench --seeds` takes them "
                        "(default: every seed in the CSV)")  # fmt: skip
    args = parser.parse_args(argv)
    seeds = None
    if args.seeds:
        try:
            seeds = [int(seed) for text in args.seeds for seed in text.split(",") if seed]
        except ValueError:
            parser.error(f"--seeds takes whole numbers such as 0 1 or 0,1, got {' '.join(args.seeds)!r}")
    for csv in args.csvs:
        report(csv, seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
