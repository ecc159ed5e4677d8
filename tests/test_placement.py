"""The cheap stage corrects the prior: the probes' placement, and the fine-tuning seeds it changes."""

import optuna

from autotransfer.search.candidates import Candidate
from autotransfer.search.finetune_stage import FinetunePlan, seed_trials
from autotransfer.search.placement import corrected_prior, measured_placement
from autotransfer.search.space import load_search_space

PROFILE = {"quadrant": "large-similar", "prior": {"strategies": ["finetune_all", "finetune_top", "linear_probe"]}}


def _probes(head: float, mid: float) -> list[dict]:
    return [{"tap": "head", "val_score": head}, {"tap": "blocks.4", "val_score": mid}, {"tap": "blocks.2"}]


def test_top_features_that_lose_to_a_lower_tap_read_as_different():
    placement = measured_placement(PROFILE, _probes(head=0.70, mid=0.82), pixel_score=0.40)
    assert placement["quadrant"] == "large-different" and placement["differs"]
    assert placement["a_priori"] == "large-similar" and "too ImageNet-specific" in placement["rationale"]
    kept = measured_placement(PROFILE, _probes(head=0.815, mid=0.82), pixel_score=0.40)
    assert kept["quadrant"] == "large-similar" and not kept["differs"]  # within the tie margin


def test_features_no_better_than_pixels_read_as_different():
    placement = measured_placement(PROFILE, _probes(head=0.50, mid=0.45), pixel_score=0.55)
    assert placement["quadrant"] == "large-different" and "do not beat raw pixels" in placement["rationale"]


def test_no_placement_without_both_kinds_of_tap():
    assert measured_placement(PROFILE, [{"tap": "head", "val_score": 0.9}], 0.5) is None
    assert corrected_prior(PROFILE, None) == PROFILE["prior"]


def _first_seed(prior: dict) -> dict:
    space = load_search_space("default")
    study = optuna.create_study(direction="maximize")
    plan = FinetunePlan(None, [Candidate("test_efficientnet", 32, "head")], dict(space.ranges), prior,
                        {"class_weights": ["none"]})  # fmt: skip
    seed_trials(study, space, plan)
    return study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0].system_attrs["fixed_params"]


def test_the_corrected_quadrant_changes_the_first_fine_tuning_trials():
    a_priori = _first_seed(PROFILE["prior"])
    placement = measured_placement(PROFILE, _probes(head=0.70, mid=0.82), pixel_score=0.40)
    corrected = _first_seed(corrected_prior(PROFILE, placement))
    assert a_priori["strategy"] == "finetune_all"  # large-similar: fine-tune the whole network
    assert corrected["strategy"] == "train_all"  # large-different: pretrained init, train everything
