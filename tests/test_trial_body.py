"""One fine-tuning trial body for both backends: the same trial run through the Optuna backend and through
the Ray backend's reporter (its results turned into the study's trial as the driver does) is recorded alike."""

import dataclasses
import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd

from autotransfer.report.outputs import trial_counts
from autotransfer.report.progress import Progress
from autotransfer.search import finetune_stage, planner
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.search.finetune_stage import FinetunePlan, OptunaBackend
from autotransfer.search.objective import Objective
from autotransfer.search.ray_backend import RayReporter, _record, _trial_context, run_ray_trial
from autotransfer.search.recipe import prior_ranges
from autotransfer.search.records import TrialRecord, best_record, trial_records, usable
from autotransfer.search.settings import SearchSettings
from autotransfer.search.space import load_search_space
from autotransfer.search.storage import open_storage, open_studies
from autotransfer.transfer.profile import Prior

ONE_TRIAL = """
backbones: [test_efficientnet]
resolutions: [32]
strategies: [finetune_all]
grow_with_budget: false
finetune: {candidates: 1, max_trials: 1, epochs: 2, batch_size: 8}
"""
# where and how long a trial ran, the backend's own words for its epochs and who queued it (the Optuna
# backend seeds its first trials from the recipe): the rest must be equal
WHERE_AND_WHEN = {"seconds", "epoch_seconds", "checkpoint_dir", "worker", "backend", "ray_trial_id", "node_id",
                  "node_ids", "ray_attempts", "epochs_why", "seeded_by"}  # fmt: skip


def _one_trial_plan(fit_env, tmp_path, space_text: str = ONE_TRIAL) -> tuple[RunContext, FinetunePlan]:
    """A run context and fine-tuning plan of one candidate, as run.py makes them, on the fixture's data."""
    space_file = tmp_path / "one.yaml"
    space_file.write_text(space_text)
    space = load_search_space(space_file)
    settings = SearchSettings(space, 600.0, tmp_path / "run", device="cpu")
    context = RunContext(fit_env["data"], settings, Progress(600.0, verbose=0))
    settings.out.mkdir()
    context.storage = open_storage(None, settings.out)
    studies = open_studies(context.storage, space, 0, None, None)
    objective = Objective(metric="accuracy", reason="test")
    candidates = [Candidate("test_efficientnet", 32, "head")]
    return context, FinetunePlan(studies, candidates, prior_ranges(space, Prior()), Prior(), objective)


def test_a_trial_is_recorded_alike_by_both_backends(fit_env, tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: False)  # one trial: no leftover-time rerun
    context, plan = _one_trial_plan(fit_env, tmp_path)
    space, studies = context.settings.space, plan.studies
    OptunaBackend().run(plan, context)
    [optuna_record] = trial_records("finetune", studies.finetune)
    params = studies.finetune.trials[0].params

    results: list[dict] = []  # what Tune's callback collects of the trial's results (ray_backend._recorder)
    reporter = RayReporter(lambda metrics: results.append({**metrics, "time_total_s": 1.0}), trial_id="t0",
                           node_id="node", epochs=space.epochs, stop_at=math.inf)  # fmt: skip
    trial_context = pickle.loads(pickle.dumps(_trial_context(plan, context)))  # as Ray sends it to a worker
    run_ray_trial(params, trial_context, reporter)
    ray_study = optuna.create_study(direction="maximize")
    ended = SimpleNamespace(config=params, metrics_dataframe=pd.DataFrame(results), error=None, restarts=0)
    _record(ray_study, space, plan, ended, "t0")
    [ray_record] = trial_records("finetune", ray_study)

    assert optuna_record.status == "complete" and optuna_record.epochs_run == 2 and optuna_record.metric == "accuracy"
    assert ray_record.backend == "ray" and ray_record.node_id == "node"
    for field in dataclasses.fields(TrialRecord):
        if field.name not in WHERE_AND_WHEN:
            assert getattr(ray_record, field.name) == getattr(optuna_record, field.name), field.name
    assert optuna_record.val_score is not None and optuna_record.val_accuracy is not None


def test_a_trial_the_budget_stopped_is_not_called_pruned(fit_env, tmp_path, monkeypatch):
    """Issue 26's fourth trial: a fine-tuning trial stopped by the time budget showed `status=pruned`."""
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: False)
    fits = iter([True])  # room for the first epoch (the trial starts), none after it
    monkeypatch.setattr(planner, "next_epoch_fits", lambda *args: next(fits, False))
    context, plan = _one_trial_plan(fit_env, tmp_path)
    OptunaBackend().run(plan, context)
    [record] = trial_records("finetune", plan.studies.finetune)
    assert record.status == "stopped (budget)" and record.stopped == "time budget: stopped after epoch 1"
    assert usable(record) and record.epochs_run == 1  # its best epoch counts, as a pruned trial's does
    board = pd.DataFrame([record.row()])
    assert trial_counts(board)["text"] == "0 probes, 1 fine-tuning trial (1 stopped by the budget)"
    line = Progress(600.0, verbose=0).trial_line(record.row())
    assert "⏱" in line and "✂" not in line and "(time budget: stopped after epoch 1)" in line


