"""Data quality checks of the profile: class balance, resolution, gray images, duplicates and leakage, and
the problems they add up to (sentences a user can act on)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from autotransfer.data.datasets import Dataset

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

GRAY_SAMPLE = 4096  # images the gray check reads: the share is a sample estimate beyond it


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def gray_share(dataset: Dataset, seed: int) -> float:
    """The share of gray images outside the test split, measured on up to ``GRAY_SAMPLE`` of them (seeded):
    a file in a gray mode, or a colour file whose channels are all equal."""
    rows = np.flatnonzero(dataset.splits != "test")
    if len(rows) > GRAY_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(rows, GRAY_SAMPLE, replace=False))
    gray = np.array([dataset.records[i].get("mode") in GRAY_MODES for i in rows], dtype=bool)
    for start in range(0, len(rows), 2048):
        chunk = np.asarray(dataset.images[rows[start : start + 2048]])
        gray[start : start + len(chunk)] |= (chunk[..., 0] == chunk[..., 1]).all((1, 2)) & (
            chunk[..., 1] == chunk[..., 2]
        ).all((1, 2))
    return float(gray.mean()) if len(gray) else 0.0


def _duplicates(dataset: Dataset) -> tuple[int, int, list[str]]:
    """(extra copies of images filed under one class, groups crossing splits, leak examples); images in
    two classes are label conflicts (data/conflicts.py), counted there and not as plain duplicates."""
    conflicting = {conflict.content_hash for conflict in dataset.conflicts}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(dataset.records):
        groups[record["content_hash"]].append(i)
    repeated = [g for h, g in groups.items() if len(g) > 1 and h not in conflicting]
    extra_copies = sum(len(g) - 1 for g in repeated)
    crossing = [g for g in repeated if len({dataset.splits[i] for i in g}) > 1]
    examples = [" = ".join(str(dataset.paths[i]) for i in g[:2]) for g in crossing[:3]]
    return extra_copies, len(crossing), examples


def data_fields(dataset: Dataset, per_class: list[int], size_reason: str) -> tuple[dict, list[str], list[dict]]:
    """Class balance, resolution and duplicate fields, with leak examples and the skipped files."""
    learning = [r for r, split in zip(dataset.records, dataset.splits) if split != "test"]  # never steered by test
    short_sides = [min(r["width"], r["height"]) for r in learning]
    aspects = [r["width"] / r["height"] for r in learning]
    duplicates, crossing, leak_examples = _duplicates(dataset)
    skipped = [{"path": s.path, "reason": s.reason} for s in dataset.skipped]
    fields = {
        "class_balance": {**_percentiles(per_class), "imbalance_ratio": max(per_class) / max(min(per_class), 1)},
        "resolution": {
            "median_short_side": float(np.median(short_sides)),
            "min_short_side": float(min(short_sides)),
            "max_short_side": float(max(short_sides)),
            "median_aspect": float(np.median(aspects)),
            "widest_aspect": float(max(aspects)),
            "tallest_aspect": float(min(aspects)),
            "profiled_at": dataset.recipe.size,
            "profiled_at_reason": size_reason,
        },
        "exact_duplicates": duplicates,
        "cross_split_duplicates": crossing,
        "label_conflicts": [conflict.to_json() for conflict in dataset.conflicts],
    }
    return fields, leak_examples, skipped


def quality_problems(profile: dict, counts: dict[str, int], leak_examples: list[str], skipped: list[dict]) -> list[str]:
    problems = []
    smallest = min(counts.values())
    if smallest < 5:
        few = [c for c, n in counts.items() if n < 5]
        problems.append(
            f"{len(few)} class(es) have fewer than 5 images ({', '.join(few[:5])}): their accuracy "
            "will be unreliable; add images or merge classes."
        )
    if profile["class_balance"]["imbalance_ratio"] > 10:
        problems.append(
            f"Classes are imbalanced {profile['class_balance']['imbalance_ratio']:.0f}:1; "
            "class weights or more images of the small classes help."
        )
    if profile["label_conflicts"]:
        conflicts = profile["label_conflicts"]
        problems.append(
            f"{len(conflicts)} label conflict(s): the same image (same bytes) in more than one class, e.g. "
            + "; ".join(" = ".join(f"{p} ({c})" for p, c in zip(x["paths"], x["labels"])) for x in conflicts[:3])
            + ". Keep each image in its one class."
        )
    if profile["exact_duplicates"]:
        problems.append(f"{profile['exact_duplicates']} exact duplicate image(s) (same bytes, same class).")
    if profile["cross_split_duplicates"]:
        problems.append(
            f"{profile['cross_split_duplicates']} duplicate(s) cross train/val/test (leakage), e.g. "
            + "; ".join(leak_examples)
        )
    if skipped:
        problems.append(f"{len(skipped)} file(s) skipped (unreadable or not images); see 'skipped'.")
    if profile["resolution"]["median_short_side"] < 32:
        problems.append(
            f"Images are tiny (median short side {profile['resolution']['median_short_side']:.0f} px): "
            "they are upscaled, and fine details cannot be recovered."
        )
    return problems
