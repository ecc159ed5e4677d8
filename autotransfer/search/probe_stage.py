"""The cheap stage: every (backbone, resolution) of the space has its features extracted once
(cached) and its taps probed by linear heads; each (backbone, resolution, tap) becomes a trial of the
``probes`` study. Smallest images first, each pair only when its estimated cost fits the budget.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import optuna
from optuna.trial import TrialState

from autotransfer.budget import format_duration
from autotransfer.errors import AutoTransferError
from autotransfer.search import planner
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.transfer.ranking import RankingConfig, rank_backbone
from autotransfer.transfer.strategies import STRATEGIES, probe_strategy

log = logging.getLogger(__name__)


def _probed_pairs(study: optuna.Study) -> set[str]:
    """The (backbone, resolution) pairs that already have a finished probe trial."""
    return {
        Candidate.parse(t.user_attrs["candidate"]).pair
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "candidate" in t.user_attrs
    }


def _measured_extract_seconds(study: optuna.Study, pair: str) -> float | None:
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("pair") == pair and "extract_seconds_pair" in trial.user_attrs:
            return trial.user_attrs["extract_seconds_pair"]
    return None


def _record_probe_rows(study: optuna.Study, context: RunContext, name: str, resolution: int, rows: list[dict]) -> None:
    pair = f"{name}@{resolution}"
    for row in rows:
        strategy = probe_strategy(row["tap"])
        if strategy not in context.settings.space.strategies or "probe_accuracy" not in row:  # not among the top kNN
            continue
        candidate = Candidate(name, resolution, row["tap"])
        attrs = {
            "candidate": candidate.key,
            "pair": pair,
            "stage": "probe",
            "strategy": strategy,
            "backbone": name,
            "resolution": resolution,
            "tap": row["tap"],
            "head": row["probe_head"],
            "C": row["probe_C"],
            "logme": row["logme"],
            "knn": row["knn"],
            "seconds": row["extract_seconds"] + row["score_seconds"] + row["probe_seconds"],
            "extract_seconds_pair": row["extract_seconds"] * len(rows),
        }
        study.add_trial(optuna.trial.create_trial(value=row["probe_accuracy"], user_attrs=attrs))
        log.info(
            "probe %s: val %.4f (%s, C=%g)", candidate.key, row["probe_accuracy"], row["probe_head"], row["probe_C"]
        )


def _extraction_estimate(context: RunContext, name: str, resolution: int) -> float | None:
    """Seconds to extract ``name``'s features at ``resolution`` from its throughput measured by `auto`."""
    per_image = context.auto.get("seconds_per_image", {}).get(name)
    if per_image is None:
        return None
    n_images = len(context.dataset(resolution))
    return planner.extraction_seconds(per_image, context.auto["profile_resolution"], resolution, n_images)


def run_probe_stage(study: optuna.Study, context: RunContext, finetune_first: bool) -> None:
    """Probe every (backbone, resolution) pair, smallest images first, while the budget allows.

    ``finetune_first``: the profile recommends fine-tuning, so the probes may use at most
    ``planner.cheap_share`` of the budget.
    """
    space, deadline = context.settings.space, context.deadline
    done = _probed_pairs(study)
    failed = {t.user_attrs.get("pair") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    config = RankingConfig(
        heads=space.probe_heads, c_grid=space.c_grid, seed=context.settings.seed, probe_top=space.probe_top_taps
    )
    pairs = [(r, b) for r in sorted(context.resolutions) for b in context.backbones]
    share = planner.cheap_share(finetune_first)
    context.progress.stage("probes", total=len(pairs))
    per_pixel: list[float] = []  # seconds / resolution^2 of each pair probed in this run
    corrections: list[float] = []  # actual / estimated seconds of each pair probed in this run
    for resolution, name in pairs:
        pair = f"{name}@{resolution}"
        if pair in failed or pair in done:
            measured = _measured_extract_seconds(study, pair)
            if measured is not None:
                context.extract_seconds[pair] = measured
            context.progress.step(f"{pair} (done before)")
            continue
        extraction = _extraction_estimate(context, name, resolution)
        if extraction is not None:  # the backbone's throughput was measured here (auto): the first pair too
            expected = planner.pair_seconds(extraction, corrections)
        else:
            expected = float(np.mean(per_pixel)) * resolution**2 if per_pixel else 0.0
        if not planner.probe_pair_fits(deadline.left(), context.reserve(None), expected):
            log.info("time budget: cheap stage stops before %s (about %s)", pair, format_duration(expected))
            break
        probed_one = bool(per_pixel) or bool(done)  # fine-tuning needs at least one probed candidate
        if probed_one and deadline.elapsed() + expected > share * deadline.seconds:
            log.info(
                "time budget: cheap stage stops before %s (about %s): the profile recommends "
                "fine-tuning, which keeps %d%% of the budget",
                pair,
                format_duration(expected),
                round(100 * (1 - share)),
            )
            break
        tic = time.perf_counter()
        try:
            rows = rank_backbone(context.dataset(resolution), context.backbone(name), config, show_progress=False)
        except (AutoTransferError, RuntimeError, ValueError) as error:
            log.warning("candidate %s failed: %s", pair, error)
            attrs = {"pair": pair, "stage": "probe", "error": str(error)[:500], "seconds": time.perf_counter() - tic}
            study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs))
            context.progress.step(f"{pair} failed: {error}")
            continue
        if pair in _probed_pairs(study):  # a worker sharing the storage was quicker
            log.info("candidate %s was probed by another worker meanwhile", pair)
            continue
        _record_probe_rows(study, context, name, resolution, rows)
        context.extract_seconds[pair] = rows[0]["extract_seconds"] * len(rows) if rows else 0.0
        per_pixel.append((time.perf_counter() - tic) / resolution**2)
        if extraction:
            corrections.append((time.perf_counter() - tic) / extraction)
        context.progress.step(pair)


def finetune_first(space_strategies: tuple[str, ...], max_trials: int, prior: dict) -> bool:
    """Whether the profile's first strategy is a fine-tuning one the space allows."""
    first = (prior.get("strategies") or [""])[0]
    return (
        bool(max_trials)
        and first in STRATEGIES
        and STRATEGIES[first].stage == "finetune"
        and any(STRATEGIES[s].stage == "finetune" for s in space_strategies)
    )
