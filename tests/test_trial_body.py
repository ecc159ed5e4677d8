"""One fine-tuning trial body for both backends: the same trial run through the Optuna backend and through
the Ray backend's reporter (its results turned into the study's trial as the driver does) is recorded alike."""

import dataclasses
import math
import pickle
from types import SimpleNamespace

import optuna
import pandas as pd

from autotransfer.report.progress import Progress
from autotransfer.search import planner
from autotransfer.search.candidates import Candidate
from autotransfer.search.context import RunContext
from autotransfer.search.finetune_stage import FinetunePlan, OptunaBackend
from autotransfer.search.objective import Objective
from autotransfer.search.ray_backend import RayReporter, _record, _trial_context, run_ray_trial
from autotransfer.search.recipe import prior_ranges
from autotransfer.search.records import TrialRecord, trial_records
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


def test_a_trial_is_recorded_alike_by_both_backends(fit_env, tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "unused_too_much", lambda *args: False)  # one trial: no leftover-time rerun
    space_file = tmp_path / "one.yaml"
    space_file.write_text(ONE_TRIAL)
    space = load_search_space(space_file)
    settings = SearchSettings(space, 600.0, tmp_path / "run", device="cpu")
    context = RunContext(fit_env["data"], settings, Progress(600.0, verbose=0))
    settings.out.mkdir()
    context.storage = open_storage(None, settings.out)
    studies = open_studies(context.storage, space, 0, None, None)
    objective = Objective(metric="accuracy", reason="test")
    candidates = [Candidate("test_efficientnet", 32, "head")]
    plan = FinetunePlan(studies, candidates, prior_ranges(space, Prior()), Prior(), objective)
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
