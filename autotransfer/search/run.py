"""``fit`` as a short script of stages, inside one hard wall-clock budget:

profile -> probes (the cheap stage) -> fine-tuning trials (Optuna or Ray Tune) -> refit -> save.

Both stages' trials live in one Optuna storage (SQLite in the run directory unless ``storage``
says otherwise), so a killed run resumes without losing or repeating finished trials. Each step
starts only if it, plus the reserve for the final refit and saving, fits in the time left
(search/planner.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from autotransfer.budget import format_duration
from autotransfer.cpu_threads import busiest_load, use_free_cpus
from autotransfer.data.resolution import choose_resolution, profile_resolution
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.errors import AutoTransferError
from autotransfer.files import disk_full_error, is_disk_full
from autotransfer.report.outputs import write_outputs
from autotransfer.report.progress import Progress
from autotransfer.runtime import default_device, tune_allocator
from autotransfer.search import planner
from autotransfer.search.auto_space import (
    SAMPLE,
    AutoChoice,
    native_side,
    resolution_ladder,
    resolve_auto,
    seconds_per_image,
)
from autotransfer.search.combined_probe import probe_best_pair_combined
from autotransfer.search.context import RunContext
from autotransfer.search.ensemble_stage import build_ensemble, choose_ensemble
from autotransfer.search.finetune_stage import FinetunePlan, OptunaBackend, choose_candidates, search_shape
from autotransfer.search.finished import is_finished, load_finished
from autotransfer.search.objective import Objective, decide_objective, decide_rotation
from autotransfer.search.placement import Placement, corrected_prior, measured_placement, pixel_baseline
from autotransfer.search.probe_stage import finetune_first, run_probe_stage
from autotransfer.search.recipe import prior_ranges
from autotransfer.search.records import TrialRecord, best_record, records, trial_records
from autotransfer.search.refit import build_pipeline
from autotransfer.search.run_dir import RunDirectory
from autotransfer.search.run_profile import RunProfile
from autotransfer.search.selection import choose_final
from autotransfer.search.settings import SearchSettings
from autotransfer.search.storage import Studies, open_storage, open_studies, retry_interrupted_trials, write_once
from autotransfer.search.widen import widen_to_other_sizes, widen_to_skipped_backbones
from autotransfer.transfer.profile import profile_dataset

PLACEMENT_SECONDS = 5.0  # the pixel baseline: a logistic regression on grey thumbnails
PROFILE_SAMPLE = 256  # images the profiler measures (profile_dataset's default sample_size)
SAMPLE_ORIENTATION = 256  # training images whose mean decides whether rotations are on (objective.py)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SearchResult:
    """What a run found. ``best``: the chosen trial's record; ``refit``: retrained on train+val."""

    pipeline: Pipeline
    leaderboard: pd.DataFrame
    profile: RunProfile
    run_dir: Path
    best: TrialRecord
    refit: bool
    seconds: float
    records: list[TrialRecord]
    already_finished: bool = False  # the run directory held a finished run: loaded, not searched (finished.py)


def run(data: str | Path, settings: SearchSettings, progress: Progress | None = None) -> SearchResult:
    """Search ``data`` (ImageFolder, split folders or CSV) and save the best pipeline in ``settings.out``.

    Raises AutoTransferError for anything a user can fix (bad data, a budget too small, a run
    directory holding another search); finished trials are kept in the storage either way.
    """
    tune_allocator()  # glibc malloc without mmap churn: 1.8-2.3x faster CPU extraction (benchmarks/features.py)
    progress = progress or Progress(settings.time_budget, verbose=0, start=settings.start)
    context = RunContext(Path(data), settings, progress)
    identity = {"data": str(context.data.resolve()), "space": settings.space.to_json(), "seed": settings.options.seed,
                "val_fraction": settings.options.val_fraction, "metric": settings.metric}  # fmt: skip
    run_dir = RunDirectory(settings.out, identity)
    started = False
    try:
        with run_dir.opened():
            if is_finished(settings.out):
                saved = load_finished(settings.out, settings.device)
                refit = bool(saved.pipeline.spec.get("metrics", {}).get("refit_on_train_val"))
                return SearchResult(pipeline=saved.pipeline, leaderboard=saved.leaderboard, profile=saved.profile,
                                    run_dir=settings.out, best=saved.best, refit=refit, seconds=0.0,
                                    records=saved.records, already_finished=True)  # fmt: skip
            studies = open_run(context, run_dir)
            started = True
            return _stages(context, studies)
    except Exception as error:
        if not started:
            run_dir.discard_if_empty()
        if is_disk_full(error) and not isinstance(error, AutoTransferError):
            raise disk_full_error(error, settings.out) from error
        raise
    finally:
        progress.close()


