"""The cheap stage: every (backbone, resolution) of the space has its features extracted once
(cached) and its taps probed by linear heads; each (backbone, resolution, tap) becomes a trial of the
``probes`` study. Smallest images first, each pair only when its estimated cost fits the budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial

import numpy as np
import optuna
from optuna.trial import TrialState

from autotransfer.budget import format_duration
from autotransfer.cpu_threads import use_free_cpus
from autotransfer.errors import AutoTransferError
from autotransfer.report.progress import TRIAL_LINE
from autotransfer.search import planner
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.search.objective import Objective
from autotransfer.search.records import TrialRecord, best_record, trial_attrs, trial_records
from autotransfer.search.storage import claim_is_live, heartbeat_settings, run_once
from autotransfer.transfer.profile import Prior
from autotransfer.transfer.ranking import RankingConfig, rank_backbone
from autotransfer.transfer.strategies import STRATEGIES, probe_strategy

log = logging.getLogger(__name__)


def _probed_pairs(study: optuna.Study) -> set[str]:
    """The (backbone, resolution) pairs whose probe rows are all recorded: a run killed between two rows of
    a pair left only some (each row is a trial of its own), and that pair is probed again on resume."""
    rows: dict[str, list[TrialRecord]] = {}
    for r in trial_records("probe", study):
        if r.status == "complete":
            rows.setdefault(Candidate.parse(r.candidate).pair, []).append(r)
    return {
        pair
        for pair, done in rows.items()
        if any(r.pair_rows is None for r in done)  # written by an earlier version, or a later combined probe
        or len(done) >= max(r.pair_rows or 0 for r in done)
    }


def pair_order(
    study: optuna.Study, resolutions: tuple[int, ...], backbones: tuple[str, ...]
) -> Iterator[tuple[int, str]]:
    """(resolution, backbone) pairs, smallest size first; from the second size on, the backbones whose
    probes scored best so far come first, so a budget that ends the stage spends the larger size on
    the most promising backbone. Read lazily: each size sees the scores of the sizes before it."""
    for i, resolution in enumerate(sorted(resolutions)):
        best: dict[str, float] = {}
        for r in trial_records("probe", study):
            if r.status == "complete" and r.backbone is not None and r.val_score is not None:
                best[r.backbone] = max(best.get(r.backbone, float("-inf")), r.val_score)
        order = backbones if i == 0 else sorted(backbones, key=lambda b: -best.get(b, float("-inf")))
        for name in order:
            yield resolution, name


def _measured_extract_seconds(study: optuna.Study, pair: str) -> float | None:
    for record in trial_records("probe", study):
        if record.pair == pair and record.extract_seconds_pair is not None:
            return record.extract_seconds_pair
    return None


def record_probe_rows(
    study: optuna.Study,
    context: RunContext,
    name: str,
    resolution: int,
    rows: list[dict],
    extract_seconds_pair: float | None,
    *,
    whole_pair: bool = True,
) -> None:
    """Each probed row of ``name`` at ``resolution`` as a complete trial of the probes study;
    ``extract_seconds_pair``: the pair's whole extraction (None: rows that extracted nothing new);
    ``whole_pair``: the rows are the pair's probe (each records how many there are), not a later combined
    probe's row. Rows recorded before (a run killed mid-record) are not recorded twice."""
    pair = f"{name}@{resolution}"
    strategies = context.settings.space.strategies
    # a row without a probe score was not among the top kNN taps
    kept = [row for row in rows if "probe_accuracy" in row and probe_strategy(row["tap"]) in strategies]
    recorded = {r.candidate for r in trial_records("probe", study) if r.status == "complete"}
    for row in kept:
        strategy = probe_strategy(row["tap"])
        candidate = Candidate(name, resolution, row["tap"])
        if candidate.key in recorded:
            continue
        attrs = trial_attrs(
            candidate=candidate.key,
            pair=pair,
            stage="probe",
            strategy=strategy,
            backbone=name,
            resolution=resolution,
            tap=row["tap"],
            head=row["probe_head"],
            C=row["probe_C"],
            class_weight=row["probe_class_weight"] or "none",
            val_accuracy=row["probe_accuracy"],
            metric=context.objective.metric,
            logme=row["logme"],
            knn=row["knn"],
            seconds=row["extract_seconds"] + row["score_seconds"] + row["probe_seconds"],
            probe_seconds=row["probe_seconds"],
            refit_seconds=row["refit_seconds"],
        )
        if extract_seconds_pair is not None:
            attrs["extract_seconds_pair"] = extract_seconds_pair
        if whole_pair:
            attrs["pair_rows"] = len(kept)
        study.add_trial(optuna.trial.create_trial(value=row["probe_score"], user_attrs=attrs))
        log.info(
            "probe %s: %s %s %.4f (%s, C=%g)",
            candidate.key,
            f"{context.objective.cv_folds}-fold CV" if context.objective.cv_folds else "val",
            attrs["metric"],
            row["probe_score"],
            row["probe_head"],
            row["probe_C"],
            extra=TRIAL_LINE,
        )
        rows_so_far = trial_records("probe", study)
        best = best_record(rows_so_far)
        context.progress.trial(rows_so_far[-1].row(), best.row() if best else None)


