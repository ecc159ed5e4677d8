"""One fine-tuning trial body for both backends: the same trial run through the Optuna backend and through
the Ray backend's reporter (its results turned into the study's trial as the driver does) is recorded alike."""

import dataclasses
import math
import pickle
from types import SimpleNamespace

import optuna
import pandas as pd

from autotransfer.report.outputs import trial_counts
from autotransfer.report.progress import Progress
from autotransfer.search import planner
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.search.finetune_stage import FinetunePlan, OptunaBackend
from autotransfer.search.objective import Objective
from autotransfer.search.ray_backend import RayReporter, _record, _trial_context, run_ray_trial
from autotransfer.search.recipe import prior_ranges
from autotransfer.search.records import TrialRecord, trial_records, usable
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
