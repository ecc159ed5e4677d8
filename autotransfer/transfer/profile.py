"""Dataset profiler: size, quality, per-layer domain distance to ImageNet, and the strategy it implies.

The parts: the BN-statistics distance (models/bn_statistics.py), its calibration into a similarity
(transfer/calibration.py), the data quality checks (data/quality.py) and the resolution both ``profile``
and ``fit`` decode at (data/resolution.py). This module puts them together into a DatasetProfile: the
quadrant of the recipe's table and the prior the search starts from.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np

from autotransfer.data.datasets import Dataset, load_dataset
from autotransfer.data.quality import data_fields, gray_share, quality_problems
from autotransfer.data.resolution import choose_resolution
from autotransfer.errors import written_by_another_version
from autotransfer.models.bn_statistics import group_distances, mean_distance, measure_sample
from autotransfer.models.zoo import Backbone, create_backbone
from autotransfer.options import DEFAULT_PROFILE_BACKBONE
from autotransfer.transfer.calibration import reference_distances, reference_similarities, similarity_of
from autotransfer.transfer.metrics import majority_rate
from autotransfer.transfer.strategies import QUADRANT_STRATEGIES, STRATEGIES
from autotransfer.transfer.transferability import knn_accuracy, logme

log = logging.getLogger(__name__)


DEFAULT_BACKBONE = DEFAULT_PROFILE_BACKBONE


@dataclass(frozen=True)
class Thresholds:
    """Where the strategy matrix is cut. See docs/profiler.md for why these defaults."""

    large_images_per_class: int = 200  # median images per class at or above this: "large" (docs/profiler.md)
    similar_at: float = 0.75  # similarity at or above this: "similar" (between clip art 0.5 and mild shifts 0.9+)


@dataclass
class DatasetProfile:
    """Everything the profiler measured, and the strategy prior it derives (JSON-ready)."""

    n_images: int
    n_classes: int
    images_per_class: dict[str, int]
    class_balance: dict[str, float]
    resolution: dict[str, float]
    grayscale_share: float
    exact_duplicates: int
    cross_split_duplicates: int
    skipped: list[dict]
    backbone: str
    image_size: int
    sample_size: int
    layer_distance: list[dict]
    group_distance: list[dict]
    similarity: float
    similarity_parts: dict[str, float]
    references: dict[str, float | None]
    separability: dict[str, float]
    size_class: str
    domain: str
    quadrant: str
    recommended_strategy: str
    rationale: str
    prior: Prior
    thresholds: dict
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reference_similarity: dict[str, float] = field(default_factory=dict)  # each reference on the same scale
    nearest_reference: str | None = None  # the reference whose similarity is closest to the dataset's
    label_conflicts: list[dict] = field(default_factory=list)  # same bytes in two classes: paths and labels

    def to_json(self) -> dict:
        return _finite(asdict(self))


def _finite(value):
    """JSON has no NaN: replace non-finite floats by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _tap_group(backbone: Backbone, module: str) -> int:
    """The deepest depth group holding parameters of ``module`` (a tap's module) or below it."""
    groups = [
        g.index for g in backbone.depth_groups if any(p == module or p.startswith(module + ".") for p in g.params)
    ]
    return max(groups, default=-1)


