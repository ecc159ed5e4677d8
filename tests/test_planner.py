"""The budget planner, the strategy table and the candidate type: pure functions, no model."""

import pytest

from autotransfer.errors import AutoTransferError
from autotransfer.search import planner
from autotransfer.search.candidates import Candidate
from autotransfer.search.records import TrialRecord, best_record
from autotransfer.transfer.strategies import FINETUNE_STRATEGIES, PROBE_STRATEGIES, QUADRANT_STRATEGIES, get_strategy


def test_reserve_covers_saving_for_probes_and_the_refit_for_finetuning():
    assert (
        planner.reserve(None, 100, 20)
        == planner.reserve(TrialRecord(stage="probe", trial=0, status="complete"), 100, 20)
        == planner.SAVE_SECONDS + 3
    )
    finetuned = TrialRecord(stage="finetune", trial=0, status="complete", epoch_seconds=10.0, best_epoch=2)
    # 3 epochs on train+val (1.2x the train split) of 10 s each, plus 3 s, plus saving
    assert planner.reserve(finetuned, 100, 20) == pytest.approx(planner.SAVE_SECONDS + 10 * 1.2 * 3 + 3)


def test_epoch_estimate_is_cheaper_frozen_and_dearer_augmented():
    plain = planner.estimate_epoch_seconds(10.0, 1000, 800, freeze_fraction=0.0, augmented=False)
    assert plain == pytest.approx(10.0 / 1000 * (3 * 800 + 200) + 0.5)
    assert planner.estimate_epoch_seconds(10.0, 1000, 800, 0.5, False) < plain
    assert planner.estimate_epoch_seconds(10.0, 1000, 800, 0.0, True) > plain


@pytest.mark.parametrize(
    ("left", "fits"),
    [(planner.SAVE_SECONDS + 3 + planner.PROBE_SECONDS + 10, True), (planner.SAVE_SECONDS + 10, False)],
)
def test_a_probe_pair_starts_only_when_it_and_the_reserve_fit(left, fits):
    assert planner.probe_pair_fits(left, planner.reserve(None, 0, 0), 10.0) is fits


def test_the_first_pair_always_starts_so_a_budget_that_passed_the_minimum_gets_a_candidate():
    expected = planner.pair_seconds(20.0, [], probe_fits=6)  # 3 CV folds x 2 class weightings
    assert expected == pytest.approx(20.0 * planner.PROBE_OVERHEAD * 3)
    assert planner.pair_needs(expected, first=True) == 0.0
    assert planner.pair_needs(expected, first=False) == expected
    reserve = planner.reserve(None, 0, 0)
    assert planner.probe_pair_fits(reserve + planner.PROBE_SECONDS, reserve, planner.pair_needs(expected, True))
    assert not planner.probe_pair_fits(reserve, reserve, planner.pair_needs(expected, True))  # nothing left


def test_trial_epoch_and_refit_rules():
    assert planner.finetune_trial_fits(100, 20, 2, 40) and not planner.finetune_trial_fits(100, 30, 2, 40)
    assert planner.next_epoch_fits(100, 50, 45) and not planner.next_epoch_fits(100, 50, 46)
    assert planner.refit_fits(100, 70) and not planner.refit_fits(100, 80)
    assert planner.cheap_share(True) == 0.5 and planner.cheap_share(False) == 1.0


def test_candidate_round_trips_through_its_study_key():
    candidate = Candidate("tv:alexnet", 224, "pool5")
    assert candidate.key == "tv:alexnet@224/pool5" and Candidate.parse(candidate.key) == candidate
    assert Candidate.parse("a@b@96/blocks.4").backbone == "a@b" and candidate.pair == "tv:alexnet@224"
    with pytest.raises(ValueError):
        Candidate.parse("no-resolution")


def test_strategy_table_covers_the_recipe_matrix():
    assert set(PROBE_STRATEGIES) == {"linear_probe", "mid_layer_probe"}
    assert set(FINETUNE_STRATEGIES) == {"lp_ft", "finetune_top", "finetune_all", "train_all"}
    assert all(get_strategy(s) for strategies in QUADRANT_STRATEGIES.values() for s in strategies)
    assert get_strategy("linear_probe").frozen_groups(8, 3) == 8
    assert get_strategy("finetune_top").frozen_groups(8, 3) == 3
    assert get_strategy("train_all").frozen_groups(8, 3) == 0 and not get_strategy("train_all").tunes_backbone_lr
    assert get_strategy("lp_ft").starts_from_probe
    with pytest.raises(AutoTransferError, match="Unknown strategy"):
        get_strategy("magic")