def probe_fits(objective: Objective) -> int:
    """Fits per (head, C) of one tap: CV folds (or one on the validation split) times class weightings."""
    return max(1, objective.cv_folds) * len(objective.class_weights)


def _extraction_estimate(context: RunContext, name: str, resolution: int) -> float | None:
    """Seconds to extract ``name``'s features at ``resolution`` from its throughput measured by `auto`."""
    per_image = context.auto.seconds_per_image.get(name) if context.auto else None
    if per_image is None:
        return None
    n_images = context.n_images()  # the same at every resolution: none is decoded only to count it
    return planner.extraction_seconds(per_image, context.auto.profile_resolution, resolution, n_images)


def ranking_config(context: RunContext) -> RankingConfig:
    """The probes of this run: the space's heads, C grid and taps, the objective's metric, class
    weightings and CV folds."""
    space, objective = context.settings.space, context.objective
    return RankingConfig(
        heads=space.probe_heads,
        c_grid=space.c_grid,
        seed=context.settings.options.seed,
        probe_top=space.probe_top_taps,
        metric=objective.metric,
        class_weights=tuple(None if w == "none" else w for w in objective.class_weights),
        cv_folds=objective.cv_folds,
    )


def run_probe_stage(
    study: optuna.Study,
    context: RunContext,
    finetune_first: bool,
    prior_taps: list[str],
    keep_for: TrialRecord | None = None,
) -> None:
    """Probe every (backbone, resolution) pair, smallest images first, while the budget allows.

    ``finetune_first``: the profile recommends fine-tuning, so the probes may use at most
    ``planner.cheap_share`` of the budget. Each pair probes its best taps by kNN and its head (the
    measured placement compares the head with a lower tap); the profile backbone also probes
    ``prior_taps``, the taps the profile names, so `profile` never names a tap `fit` did not try.
    ``keep_for``: the best record so far, whose refit and ensemble (RunContext.ensemble_room) the reserve keeps
    room for (a second pass, after fine-tuning, over the pairs left); pairs probed before are passed over."""
    deadline, done, again = context.deadline, _probed_pairs(study), keep_for is not None
    failed = {r.pair for r in trial_records("probe", study) if r.status == "fail"}
    config, share = ranking_config(context), planner.cheap_share(finetune_first)
    pairs = [f"{n}@{r}" for r in context.resolutions for n in context.backbones]
    total = len([p for p in pairs if p not in done | failed]) if again else len(pairs)
    if again and not total:
        return
    detail = "the pairs skipped before, in the time fine-tuning left" if again else ""
    context.progress.stage("probes", total=total, detail=detail, unit="backbone/size pair(s)")
    per_pixel: list[float] = []  # seconds / resolution^2 of each pair probed in this run
    skipped: list[str] = []  # pairs another worker sharing the storage probes
    corrections: list[float] = []  # actual / estimated seconds of each pair probed in this run
    for resolution, name in pair_order(study, context.resolutions, context.backbones):
        pair = f"{name}@{resolution}"
        if pair in failed or pair in done:
            measured = _measured_extract_seconds(study, pair)
            if measured is not None:
                context.extract_seconds[pair] = measured
            if not again:  # a second pass counts only the pairs left
                context.progress.step(f"{pair} (done before)")
            continue
        use_free_cpus()
        extraction = _extraction_estimate(context, name, resolution)
        if extraction is not None:  # the backbone's throughput was measured here (auto): the first pair too
            expected = planner.pair_seconds(extraction, corrections, probe_fits(context.objective))
        else:
            expected = float(np.mean(per_pixel)) * resolution**2 if per_pixel else 0.0
        probed_one = bool(per_pixel) or bool(done)  # fine-tuning needs at least one probed candidate
        needed = planner.pair_needs(expected, first=not probed_one)
        reserve = context.reserve(keep_for) + context.ensemble_room(keep_for)  # room for the ensemble after a best
        if not planner.probe_pair_fits(deadline.left(), reserve, needed):
            # only the pass after fine-tuning ends the search
            context.search_ended(f"time budget: cheap stage stops before {pair} (about {format_duration(needed)})",
                                 final=again)  # fmt: skip
            if not probed_one:  # no candidate at all: the error names what this run showed it needs
                context.budget_needed = planner.minimum_budget(deadline.elapsed(), expected)
            break
        also = ("head", *prior_taps) if name == context.settings.options.profile_backbone else ("head",)
        # taps stop being probed when only the reserve (refit, evaluation, saving) is left
        pair_config = replace(config, also_probe=also, deadline=deadline.less(reserve))
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
        probed = _probe_unless_claimed(study, context, pair_config, name, resolution)
        if probed is None:
            skipped.append(pair)
            context.progress.step(f"{pair} (another worker)")
            continue
        if probed:
            per_pixel.append((time.perf_counter() - tic) / resolution**2)
            if extraction:
                corrections.append((time.perf_counter() - tic) / extraction)
                if pair not in context.cached_pairs:  # a cache read times no forward pass
                    context.slowdown = context.extract_seconds.get(pair, 0.0) / extraction
        context.progress.step(pair if probed else f"{pair} failed")
    for pair in skipped:
        _wait_for(study, context, config, pair)