def _generic_taps(backbone: Backbone, groups: list[dict]) -> list[str]:
    """The (up to two) deepest taps in the range where the distance is still below its midpoint."""
    candidates = [t for t in backbone.taps if t.name != "head"] or backbone.taps
    if not groups:
        return [candidates[-1].name]
    low, high = min(g["distance"] for g in groups), max(g["distance"] for g in groups)
    generic_until = max((g["group"] for g in groups if g["distance"] <= (low + high) / 2), default=0)
    taps = [t.name for t in candidates if _tap_group(backbone, t.module) <= generic_until]
    return (taps or [candidates[len(candidates) // 2].name])[-2:]


@dataclass(frozen=True, kw_only=True)
class Prior:
    """Where the search starts (``profile.json``'s ``prior``): the quadrant's strategies in order, the taps
    and freeze depths to try first, and the (low, high) of the LRs and layer decay the seeds sit in (None: the
    search's own). search/recipe.py seeds the first trials and narrows the ranges with it."""

    strategies: tuple[str, ...] = ()
    taps: tuple[str, ...] = ()
    freeze_groups: tuple[int, ...] = ()
    head_lr: tuple[float, float] | None = None
    backbone_lr_ratio: tuple[float, float] | None = None
    layer_decay: tuple[float, float] | None = None

    @classmethod
    def from_json(cls, document: dict) -> Prior:
        """The prior of ``profile.json`` (``DatasetProfile.to_json``); another version's fields are one clear error."""
        unknown = sorted(set(document) - {f.name for f in dataclass_fields(cls)})
        if unknown:
            raise written_by_another_version("profile prior (profile.json)", unknown)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in document.items()})


def strategy_prior(quadrant: str, backbone: Backbone, groups: list[dict]) -> Prior:
    """Where the search starts: strategies in order, taps, freeze depths and LR ranges to try first."""
    n_groups = len(backbone.depth_groups)
    large, similar = quadrant.startswith("large"), quadrant.endswith("similar")
    mid = _generic_taps(backbone, groups)
    return Prior(
        strategies=tuple(QUADRANT_STRATEGIES[quadrant]),
        taps=("head", *mid) if similar else (*mid, "head"),
        freeze_groups=((0, n_groups // 2) if large else (n_groups, n_groups - 2))
        if similar
        else ((0, 1) if large else (n_groups // 2, n_groups)),
        head_lr=(1e-3, 1e-2),
        backbone_lr_ratio=((0.01, 0.1) if similar else (0.1, 1.0)) if large else (0.001, 0.05),
        layer_decay=(0.7, 0.9) if similar else (0.85, 1.0),
    )


def _load_for_profile(
    data: str | Path | Dataset, image_size: int | None, seed: int, show_progress: bool
) -> tuple[Dataset, str]:
    """The dataset to profile and why it is at its size (``data`` may already be a Dataset)."""
    if isinstance(data, Dataset):
        return data, f"{data.recipe.size}px: the size the dataset was decoded at"
    size_reason = f"{image_size}px: asked for"
    if image_size is None:
        image_size, size_reason = choose_resolution(data)
    return load_dataset(data, image_size=image_size, seed=seed, show_progress=show_progress), size_reason


def _draw_sample(dataset: Dataset, sample_size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of the non-test images (the test split is never looked at)."""
    selectable = np.flatnonzero(dataset.splits != "test")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(selectable, size=min(sample_size, len(selectable)), replace=False))


def _separability(pooled: np.ndarray, sample_labels: np.ndarray, n_sample: int) -> dict[str, float]:
    """kNN accuracy, LogME and the majority-class rate of the sample's pooled features."""
    return {
        "knn_accuracy": knn_accuracy(pooled, sample_labels) if n_sample > 2 else float("nan"),
        "logme": logme(pooled, sample_labels),
        "chance": majority_rate(sample_labels),  # a constant guess of the sample's majority class
    }


def _rationale(
    per_class: list[int], similarity: float, large: bool, similar: bool, thresholds: Thresholds, strategy: str
) -> str:
    """One line on why the data falls in its quadrant and which strategy that gives."""
    return (
        f"median {np.median(per_class):.0f} images per class "
        f"({'>=' if large else '<'} {thresholds.large_images_per_class}: {'large' if large else 'small'}); "
        f"similarity {similarity:.2f} ({'>=' if similar else '<'} {thresholds.similar_at}: "
        f"{'similar' if similar else 'different'}) -> {STRATEGIES[strategy].text}"
    )


def profile_dataset(  # noqa: PLR0913 (the public `profile_dataset`: every option keyword-only)
    data: str | Path | Dataset,
    *,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    image_size: int | None = None,
    sample_size: int = 256,
    seed: int = 0,
    thresholds: Thresholds = Thresholds(),
    weights: str | Path | None = None,
    references: dict[str, float] | None = None,
    show_progress: bool = True,
) -> DatasetProfile:
    """Measure ``data`` and place it in the strategy matrix. Samples ``sample_size`` images (seeded).

    ``image_size`` None: profile_resolution(data) (a Dataset is measured at the size it was decoded at).
    ``references`` default to the cached measurement for this backbone and size (reference_distances).
    """
    start = time.perf_counter()
    dataset, size_reason = _load_for_profile(data, image_size, seed, show_progress)
    net = (
        backbone if isinstance(backbone, Backbone) else create_backbone(backbone, weights=weights, keep_classifier=True)
    )
    test = dataset.counts("test")
    counts = {c: n - test[c] for c, n in dataset.counts().items()}  # the test split never steers the search
    per_class = list(counts.values())
    sample = _draw_sample(dataset, sample_size, seed)
    images = np.asarray(dataset.images[sample])
    measure = measure_sample(net, images)
    layers, pooled = measure.layers, measure.pooled
    references = references or reference_distances(net, dataset.recipe.size)
    overall = mean_distance(layers)
    similarity, parts = similarity_of(measure, references)
    groups = group_distances(net, layers)
    ladder = reference_similarities(references)
    nearest = min(ladder, key=lambda name: abs(ladder[name] - similarity)) if ladder else None
    separability = _separability(pooled, dataset.labels[sample], len(sample))
    large = float(np.median(per_class)) >= thresholds.large_images_per_class
    similar = similarity >= thresholds.similar_at
    quadrant = f"{'large' if large else 'small'}-{'similar' if similar else 'different'}"
    strategy = QUADRANT_STRATEGIES[quadrant][0]
    fields, leak_examples, skipped = data_fields(dataset, per_class, size_reason)
    return DatasetProfile(
        n_images=sum(per_class),
        n_classes=len(dataset.classes),
        images_per_class=counts,
        grayscale_share=gray_share(dataset, seed),
        skipped=skipped,
        backbone=net.name,
        image_size=dataset.recipe.size,
        sample_size=len(sample),
        layer_distance=layers,
        group_distance=groups,
        similarity=similarity,
        similarity_parts=parts,
        references={**references, "dataset": overall, "entropy_dataset": measure.entropy},
        reference_similarity=ladder,
        nearest_reference=nearest,
        separability=separability,
        size_class="large" if large else "small",
        domain="similar" if similar else "different",
        quadrant=quadrant,
        recommended_strategy=strategy,
        rationale=_rationale(per_class, similarity, large, similar, thresholds, strategy),
        prior=strategy_prior(quadrant, net, groups),
        thresholds=asdict(thresholds),
        problems=quality_problems(fields, counts, leak_examples, skipped),
        seconds=time.perf_counter() - start,
        **fields,
    )