def test_best_record_prefers_accuracy_then_the_cheaper_configuration(tmp_path):
    (tmp_path / "best.json").write_text("{}")
    rows = [
        TrialRecord(stage="finetune", trial=0, status="complete", val_score=0.9, resolution=64,
                    checkpoint_dir=str(tmp_path)),
        TrialRecord(stage="probe", trial=3, status="complete", val_score=0.9, resolution=96),
        TrialRecord(stage="probe", trial=1, status="complete", val_score=0.9, resolution=64),
        TrialRecord(stage="finetune", trial=1, status="complete", val_score=0.95, resolution=64,
                    checkpoint_dir=str(tmp_path / "gone")),  # its weights are missing: not usable
        TrialRecord(stage="finetune", trial=2, status="fail", val_score=None),
    ]  # fmt: skip
    best = best_record(rows)
    assert (best.stage, best.trial) == ("probe", 1)
    assert best_record([rows[-1]]) is None


def test_an_interrupted_trial_says_it_was_queued_again():
    import optuna

    from autotransfer.search.finetune_stage import retry_later
    from autotransfer.search.records import trial_records

    study = optuna.create_study(direction="maximize")
    trial = study.ask({"head_lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # what Optuna does on Ctrl-C before re-raising it
    retry_later(study, {"number": trial.number, "params": trial.params})
    rows = {r.trial: r for r in trial_records("finetune", study)}
    assert rows[0].status == "fail" and rows[0].error == "interrupted; queued again as trial 1"
    assert rows[1].status == "waiting" and rows[1].retry_of == 0


def test_a_fine_tuning_epoch_is_estimated_per_strategy_never_below_one_measured_on_its_candidate():
    """The fresh-user trial: an `lp_ft` epoch (partly frozen) measured on a candidate stood for that
    candidate's `finetune_all` epochs; one then took 53 s with 49 s left (7.8% over the budget)."""
    from types import SimpleNamespace

    from autotransfer.search.finetune_stage import epoch_estimate

    data = type("Data", (), {"__len__": lambda self: 1000, "indices": lambda self, split: range(800)})()
    key = Candidate("tf_efficientnet_lite1", 224, "blocks.5").key
    context = SimpleNamespace(dataset=lambda resolution: data, training_forward_seconds=lambda name, resolution: None)
    full = {"candidate": key, "strategy": "finetune_all"}
    planned = epoch_estimate(context, full, {})
    assert planned == pytest.approx(planner.estimate_epoch_seconds(0.02 * 1000, 1000, 800, 0.0, False))
    assert epoch_estimate(context, full, {(key, "lp_ft"): planned / 4}) == planned  # a cheaper strategy's epoch
    assert epoch_estimate(context, full, {(key, "lp_ft"): planned * 2}) == planned * 2  # never below a measured one
    assert epoch_estimate(context, full, {(key, "finetune_all"): 7.0, (key, "lp_ft"): 9.0}) == 7.0  # its own


def test_a_stopped_trial_scores_its_best_epoch_and_never_shows_another_metric_as_accuracy(tmp_path):
    """The second fresh-user trial: a trial the budget stopped showed its last epoch's macro F1 (0.5398) as
    both its score and its accuracy; its kept best epoch scored 0.5415 with accuracy 0.5536."""
    import json

    import optuna

    from autotransfer.search.records import trial_records

    study = optuna.create_study(direction="maximize")
    (tmp_path / "best.json").write_text(json.dumps({"best_epoch": 4, "val_accuracy": 0.5536, "val_score": 0.5415}))
    for checkpoint in (tmp_path, tmp_path / "missing"):
        trial = study.ask()
        for epoch, value in enumerate([0.50, 0.5415, 0.5398], 1):
            trial.report(value, epoch)
        trial.set_user_attr("best_val_score", 0.5415)
        trial.set_user_attr("metric", "f1_macro")
        trial.set_user_attr("checkpoint_dir", str(checkpoint))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # Optuna keeps the last epoch's 0.5398
    rows = trial_records("finetune", study)
    assert [r.val_score for r in rows] == [0.5415, 0.5415]
    assert rows[0].val_accuracy == 0.5536 and rows[1].val_accuracy is None  # not the F1 score


def test_a_trial_too_short_to_be_judged_is_not_started():
    """1,600 training images in batches of 32 are 50 updates an epoch: two epochs (100 updates) judge a
    trial; 400 images need 8, capped by the epochs a trial may have."""
    assert planner.epochs_to_judge(min_epochs=1, n_train=1600, batch_size=32, max_epochs=8) == 2
    assert planner.epochs_to_judge(min_epochs=1, n_train=400, batch_size=32, max_epochs=20) == 8
    assert planner.epochs_to_judge(min_epochs=1, n_train=400, batch_size=32, max_epochs=6) == 6
    assert planner.epochs_to_judge(min_epochs=3, n_train=100_000, batch_size=32, max_epochs=8) == 3
    judge, epoch, reserve = 2, 30.0, 20.0
    assert not planner.finetune_trial_fits(reserve + 1.5 * epoch, reserve, judge, epoch)  # one epoch would fit
    assert planner.finetune_trial_fits(reserve + 2 * epoch, reserve, judge, epoch)


def test_the_search_grows_with_the_budget():
    """A longer budget: more epochs per trial, more trials, more backbones, larger sizes on a CPU."""
    shapes = [
        planner.scaled_plan(b, epochs=8, max_trials=40, max_backbones=3, cuda=False) for b in (180, 600, 1800, 7200)
    ]
    assert [s.epochs for s in shapes] == [8, 8, 14, 28]
    assert [s.max_trials for s in shapes] == [40, 40, 120, 480]
    assert [s.max_backbones for s in shapes] == [3, 3, 4, 6]
    assert [s.max_resolution for s in shapes] == [224, 224, 288, 448]
    assert (
        planner.scaled_plan(10 * 3600, epochs=8, max_trials=40, max_backbones=3, cuda=False).epochs
        == planner.MAX_EPOCHS
    )
    fixed = planner.scaled_plan(7200, epochs=8, max_trials=40, max_backbones=3, cuda=False, grow=False)
    assert (fixed.epochs, fixed.max_trials, fixed.max_backbones, fixed.max_resolution) == (8, 40, 3, 224)


def test_a_trial_gets_a_third_of_the_time_left_but_never_fewer_epochs_than_judge_it():
    assert planner.trial_epochs(max_epochs=20, judge=2, left=910.0, reserve_seconds=10.0, epoch_seconds=10.0) == 20
    assert planner.trial_epochs(max_epochs=20, judge=2, left=310.0, reserve_seconds=10.0, epoch_seconds=10.0) == 10
    assert planner.trial_epochs(max_epochs=20, judge=2, left=40.0, reserve_seconds=10.0, epoch_seconds=10.0) == 2


def test_leftover_time_goes_to_more_epochs_when_over_a_tenth_of_the_budget_would_be_unused():
    assert planner.unused_too_much(left=100.0, budget=600.0, reserve_seconds=20.0)  # 80 s > 60 s
    assert not planner.unused_too_much(left=70.0, budget=600.0, reserve_seconds=20.0)
    assert planner.leftover_epochs(left=105.0, reserve_seconds=12.0, epoch_seconds=10.0) == 8  # 93 s, 11 s each
    assert planner.leftover_epochs(left=10.0, reserve_seconds=12.0, epoch_seconds=10.0) == 0


def test_the_plan_says_how_its_budget_compares_with_the_reference():
    """The fresh-user trial: a 120 s budget was said to be '1.0x the reference 600 s'."""
    short = planner.scaled_plan(120.0, epochs=8, max_trials=40, max_backbones=3, cuda=False)
    assert "1.0x" not in short.why and "within the reference 600 s" in short.why
    long = planner.scaled_plan(1800.0, epochs=8, max_trials=40, max_backbones=3, cuda=False)
    assert "= 3.0x the reference 600 s" in long.why