def _probe_unless_claimed(
    study: optuna.Study, context: RunContext, config: RankingConfig, name: str, resolution: int
) -> bool | None:
    """Probe the pair (whether it was probed); None when workers share the study and another one has
    claimed it (each pair is probed by one of them)."""
    if not context.settings.options.storage:
        return _probe_pair(study, context, config, name, resolution)
    pair = f"{name}@{resolution}"
    work = partial(_probe_pair, study, context, config, name, resolution)
    ran, holder = run_once(context.storage, claim(pair), work, str(context.out))
    if ran:
        return holder
    log.info("candidate %s is probed by worker %s", pair, holder["worker"])
    return None


def claim(pair: str) -> str:
    return f"probe-claim:{pair}"


def _probe_pair(study: optuna.Study, context: RunContext, config: RankingConfig, name: str, resolution: int) -> bool:
    """Probe one (backbone, resolution) and record its taps; a failure is recorded as a failed trial."""
    pair, tic = f"{name}@{resolution}", time.perf_counter()
    try:
        rows = rank_backbone(context.dataset(resolution), context.backbone(name), config, show_progress=False)
    except (AutoTransferError, RuntimeError, ValueError) as error:
        log.warning("candidate %s failed: %s", pair, error)
        attrs = trial_attrs(pair=pair, stage="probe", error=str(error)[:500], seconds=time.perf_counter() - tic)
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs))
        return False
    if pair in _probed_pairs(study):  # a worker sharing the storage was quicker
        log.info("candidate %s was probed by another worker meanwhile", pair)
        return False
    context.extract_seconds[pair] = sum(r["extract_seconds"] for r in rows)
    if rows and rows[0].get("extract_cached"):
        context.cached_pairs.add(pair)
        if rows[0].get("extract_recorded") is not None:
            context.recorded_extraction[pair] = rows[0]["extract_recorded"]
    record_probe_rows(study, context, name, resolution, rows, context.extract_seconds[pair])
    return True


def _wait_for(study: optuna.Study, context: RunContext, config: RankingConfig, pair: str) -> None:
    """Wait while another worker probes ``pair``; probe it here if that worker died (its claim lapsed)."""
    name, resolution = pair.rsplit("@", 1)
    while True:
        failed = {r.pair for r in trial_records("probe", study) if r.status == "fail"}
        if pair in _probed_pairs(study) or pair in failed:
            measured = _measured_extract_seconds(study, pair)
            if measured is not None:
                context.extract_seconds[pair] = measured
            return
        if claim_is_live(context.storage, claim(pair)):
            if context.deadline.left() <= context.reserve(None):
                return
            time.sleep(heartbeat_settings()[0])
            continue
        log.info("candidate %s: the worker probing it stopped; probing it here", pair)
        work = partial(_probe_pair, study, context, config, name, int(resolution))
        ran, _ = run_once(context.storage, claim(pair), work, str(context.out))
        if not ran and not claim_is_live(context.storage, claim(pair)):
            return  # finished elsewhere without a probe to record


def finetune_first(space_strategies: tuple[str, ...], max_trials: int, prior: Prior) -> bool:
    """Whether the profile's first strategy is a fine-tuning one the space allows."""
    first = (prior.strategies or ("",))[0]
    return (
        bool(max_trials)
        and first in STRATEGIES
        and STRATEGIES[first].stage == "finetune"
        and any(STRATEGIES[s].stage == "finetune" for s in space_strategies)
    )