def open_run(context: RunContext, run_dir: RunDirectory) -> Studies:
    """Fill ``context`` for the stages, in this order (each step reads what the ones before set):

    1. ``storage`` and the studies (interrupted trials queued again when this process owns the run);
    2. ``backbones``, ``resolutions`` and ``auto`` (choose_space: the space's, or `auto`'s, which times
       backbones on a sample of images);
    3. a new run's budget floor (check_minimum_budget: from 2's timing, before anything is decoded);
    4. ``objective`` (choose_objective: decodes the smallest resolution of 2).
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = context.settings
    context.storage = open_storage(settings.options.storage, settings.out)
    studies = open_studies(context.storage, settings.space, settings.options.seed, settings.sampler, settings.pruner)
    if run_dir.sole_owner and not settings.options.storage:
        retry_interrupted_trials(studies.finetune)
    resumed = len(studies.probes.trials) + len(studies.finetune.trials)
    chosen_before = "auto" in studies.probes.user_attrs  # by another worker, or a start stopped before any trial
    if not resumed and not chosen_before:
        check_minimum_budget(context)  # before `auto` times the backbones and anything is decoded whole
    choose_space(context, studies)
    if resumed:
        log.info("resuming: %d trial(s) already in the study", resumed)
    elif chosen_before:
        check_minimum_budget(context)  # with the stored choice and its timings
    choose_objective(context, studies)
    return studies


def choose_objective(context: RunContext, studies: Studies) -> None:
    """The metric, class weighting and probe selection of this run (once per study)."""
    if "objective" not in studies.probes.user_attrs:
        dataset = context.dataset(min(context.resolutions))
        train = dataset.labels[dataset.indices("train")]
        pooled = dataset.labels[np.concatenate([dataset.indices("train"), dataset.indices("val")])]
        objective = decide_objective(context.settings.metric, train, dataset.classes, pooled)
        rows = dataset.indices("train")
        rows = rows[np.linspace(0, len(rows) - 1, num=min(len(rows), SAMPLE_ORIENTATION)).astype(int)]  # every class
        objective = replace(objective, **decide_rotation(np.asarray(dataset.images[np.sort(rows)])))
        studies.probes.set_user_attr("objective", objective.to_json())
    context.objective = Objective.from_json(studies.probes.user_attrs["objective"])
    log.info("metric: %s", context.objective.reason)


def choose_space(context: RunContext, studies: Studies) -> None:
    """The backbones and resolutions of this run: the space's, or what `auto` picks (once per study,
    so a resumed run or another worker keeps the same choice)."""
    space = context.settings.space
    if space.backbones and space.resolutions:
        context.backbones, context.resolutions = space.backbones, space.resolutions
        return
    if "auto" not in studies.probes.user_attrs:
        context.progress.stage("profile", detail="choosing backbones and resolutions for this data and machine")
        native = native_side(context.data, seed=context.settings.options.seed)
        first = profile_resolution([native], device=context.device or default_device())
        sample = context.sample_pixels(first, SAMPLE)  # nothing decoded whole before the budget check
        shape = search_shape(context)  # at long budgets more backbones and larger sizes (planner.scaled_plan)
        choice = resolve_auto(space.backbones, space.resolutions, sample, native=native, n_images=context.n_images(),
                              budget=context.deadline.left(), device=context.device or default_device(),
                              shape=shape)  # fmt: skip
        studies.probes.set_user_attr("auto", choice.to_json())
    context.auto = AutoChoice.from_json(studies.probes.user_attrs["auto"])
    context.backbones, context.resolutions = context.auto.backbones, context.auto.resolutions


def _stages(context: RunContext, studies: Studies) -> SearchResult:
    space = context.settings.space
    profile = profile_stage(context)
    log.info("profile: %s", profile.dataset.rationale)
    prior = profile.dataset.prior
    recommends_finetuning = finetune_first(space.strategies, space.max_trials, prior)
    run_probe_stage(studies.probes, context, recommends_finetuning, list(prior.taps))
    cheap_until = planner.cheap_share(recommends_finetuning) * context.deadline.seconds
    probe_best_pair_combined(studies.probes, context, None, cheap_until)
    prior = corrected_prior(prior, placement_stage(context, studies, profile))
    probed = studies.probes.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finetuned = bool(space.finetune_strategies and space.max_trials and probed)
    if finetuned:
        candidates = choose_candidates(studies, space.candidates)
        plan = FinetunePlan(studies, candidates, prior_ranges(space, prior), prior, context.objective)
        backend_for(context.settings.options.backend).run(plan, context)
    # the probes kept to their share for fine-tuning, or `auto` left backbones or sizes out: give them what is left
    best_so_far = best_record(records(studies)) if probed else None
    more_backbones = bool(probed) and widen_to_skipped_backbones(context, best_so_far)
    widened = bool(probed) and widen_to_other_sizes(context, best_so_far) or more_backbones
    if widened or (recommends_finetuning and finetuned):
        run_probe_stage(studies.probes, context, False, list(prior.taps), keep_for=best_so_far)
        probe_best_pair_combined(studies.probes, context, best_record(records(studies)), context.deadline.seconds)
    rows = records(studies)
    best, selection = choose_final(rows, context.objective, context.split_sizes)
    if selection:
        log.info("final choice: %s", selection)
    if best is None:
        raise no_trial_finished(context)

    left_after_search = context.deadline.left()  # what the final stages were left, by the search's estimates
    ensemble = choose_ensemble(context, rows, best)

    def write() -> tuple[Pipeline, bool]:
        if ensemble is not None:
            log.info("final pipeline: an ensemble of %d configurations", len(ensemble.members))
            pipeline, refit = build_ensemble(context, ensemble), False
        else:
            where = "CV" if best.score_source == "cv" else "val"
            log.info("final pipeline: from %s trial %s (%s %.4f)", best.stage, best.trial, where, best.val_score)
            context.progress.stage("refit", detail=f"{best.stage} trial {best.trial}")
            pipeline, refit = build_pipeline(context, best, selection)
        context.progress.stage("save")
        pipeline.save(context.out / "pipeline")
        log.info("saved %s", context.out / "pipeline")
        return pipeline, refit

    if context.settings.options.storage:  # workers sharing a study write one final pipeline between them
        pipeline, refit = write_once(context.storage, write, str(context.out.resolve()))
    else:
        pipeline, refit = write()
    profile.machine_load = busiest_load()  # the summary and the report say when a busy machine cut the search
    profile.save(context.out)
    board = write_outputs(context.out, rows, best, pipeline, context.deadline.elapsed(), context.deadline.seconds,
                          ensemble=ensemble)  # fmt: skip
    unused = max(0.0, context.deadline.left())  # after the report: what the user waited for counts
    if unused > planner.UNUSED_SHARE * context.deadline.seconds and left_after_search > unused:
        # the search stopped for the time it estimated the last stages need: what they took says how close it was
        context.search_ended(f"the ensemble, refit and save took {format_duration(left_after_search - unused)} of "
                             f"the {format_duration(left_after_search)} left after the search")  # fmt: skip
    profile.budget_unused = {"seconds": round(unused, 1), "share": round(unused / context.deadline.seconds, 3)}
    profile.search_ends = context.search_ends or None
    profile.save(context.out)
    over = -context.deadline.left()
    if over > 0:  # a step estimated shorter than it ran (a load that came up): said, not shown as 0% unused
        log.warning("budget: %s over the %s budget (%.0f%%)", format_duration(over),
                    format_duration(context.deadline.seconds), 100 * over / context.deadline.seconds)  # fmt: skip
    else:
        why = "; ".join(context.search_ends) if unused > planner.UNUSED_SHARE * context.deadline.seconds else ""
        log.info("budget: %s of %s unused (%.0f%%)%s", format_duration(unused),
                 format_duration(context.deadline.seconds), 100 * unused / context.deadline.seconds,
                 f": {why}" if why else "")  # fmt: skip
    return SearchResult(pipeline=pipeline, leaderboard=board, profile=profile, run_dir=context.out, best=best,
                        refit=refit, seconds=context.deadline.elapsed(), records=rows)  # fmt: skip


def placement_stage(context: RunContext, studies: Studies, profile: RunProfile) -> Placement | None:
    """Where the probes place the data (search/placement.py), saved in ``profile.json`` next to the
    a-priori placement; computed once per run directory, and only when the budget leaves room."""
    if profile.measured is not None:
        return profile.measured
    if context.deadline.left() < context.reserve(None) + PLACEMENT_SECONDS:
        profile.measured_skipped = "the budget left no room for the pixel baseline"
        log.info("measured placement skipped: %s", profile.measured_skipped)
        return None
    dataset = context.dataset(min(context.resolutions))
    pixels = pixel_baseline(dataset, context.objective.metric, context.settings.options.seed)
    placement = measured_placement(profile.dataset.quadrant, trial_records("probe", studies.probes), pixels)
    if placement is not None:
        profile.measured = placement
        profile.save(context.out)
        log.info("measured placement: %s (a priori %s): %s", placement.quadrant, placement.a_priori,
                 placement.rationale)  # fmt: skip
    return placement


def backend_for(name: str):
    """The fine-tuning backend called ``name`` (``optuna`` or ``ray``)."""
    if name == "ray":
        from autotransfer.search.ray_backend import RayBackend

        return RayBackend()
    return OptunaBackend()


def profile_stage(context: RunContext) -> RunProfile:
    """The dataset's profile (``profile.json``, computed once per run directory)."""
    if (context.out / "profile.json").exists():
        return RunProfile.load(context.out)
    context.progress.stage("profile")
    use_free_cpus()
    device = context.device or default_device()
    if context.auto:  # the same rule on the native size auto read, so the same size as auto's probes
        resolution, reason = choose_resolution([context.auto.native_side], device=device)
    else:
        resolution, reason = choose_resolution(context.data, device=device, choices=context.resolutions)
    dataset = context.dataset(resolution)
    options = context.settings.options
    measured = profile_dataset(dataset, backbone=options.profile_backbone, seed=options.seed, show_progress=False)
    measured.resolution["profiled_at_reason"] = reason
    result = RunProfile(dataset=measured, auto=context.auto)
    result.save(context.out)
    return result