def test_a_trial_that_ran_every_epoch_it_got_is_complete_whatever_time_is_left(fit_env, tmp_path, monkeypatch):
    """The long-cpu glyphs cell: a trial given 5 epochs read "time budget: stopped after epoch 5" and was recorded
    as stopped by the budget: after its last epoch the reporter asked whether a next one fitted."""
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: False)
    fits = iter([True, True])  # the start and after epoch 1; none after epoch 2, the last
    monkeypatch.setattr(planner, "next_epoch_fits", lambda *args: next(fits, False))
    context, plan = _one_trial_plan(fit_env, tmp_path)
    OptunaBackend().run(plan, context)
    [record] = trial_records("finetune", plan.studies.finetune)
    assert record.status == "complete" and record.stopped is None and record.epochs_run == record.epochs_planned == 2


def test_a_trial_the_trainer_stopped_early_says_so(fit_env, tmp_path, monkeypatch):
    """The seventh fresh-user trial: a trial with epochs_run 3 of 8 and "8, the most this budget gives a trial"
    had no `stopped` reason; its early stop was only in fit.log."""
    import dataclasses

    from autotransfer.search import trial_body

    real = trial_body.finetune
    monkeypatch.setattr(  # the trainer stops after one of the two epochs it was given, as its early stop does
        trial_body,
        "finetune",
        lambda dataset, backbone, config, **kw: real(dataset, backbone, dataclasses.replace(config, epochs=1), **kw),
    )
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: False)
    context, plan = _one_trial_plan(fit_env, tmp_path)
    OptunaBackend().run(plan, context)
    [record] = trial_records("finetune", plan.studies.finetune)
    assert record.status == "complete" and record.epochs_run == 1 and record.epochs_planned == 2
    assert record.stopped.startswith("early stop after epoch 1: the best was epoch 1")


def test_the_leftover_time_runs_a_seed_still_queued_and_says_so(fit_env, tmp_path, caplog):
    """Issue 26's fourth trial: "leftover time: trial 0's configuration again" was followed by another trial's
    line: a seeded trial queued past max_trials ran first (Optuna runs the oldest queued trial), and the
    configuration the line named stayed queued, never run. The seed runs, the line says so, nothing is
    left queued."""
    two_seeds = ONE_TRIAL.replace("strategies: [finetune_all]", "strategies: [finetune_all, finetune_top]")
    context, plan = _one_trial_plan(fit_env, tmp_path, two_seeds)  # max_trials 1: the second seed stays queued
    with caplog.at_level("INFO", logger="autotransfer.search.finetune_stage"):
        OptunaBackend().run(plan, context)
    lines = [r.getMessage() for r in caplog.records]
    [said] = [i for i, line in enumerate(lines) if line.startswith("leftover time")]
    trials = plan.studies.finetune.trials
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)
    assert trials[1].user_attrs["seeded_by"] == "profile prior"
    assert lines[said].endswith("trial 1 (profile prior), queued and not run yet")
    assert lines[said + 1].startswith("trial 1 (")  # the next line is the trial it said runs


