"""The final choice on small data (search/selection.py): the one-standard-error rule."""

import pytest

from autotransfer.search.objective import Objective
from autotransfer.search.records import TrialRecord, best_record
from autotransfer.search.selection import choose_final, standard_error


def _probe(trial: int, score: float, resolution: int = 128) -> TrialRecord:
    return TrialRecord(stage="probe", trial=trial, status="complete", val_score=score, resolution=resolution,
                       strategy="mid_layer_probe")  # fmt: skip


def _finetuned(tmp_path, trial: int, score: float, resolution: int = 128) -> TrialRecord:
    checkpoint = tmp_path / f"trial-{trial}"
    checkpoint.mkdir()
    (checkpoint / "best.json").write_text("{}")
    return TrialRecord(stage="finetune", trial=trial, status="complete", val_score=score, resolution=resolution,
                       strategy="lp_ft", checkpoint_dir=str(checkpoint))  # fmt: skip


def test_the_standard_error_is_binomial_for_proportions_only():
    assert standard_error(0.92, 50, "accuracy") == pytest.approx((48 / 54 * 6 / 54 / 54) ** 0.5)  # 0.043
    assert standard_error(0.92, 5000, "accuracy") == pytest.approx((0.92 * 0.08 / 5000) ** 0.5, rel=0.01)
    assert standard_error(0.92, 50, "balanced_accuracy") == standard_error(0.92, 50, "f1_macro") > 0
    assert standard_error(0.92, 50, "log_loss") == standard_error(0.92, 50, "roc_auc") == 0.0
    assert standard_error(0.5, 0, "accuracy") == 0.0


def test_on_small_data_a_cross_validated_probe_within_one_standard_error_beats_the_top_finetuned_trial(tmp_path):
    # animal-mnist 25/class, seed 1 (benchmarks/results/cpu-small): the best of 6 lp_ft trials read 0.92 on
    # 50 validation images, the best cross-validated probe 0.884 on 250 (train+val)
    rows = [_finetuned(tmp_path, 0, 0.92), _finetuned(tmp_path, 1, 0.90), _probe(0, 0.884), _probe(1, 0.85, 64)]
    small = Objective(metric="accuracy", reason="", cv_folds=3)
    chosen, why = choose_final(rows, small, lambda resolution: (200, 50))
    assert chosen.stage == "probe" and chosen.val_score == 0.884  # 0.85 is more than 0.043 under 0.92
    assert "one-standard-error" in why and "0.9200 ± 0.0428 on 50 images" in why
    chosen, why = choose_final(rows, Objective(metric="accuracy", reason="", cv_folds=0), lambda resolution: (200, 50))
    assert chosen.val_score == 0.92 and why == ""  # enough data: the plain maximum
    chosen, why = choose_final(rows, Objective(metric="log_loss", reason="", cv_folds=3), lambda resolution: (200, 50))
    assert chosen.val_score == 0.92 and why == ""


def test_a_perfect_score_on_a_few_validation_images_is_not_certain(tmp_path):
    """A 90-image run: a fine-tuned trial read all 17 validation images right after one epoch (1.000), the
    best probe 0.963 by 3-fold CV on train+val. 17 of 17 is not proof of a better model: the probe, within
    one standard error of it, is kept."""
    rows = [_finetuned(tmp_path, 0, 1.0), _probe(0, 0.963)]
    chosen, why = choose_final(rows, Objective(metric="accuracy", reason="", cv_folds=3), lambda resolution: (73, 17))
    assert chosen.stage == "probe" and "1.0000 ± 0.0641 on 17 images" in why
    rows = [_finetuned(tmp_path, 1, 1.0), _probe(1, 0.90)]  # 0.10 under: more than one standard error
    assert (
        choose_final(rows, Objective(metric="accuracy", reason="", cv_folds=3), lambda r: (73, 17))[0].stage
        == "finetune"
    )


def test_a_top_probe_keeps_its_place_when_nothing_cheaper_is_near(tmp_path):
    rows = [_probe(0, 0.90), _probe(1, 0.80, 64), _finetuned(tmp_path, 0, 0.895)]
    chosen, why = choose_final(
        rows, Objective(metric="accuracy", reason="", cv_folds=3), lambda resolution: (2000, 500)
    )
    assert chosen is rows[0] and why == ""


def test_within_the_margin_smaller_inputs_win_then_the_higher_score():
    rows = [_probe(0, 0.90, 128), _probe(1, 0.88, 64), _probe(2, 0.89, 64)]
    assert best_record(rows).trial == 0
    assert best_record(rows, margin=0.015).trial == 2  # 0.88 is outside 0.90 - 0.015
    assert best_record(rows, margin=0.03).trial == 2  # both 64-px probes are near: the higher score
