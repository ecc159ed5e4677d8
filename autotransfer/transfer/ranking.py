"""The cheap stage: every (backbone, tap) candidate scored by zero-cost proxies and a linear probe.

Zero-cost scores and probes are computed on the training split (probes are selected on the
validation split); the test split is never touched. The resulting table is the search's input,
and ``proxy_agreement`` says how far each zero-cost score can be trusted on this dataset.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autotransfer.budget import Deadline
from autotransfer.data.datasets import Dataset
from autotransfer.models.features import extract_features, features_cached, recorded_forward_seconds
from autotransfer.models.zoo import Backbone, create_backbone
from autotransfer.transfer.feature_rows import FeatureRows, tap_rows
from autotransfer.transfer.probes import ProbeOptions, fit_probe
from autotransfer.transfer.transferability import SCORES, all_scores, rank_agreement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankingConfig:
    """What the cheap stage computes. ``max_score_samples`` caps the images the proxies see.

    ``probe_top`` (0: every tap) probes only the taps with the best kNN score, the proxy that
    tracked probe accuracy best on the offline datasets (benchmarks/results/features-cpu.md): a
    probe on a 1280-d tap of 2,000 images costs tens of seconds on 2 cores, the score a fraction.
    ``also_probe``: taps probed whatever their kNN rank (names a backbone lacks are ignored).
    ``deadline``: no tap's probe, class weighting or (head, C) starts after it has passed, once one
    is fit (the search's budget under a load that came up after the pair's estimate).
    """

    pooling: str = "avg"
    heads: tuple[str, ...] = ("softmax", "svm")
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    probe: bool = True
    probe_top: int = 0
    also_probe: tuple[str, ...] = ()
    deadline: Deadline | None = None
    max_score_samples: int = 3000
    batch_size: int = 64
    bf16: bool = True
    seed: int = 0
    metric: str = "accuracy"  # what picks each tap's (head, C) (autotransfer.transfer.metrics.METRICS)
    class_weights: tuple[str | None, ...] = (None,)  # tried in turn; (None, "balanced") on imbalanced data
    cv_folds: int = 0  # > 1: choose by stratified k-fold CV on train+val (small data), else on val


def _score_rows(train: np.ndarray, cap: int, seed: int) -> np.ndarray:
    if len(train) <= cap:
        return train
    return np.sort(np.random.default_rng(seed).choice(train, size=cap, replace=False))


def rank_backbone(
    dataset: Dataset, backbone: Backbone, config: RankingConfig = RankingConfig(), show_progress: bool = True
) -> list[dict]:
    """One row per tap of ``backbone``: zero-cost scores, probe accuracy, and what each cost."""
    cached = features_cached(dataset, backbone, pooling=config.pooling, bf16=config.bf16)
    # a cache read times no forward pass: the one that filled the cache says what it costs
    recorded = recorded_forward_seconds(dataset, backbone, bf16=config.bf16) if cached else None
    start = time.perf_counter()
    features = extract_features(
        dataset,
        backbone,
        pooling=config.pooling,
        batch_size=config.batch_size,
        bf16=config.bf16,
        show_progress=show_progress,
    )
    extract_seconds = time.perf_counter() - start
    scored = _score_rows(dataset.indices("train"), config.max_score_samples, config.seed)
    # The extraction ended past the deadline (a loaded machine): no zero-cost scores, and only the
    # first tap asked for by name (the head) is probed, so the run still gets its one candidate.
    late = _past(config.deadline)
    rows = []
    for tap in backbone.taps:
        row = {
            "backbone": backbone.name,
            "tap": tap.name,
            "channels": tap.channels,
            "extract_seconds": extract_seconds / len(backbone.taps),
            "extract_cached": cached,  # read from the feature cache, not computed
            "extract_recorded": recorded,  # seconds of the forward pass that filled the cache (None: unknown)
        }
        tic = time.perf_counter()
        if late:
            row.update(dict.fromkeys(("logme", "knn", "hscore"), float("nan")))
        else:
            row.update(all_scores(np.asarray(features[tap.name])[scored], dataset.labels[scored]))
        row["score_seconds"] = time.perf_counter() - tic
        rows.append(row)
    if config.probe:
        by_knn = [] if late else sorted(rows, key=lambda r: -r["knn"])
        chosen = by_knn[: config.probe_top or len(rows)]
        chosen += [r for r in rows if r["tap"] in config.also_probe and r not in chosen]
        if late:
            chosen = sorted(chosen, key=lambda r: config.also_probe.index(r["tap"]))[:1] or rows[-1:]
        for number, row in enumerate(chosen):
            if number and _past(config.deadline):
                log.info("time budget: %d of %d taps of %s probed", number, len(chosen), backbone.name)
                break
            row.update(_probe(FeatureRows.of(features[row["tap"]]), dataset, config))
    return rows


def _past(deadline: Deadline | None) -> bool:
    return deadline is not None and deadline.left() <= 0


def _probe(values: FeatureRows, dataset: Dataset, config: RankingConfig) -> dict:
    """The best linear probe of ``values`` (N x C, dataset order; only the rows a fit needs are read) over
    heads, C and class weightings."""
    train, val = dataset.indices("train"), dataset.indices("val")
    probes = []
    for weight in config.class_weights:
        if probes and _past(config.deadline):
            break
        probes.append(
            fit_probe(
                values.take(train),
                dataset.labels[train],
                values.take(val),
                dataset.labels[val],
                ProbeOptions(
                    heads=tuple(config.heads),
                    c_grid=tuple(config.c_grid),
                    seed=config.seed,
                    class_weight=weight,
                    metric=config.metric,
                    cv_folds=config.cv_folds,
                ),
                deadline=config.deadline,
            )
        )
    probe = max(probes, key=lambda p: p.val_score)  # ties: the earlier (unweighted) one
    return {
        "probe_accuracy": probe.val_accuracy,
        "probe_score": probe.val_score,
        "probe_head": probe.head,
        "probe_C": probe.C,
        "probe_class_weight": probe.class_weight,
        "probe_seconds": sum(p.seconds for p in probes),
        "refit_seconds": probe.refit_seconds,
    }


def probe_combined(dataset: Dataset, backbone: Backbone, taps: list[str], config: RankingConfig) -> dict:
    """A row like ``rank_backbone``'s for ``taps`` probed together: their pooled features side by side
    (tap ``"a+b+c"``, ``Backbone.tap_parts``), so the linear head weighs every depth at once
    (multi-layer features, Evci et al., *Head2Toe*, ICML 2022). The parts' features come from the
    cache (no extraction when they were probed); no zero-cost scores (NaN): nothing is ranked by them."""
    name = backbone.combined_tap(taps)
    tic = time.perf_counter()
    values = tap_rows(dataset, backbone, name, pooling=config.pooling, batch_size=config.batch_size, bf16=config.bf16)
    row = {"backbone": backbone.name, "tap": name, "channels": values.shape[1],
           "extract_seconds": time.perf_counter() - tic, "score_seconds": 0.0}  # fmt: skip
    row.update(dict.fromkeys(SCORES, float("nan")))
    row.update(_probe(values, dataset, config))
    return row


def rank_candidates(
    dataset: Dataset, backbones: list[str], config: RankingConfig = RankingConfig(), show_progress: bool = True
) -> pd.DataFrame:
    """The leaderboard of the cheap stage over every tap of every backbone, best LogME first."""
    rows = []
    for name in backbones:
        rows += rank_backbone(dataset, create_backbone(name), config, show_progress)
    table = pd.DataFrame(rows)
    return table.sort_values("logme", ascending=False, ignore_index=True)


def proxy_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Kendall tau and weighted tau of each zero-cost score against the probe accuracy."""
    rows = [{"score": s, **rank_agreement(table[s].tolist(), table["probe_accuracy"].tolist())} for s in SCORES]
    return pd.DataFrame(rows)