def test_leftover_time_trains_the_best_on_from_its_checkpoint_when_a_longer_rerun_does_not_fit(
    fit_env, tmp_path, monkeypatch, caplog
):
    """Issue 28's glyphs cell: the first trial (2 epochs, still improving) ended with a third of the budget
    left, too little to train its configuration again for more epochs and refit that on train+val, so the
    time went unused. The best now trains on from its checkpoint for the epochs its refit would have taken:
    its first epochs are not run again, and its reserve holds no refit."""
    one_epoch = ONE_TRIAL.replace("epochs: 2", "epochs: 1")  # trial 0's best epoch is its last
    context, plan = _one_trial_plan(fit_env, tmp_path, one_epoch)
    affordable = iter([1, 2])  # a rerun from scratch: 1 epoch (no more than trial 0 had); trained on: 2 more
    monkeypatch.setattr(planner, "leftover_epochs", lambda *args: next(affordable))
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: True)
    reserves: list[bool] = []
    monkeypatch.setattr(RunContext, "reserve", lambda self, best, refit=True: reserves.append(refit) or 0.0)
    with caplog.at_level("INFO", logger="autotransfer.search.finetune_stage"):
        OptunaBackend().run(plan, context)
    first, longer = trial_records("finetune", plan.studies.finetune)
    assert first.epochs_run == 1 and first.best_epoch == 0
    assert longer.continues == 0 and longer.seeded_by == "leftover time (trial 0)" and longer.status == "complete"
    assert (
        longer.epochs_run == 3
        and longer.epochs_planned == 3
        and longer.epochs_why == "leftover time: trial 0 trained on"
    )
    assert longer.hyperparameters(("candidate", "strategy", "head_lr")) == first.hyperparameters(
        ("candidate", "strategy", "head_lr")
    )
    assert longer.val_score >= first.val_score  # trial 0's best epoch is among its epochs
    history = json.loads(Path(longer.checkpoint_dir, "best.json").read_text())["history"]
    first_history = json.loads(Path(first.checkpoint_dir, "best.json").read_text())["history"]
    assert len(history) == 3 and history[0] == first_history[0]  # epoch 0 not run again: its seconds are trial 0's
    # the epochs it gets, and each epoch's check of the budget, leave no reserve for a refit
    assert reserves.count(False) == 2
    assert "trial 0 trained on from its checkpoint for 2 more epochs, as trial 1" in caplog.text


def test_leftover_time_does_not_train_on_a_best_that_stopped_improving(fit_env, tmp_path, monkeypatch, caplog):
    context, plan = _one_trial_plan(fit_env, tmp_path, ONE_TRIAL.replace("epochs: 2", "epochs: 1"))
    monkeypatch.setattr(planner, "leftover_epochs", lambda *args: 1)
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: True)

    def best_before_its_last_epoch(rows):  # trial 0 as if it had run a second epoch that scored lower
        best = best_record(rows)
        return best and dataclasses.replace(best, epochs_run=2)

    monkeypatch.setattr(finetune_stage, "best_record", best_before_its_last_epoch)
    with caplog.at_level("INFO", logger="autotransfer.search.finetune_stage"):
        OptunaBackend().run(plan, context)
    assert len(plan.studies.finetune.trials) == 1
    assert context.search_ends[0] == "fine-tuning: max_trials (1) reached"
    assert context.search_ends[1].endswith("trial 0 not trained on (its best epoch was not its last)")


def test_queued_trials_that_cannot_be_judged_do_not_block_training_the_best_on(fit_env, tmp_path, monkeypatch):
    """The long-cpu glyphs cell at d9cb4c8: "leftover time (7m51s): no more epochs for trial 0 than it had, and a
    queued trial that would not fit": a seed queued past the search (13m19s to judge) kept the best from training
    on, as Optuna runs the oldest queued trial first. Such trials are now recorded as not started, and the best
    trains on."""
    two_seeds = ONE_TRIAL.replace("strategies: [finetune_all]", "strategies: [finetune_all, finetune_top]")
    context, plan = _one_trial_plan(fit_env, tmp_path, two_seeds.replace("epochs: 2", "epochs: 1"))
    affordable = iter([1, 2])  # a rerun from scratch: no more epochs than trial 0 had; trained on: 2 more
    monkeypatch.setattr(planner, "leftover_epochs", lambda *args: next(affordable))
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: True)
    OptunaBackend().run(plan, context)
    first, seed, longer = trial_records("finetune", plan.studies.finetune)
    assert seed.seeded_by == "profile prior" and seed.status == "not started" and not seed.epochs_run
    assert seed.stopped.startswith("time budget: not started (no room to judge it; leftover time (")
    assert seed.stopped.endswith("goes to trial 0)")
    assert longer.continues == 0 and longer.status == "complete" and longer.epochs_run == 3


def test_a_leftover_trial_that_ends_early_says_so_among_the_reasons_for_unused_time(fit_env, tmp_path, monkeypatch):
    """The sixth fresh-user trial: "unused: 2m41s (89% of the budget): fine-tuning: max_trials (2) reached" while
    the leftover rerun had stopped at 18 of its 40 epochs: the reason left the rerun out."""
    context, plan = _one_trial_plan(fit_env, tmp_path, ONE_TRIAL.replace("epochs: 2", "epochs: 1"))
    affordable = iter([1, 3])  # trained on for 3 more epochs
    monkeypatch.setattr(planner, "leftover_epochs", lambda *args: next(affordable))
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: True)
    fits = iter([True, True, True])  # trial 0's start; trial 1's start and its first epoch; then no room
    monkeypatch.setattr(planner, "next_epoch_fits", lambda *args: next(fits, False))
    OptunaBackend().run(plan, context)
    assert (
        context.search_ends[-1] == "leftover time: trial 1 ran 3 of its 4 epochs (time budget: stopped after epoch 3)"
    )
