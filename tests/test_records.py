"""Trial records (search/records.py): one conversion from an Optuna trial's ``user_attrs``, one to the
leaderboard row, and a clear error for a record this version does not know."""

import optuna
import pytest

from autotransfer.errors import AutoTransferError
from autotransfer.search.records import RECORD_FORMAT, TrialRecord, set_trial_attrs, trial_attrs, trial_records


def _study_with(attrs: dict, value: float = 0.8) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    return study


def test_what_a_stage_writes_comes_back_as_typed_fields_and_as_the_leaderboard_row():
    attrs = trial_attrs(stage="probe", backbone="resnet18", resolution=64, tap="head", head="softmax", C=1.0,
                        val_accuracy=0.75, metric="balanced_accuracy", seconds=2.5)  # fmt: skip
    (record,) = trial_records("probe", _study_with(attrs))
    assert (record.stage, record.trial, record.status) == ("probe", 0, "complete")
    assert (record.backbone, record.resolution, record.C) == ("resnet18", 64, 1.0)
    assert record.val_score == 0.8 and record.val_accuracy == 0.75  # the metric's score, then the accuracy
    row = record.row()
    assert row["val_score"] == 0.8 and row["val_accuracy"] == 0.75 and "freeze_groups" not in row
    assert TrialRecord.from_row({**row, "chosen": True, "test_accuracy": None, "epochs_run": float("nan")}) == record


def test_a_misspelt_field_fails_where_it_is_written():
    with pytest.raises(AutoTransferError, match="epoch_second"):
        trial_attrs(epoch_second=3.0)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(AutoTransferError, match="freeze_group\\b"):
        set_trial_attrs(trial, freeze_group=2)


def test_a_run_written_with_other_fields_is_refused_with_one_clear_message():
    """A renamed key used to read as missing: a stopped trial once showed its macro F1 as its accuracy."""
    study = _study_with({"stage": "finetune", "best_val_acc": 0.5})
    with pytest.raises(AutoTransferError) as caught:
        trial_records("finetune", study)
    message = str(caught.value)
    assert "best_val_acc" in message and f"format {RECORD_FORMAT}" in message and "new --out" in message
    with pytest.raises(AutoTransferError, match="leaderboard.csv"):
        TrialRecord.from_row({"stage": "probe", "trial": 0, "status": "complete", "accuracy": 0.9})


def test_the_runs_objective_and_auto_choice_round_trip_and_refuse_other_versions_fields():
    from autotransfer.search.auto_space import AutoChoice
    from autotransfer.search.objective import Objective

    objective = Objective(metric="f1_macro", reason="asked for", class_weights=("none", "balanced"), cv_folds=3)
    assert Objective.from_json(objective.to_json()) == objective
    with pytest.raises(AutoTransferError, match="new --out"):
        Objective.from_json({**objective.to_json(), "weights": ["none"]})
    choice = AutoChoice(backbones=("a", "b"), resolutions=(64,), native_side=80, profile_resolution=64)
    assert AutoChoice.from_json(choice.to_json()) == choice
    with pytest.raises(AutoTransferError, match="another version"):
        AutoChoice.from_json({**choice.to_json(), "sizes": [64]})


def test_each_score_says_where_it_was_measured():
    """The fresh-user trial: probes' CV means and fine-tuning's validation scores shared the "val_score" column
    with nothing to tell them apart. The names stay (AutoGluon's ``score_val`` is out-of-fold for bagged
    models too); ``score_source`` says which, derived from the stage and the run's objective."""
    attrs = trial_attrs(stage="probe", backbone="resnet18", resolution=64, tap="head", seconds=2.5)
    cv_run = _study_with(attrs)
    cv_run.set_user_attr("objective", {"cv_folds": 5})
    (probe,) = trial_records("probe", cv_run)
    assert probe.score_source == "cv" and probe.row()["score_source"] == "cv"
    (finetuned,) = trial_records("finetune", cv_run)  # fine-tuning trials are always scored on the val split
    assert finetuned.score_source == "val"
    split_run = _study_with(attrs)
    split_run.set_user_attr("objective", {"cv_folds": 0})
    assert trial_records("probe", split_run)[0].score_source == "val"
    assert TrialRecord.from_row({**probe.row(), "chosen": False, "test_accuracy": None}) == probe