def no_trial_finished(context: RunContext) -> AutoTransferError:
    """The error of a run that ended without a candidate; it names the budget the run showed it needs
    when the probe stage could start none (the time already spent, e.g. a first decode of large images,
    plus the first candidate), with the same room for load as the check before the run."""
    what = "No trial finished within the time budget, so there is no pipeline to save."
    kept = "(the finished work is kept: run the same command again to continue)."
    if context.budget_needed is None:
        return AutoTransferError(what, where=str(context.out), fix=f"raise {{option}} {kept}", option="time_budget")
    enough = format_duration(context.budget_needed * 1.5)
    what = (f"No trial finished within the time budget ({format_duration(context.settings.time_budget)}): what ran "
            f"before the first candidate and the candidate itself need at least {enough} on this machine at "
            f"its load now (timed in this run: a quieter machine, or a rerun that reads the decoded images and "
            f"features from the cache, needs less).")  # fmt: skip
    return AutoTransferError(what, where=str(context.out), fix=f"use {{option:{enough}}} or more {kept}",
                             option="time_budget")  # fmt: skip


def check_minimum_budget(context: RunContext) -> None:
    """Fail early, naming the minimum, when not even one feature extraction, one probe and saving fit in
    the budget. Run before `auto` times the backbones (seconds to minutes under load), so the bound is
    taken with the cheapest choice the run could make: the space's first backbone, or the profiling
    backbone when `auto` chooses, at the smallest size it could choose. A lower bound (the probe stage's
    tap deadline cuts the rest); a failing bound is timed again once, so a burst of load does not refuse a
    budget that works. The minimum quoted is one number, in the message and in the fix."""
    settings = context.settings
    n_images = context.n_images()  # counted from the index: nothing decoded
    name, size = _cheapest_choice(context)
    device = context.device or default_device()
    measured_at = context.auto.profile_resolution if context.auto else size
    per_image = context.auto.seconds_per_image.get(name) if context.auto else None
    needed = _minimum_seconds(context, n_images, size, per_image, measured_at) if per_image else float("inf")
    if needed > settings.time_budget:
        sample = context.sample_pixels(size, SAMPLE)
        per_image = min(per_image or float("inf"), seconds_per_image(name, sample, device))
        needed = _minimum_seconds(context, n_images, size, per_image, size)
    if needed > settings.time_budget:
        enough = format_duration(needed * 1.5)  # one number in the message and the fix: the bound plus room for load
        raise AutoTransferError(
            f"The time budget ({format_duration(settings.time_budget)}) is too small for {n_images} "
            f"images: extracting their features once, one linear probe and saving, with room for load, need at "
            f"least {enough} on this machine at its load now (timed on a few images: another load gives "
            f"another figure).",
            where=str(context.data),
            fix=f"use {{option:{enough}}} or more, or fewer images.",
            option="time_budget",
        )


def _cheapest_choice(context: RunContext) -> tuple[str, int]:
    """The (backbone, size) the minimum is timed with: the run's own once chosen, else the space's first
    backbone (the profiling one when `auto` picks) at its smallest size (the smallest `auto` could pick)."""
    if context.backbones and context.resolutions:
        return context.backbones[0], min(context.resolutions)
    space, device = context.settings.space, context.device or default_device()
    name = space.backbones[0] if space.backbones else context.settings.options.profile_backbone
    if space.resolutions:
        return name, min(space.resolutions)
    native = native_side(context.data, seed=context.settings.options.seed)
    return name, min(resolution_ladder(native, cuda=str(device).startswith("cuda")))


def _minimum_seconds(context: RunContext, n_images: int, size: int, per_image: float, measured_at: int) -> float:
    """The run's lower bound (planner.minimum_budget) for ``n_images`` at ``size`` px, at ``per_image``
    seconds measured at ``measured_at`` px."""
    extraction = planner.extraction_seconds(per_image, measured_at, size, n_images)
    profiling = 0.0 if (context.out / "profile.json").exists() else extraction * min(1.0, PROFILE_SAMPLE / n_images)
    return planner.minimum_budget(context.deadline.elapsed(), profiling + extraction)
