"""The cheap stage corrects the prior: the probes' placement, and the fine-tuning seeds it changes."""

import optuna

from autotransfer.search.candidates import Candidate
from autotransfer.search.finetune_stage import FinetunePlan, seed_trials
from autotransfer.search.objective import Objective
from autotransfer.search.placement import corrected_prior, measured_placement
from autotransfer.search.records import TrialRecord
from autotransfer.search.space import load_search_space

PROFILE = {"quadrant": "large-similar", "prior": {"strategies": ["finetune_all", "finetune_top", "linear_probe"]}}


def _probe(trial: int, tap: str, score: float | None) -> TrialRecord:
    return TrialRecord(stage="probe", trial=trial, status="complete", tap=tap, val_score=score)


def _probes(head: float, mid: float) -> list[TrialRecord]:
    return [_probe(0, "head", head), _probe(1, "blocks.4", mid), _probe(2, "blocks.2", None)]


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
    assert measured_placement(PROFILE, [_probe(0, "head", 0.9)], 0.5) is None
    assert corrected_prior(PROFILE, None) == PROFILE["prior"]


def _first_seed(prior: dict) -> dict:
    """The first trial the prior seeds (trial 0 is the recipe, the same for every quadrant)."""
    space = load_search_space("default")
    study = optuna.create_study(direction="maximize")
    plan = FinetunePlan(None, [Candidate("test_efficientnet", 32, "head")], dict(space.ranges), prior,
                        Objective(metric="accuracy", reason=""))  # fmt: skip
    seed_trials(study, space, plan)
    return study.get_trials(states=(optuna.trial.TrialState.WAITING,))[1].system_attrs["fixed_params"]


def test_the_corrected_quadrant_changes_the_first_fine_tuning_trials():
    a_priori = _first_seed(PROFILE["prior"])
    placement = measured_placement(PROFILE, _probes(head=0.70, mid=0.82), pixel_score=0.40)
    corrected = _first_seed(corrected_prior(PROFILE, placement))
    assert a_priori["strategy"] == "finetune_all"  # large-similar: fine-tune the whole network
    assert corrected["strategy"] == "train_all"  # large-different: pretrained init, train everything


def test_a_combined_tap_is_not_a_lower_tap():
    """A combined tap holds the CNN codes too: the placement compares single taps only."""
    probes = [*_probes(head=0.80, mid=0.78), _probe(3, "blocks.4+head", 0.90)]
    placement = measured_placement(PROFILE, probes, pixel_score=0.40)
    assert placement["quadrant"] == "large-similar" and "best lower tap 0.780" in placement["rationale"]


def test_fine_tuning_candidates_are_single_taps():
    """A combined tap that tops the probes stays a probe: fine-tuning gets the best single tap of its pair."""
    from types import SimpleNamespace

    from autotransfer.search.finetune_stage import choose_candidates

    probes = optuna.create_study(direction="maximize")
    for key, value in [("m@64/blocks.4+head", 0.9), ("m@64/head", 0.8), ("m@64/blocks.4", 0.7), ("n@64/head", 0.6)]:
        probes.add_trial(optuna.trial.create_trial(value=value, user_attrs={"candidate": key}))
    studies = SimpleNamespace(probes=probes, finetune=optuna.create_study(direction="maximize"))
    assert [c.key for c in choose_candidates(studies, 2)] == ["m@64/head", "n@64/head"]
