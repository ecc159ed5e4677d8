"""The ensemble stage: after the search, the best few diverse configurations (probes of other backbones,
sizes and taps; fine-tuned trials) are combined by greedy ensemble selection on their validation
probabilities (search/ensemble_selection.py), and the average replaces the single best configuration
when it beats it on validation. Members are trained on train only while they are chosen (their
validation probabilities are honest); the saved ensemble's probes are refit on train+val, and its
fine-tuned members, heaviest first, are retrained on train+val while their refit fits the time left (the
reserve kept one for the best trial), else keep their trials' weights, as AutoGluon's ``refit_full``
keeps the ensemble's weights and refits its members on all the data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from autotransfer.budget import format_duration
from autotransfer.deploy.ensemble import EnsemblePipeline
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.search import planner
from autotransfer.search.context import RunContext
from autotransfer.search.ensemble_selection import EnsembleChoice, greedy_selection, worth_it
from autotransfer.search.evaluate import split_probabilities, write_predictions
from autotransfer.search.records import TrialRecord, usable
from autotransfer.search.refit import FinalModel, probe_model, refit_finetune, summary_words, to_pipeline, trial_model
from autotransfer.transfer.metrics import classification_summary
from autotransfer.transfer.metrics import score as score_metric

log = logging.getLogger(__name__)

MAX_CANDIDATES = 6  # configurations whose validation probabilities are computed (each costs a val forward)
MAX_FINETUNED = 3  # of them, fine-tuned trials at most (the rest: probes, one per backbone/size/tap)


@dataclass
class Ensemble:
    """The chosen members (records, best first), the selection's weights and scores, and the members'
    validation probabilities (trained on train only) the selection used."""

    members: list[TrialRecord]
    choice: EnsembleChoice
    val_probabilities: list[np.ndarray]


def candidates(rows: list[TrialRecord], best: TrialRecord, count: int = MAX_CANDIDATES) -> list[TrialRecord]:
    """``best`` first, then the best-scoring usable records that differ from those already taken: one probe
    per (backbone, size, tap), at most ``MAX_FINETUNED`` fine-tuned trials."""
    chosen, seen, finetuned = [best], {_key(best)}, int(best.stage == "finetune")
    for row in sorted((r for r in rows if usable(r)), key=lambda r: -r.val_score):
        if len(chosen) == count:
            break
        if _key(row) in seen or (row.stage == "finetune" and finetuned >= MAX_FINETUNED):
            continue
        chosen.append(row)
        seen.add(_key(row))
        finetuned += row.stage == "finetune"
    return chosen


def _key(row: TrialRecord) -> tuple:
    if row.stage == "probe":
        return ("probe", row.backbone, row.resolution, row.tap)
    return ("finetune", row.trial)


def member_pipeline(context: RunContext, record: TrialRecord, splits: tuple[str, ...]) -> Pipeline:
    """A record as a pipeline: a probe's head fit on ``splits``; a fine-tuned trial's own weights."""
    final = probe_model(context, record, splits) if record.stage == "probe" else trial_model(context, record)
    return to_pipeline(context, record, final, {})


def choose_ensemble(context: RunContext, rows: list[TrialRecord], best: TrialRecord | None) -> Ensemble | None:
    """The ensemble that beats ``best`` alone on validation, or None (turned off, no validation split,
    fewer than two candidates, no gain, or no time: each candidate after the best starts only when its
    build, its validation forward and the test forward of every member so far and of it fit before the
    final pipeline's reserve; builds and forwards are timed separately, on the slowest member so far. The
    best starts whenever the reserve is left: its fp32 features and held-out forwards are the final
    pipeline's own, which the reserve holds, and once they are done the reserve no longer counts them)."""
    settings = context.settings
    if best is None or not (settings.options.ensemble and settings.space.ensemble):
        return None
    pool = candidates(rows, best)
    dataset = context.dataset(best.resolution)
    n_val, n_test = len(dataset.indices("val")), len(dataset.indices("test"))
    if len(pool) < 2 or n_val == 0:
        return None
    labels = dataset.labels[dataset.indices("val")]
    metric = context.objective.metric
    probabilities, members = [], []
    build, per_image = 0.0, 0.0  # the slowest member's build (features, head) and forward seconds per image
    for record in pool:
        # the best itself (first) needs nothing past the reserve: its features and held-out forwards are the
        # final pipeline's
        needed = build + per_image * (n_val + n_test * (len(members) + 1)) if members else 0.0
        if context.deadline.left() < context.reserve(best) + needed:
            next_one = f", about {format_duration(needed)} needed for the next" if members else ""
            log.info("ensemble: no time for more candidates (%s left, %s kept for the final pipeline%s)",
                     format_duration(context.deadline.left()), format_duration(context.reserve(best)),
                     next_one)  # fmt: skip
            break
        tic = time.perf_counter()
        pipeline = member_pipeline(context, record, ("train",))
        built = time.perf_counter()
        probabilities.append(split_probabilities(pipeline, context.dataset(record.resolution), "val"))
        members.append(record)
        build = max(build, built - tic)
        per_image = max(per_image, (time.perf_counter() - built) / n_val)
    if len(members) < 2:
        return None
    choice = greedy_selection(probabilities, lambda p: score_metric(metric, labels, p, len(dataset.classes)))
    if not worth_it(choice, n_val):
        log.info("ensemble: %.4f on the val split against %.4f for the best alone there: kept the best alone",
                 choice.score, choice.single_score)  # fmt: skip
        return None
    picked = [members[i] for i in choice.members]
    weights = {j: choice.weights[i] for j, i in enumerate(choice.members)}
    log.info("ensemble: %d members, %.4f on the val split against %.4f for the best alone there", len(picked),
             choice.score, choice.single_score)  # fmt: skip
    picked_probabilities = [probabilities[i] for i in choice.members]
    return Ensemble(picked, EnsembleChoice(weights, choice.score, choice.single_score), picked_probabilities)


def build_ensemble(context: RunContext, ensemble: Ensemble) -> EnsemblePipeline:
    """The saved ensemble (members refit on train+val where they can be), with its validation and test figures."""
    weights = [ensemble.choice.weights[i] for i in range(len(ensemble.members))]
    finals = _saved_members(context, ensemble.members, weights)
    members = [to_pipeline(context, r, f, {}) for r, f in zip(ensemble.members, finals)]
    objective, first = context.objective, ensemble.members[0]
    dataset = context.dataset(first.resolution)
    words = "; ".join(f"{w:.2f} x {summary_words(r, len(m.backbone.depth_groups))}"
                      for r, m, w in zip(ensemble.members, members, weights))  # fmt: skip
    metrics = {"metric": objective.metric, "metric_reason": objective.reason,
               "val_score": ensemble.choice.score, "val_score_from": "validation split (members trained on train)",
               "val_accuracy": None, "refit_on_train_val": all(f.refit for f in finals),
               "selection": selection_words(ensemble)}  # fmt: skip
    for split in ("val", "test"):
        if not len(dataset.indices(split)):
            continue
        if split == "val":  # the members trained on train only, as the selection saw them
            probabilities = sum(w * p for w, p in zip(weights, ensemble.val_probabilities))
        else:
            probabilities = sum(
                w * split_probabilities(p, context.dataset(r.resolution), split)
                for w, p, r in zip(weights, members, ensemble.members)
            )
        write_predictions(context.out / f"predictions-{split}.csv", dataset, split, probabilities)
        labels = dataset.labels[dataset.indices(split)]
        metrics[split] = classification_summary(labels, np.asarray(probabilities).argmax(1), dataset.classes)
    metrics["val_accuracy"] = metrics.get("val", {}).get("accuracy")
    if "test" in metrics:
        metrics["test_accuracy"] = metrics["test"]["accuracy"]
    return EnsemblePipeline.from_members(members, weights, metrics=metrics, summary=f"ensemble: {words}")


def _saved_members(context: RunContext, members: list[TrialRecord], weights: list[float]) -> list[FinalModel]:
    """Each member as saved: a probe's head fit on train+val; a fine-tuned trial retrained on train+val,
    heaviest first, while its refit's estimate fits before the test forwards of every member and saving
    (no margin: a refit the deadline stops keeps the trial's own weights, refit.refit_finetune, and the time
    is otherwise unused); else its own weights."""
    dataset = context.dataset(members[0].resolution)
    n_val, n_test = len(dataset.indices("val")), len(dataset.indices("test"))
    # evaluation_seconds is two forwards over val and test; the members' val probabilities are kept already
    forwards = sum(context.evaluation_seconds(r) for r in members) / 2 * n_test / max(n_val + n_test, 1)
    finals: dict[int, FinalModel] = {}
    for i in sorted(range(len(members)), key=lambda i: (members[i].stage != "probe", -weights[i])):
        record = members[i]
        if record.stage == "probe":
            finals[i] = probe_model(context, record, ("train", "val"))
            continue
        fits = context.deadline.left() - forwards - planner.SAVE_SECONDS >= context.refit_estimate(record)
        refit = refit_finetune(context, record, keep=forwards) if fits else None
        if refit is None:
            log.info("ensemble: trial %d keeps its own weights (no room to retrain it on train+val)", record.trial)
        finals[i] = refit or trial_model(context, record)
    return [finals[i] for i in range(len(members))]


def selection_words(ensemble: Ensemble) -> str:
    """Why the ensemble: its score and the best member's alone, both on the validation split with the
    members trained on train (like with like); where the leaderboard's search scores of its members are
    CV means (probes on small data), that is said, so the two kinds of figure are not read as one."""
    words = (f"greedy ensemble selection (Caruana et al. 2004): {ensemble.choice.score:.4f} on the validation split "
             f"against {ensemble.choice.single_score:.4f} for the best member alone on the same split "
             "(members trained on train)")  # fmt: skip
    if any(r.score_source == "cv" for r in ensemble.members):
        words += "; the leaderboard's search scores of probes are CV means on train+val, not these"
    return words
