"""The cheap stage corrects the prior: the probes' placement, and the fine-tuning seeds it changes."""

import json
from dataclasses import replace

import optuna
import pytest

from autotransfer.errors import AutoTransferError
from autotransfer.search.candidates import Candidate
from autotransfer.search.finetune_stage import FinetunePlan
from autotransfer.search.objective import Objective
from autotransfer.search.placement import Placement, corrected_prior, measured_placement
from autotransfer.search.recipe import seed_trials
from autotransfer.search.records import TrialRecord
from autotransfer.search.space import load_search_space
from autotransfer.transfer.profile import Prior

QUADRANT = "large-similar"  # the profile's (a priori)
PRIOR = Prior(strategies=("finetune_all", "finetune_top", "linear_probe"))


def _probe(trial: int, tap: str, score: float | None) -> TrialRecord:
    return TrialRecord(stage="probe", trial=trial, status="complete", tap=tap, val_score=score)


def _probes(head: float, mid: float) -> list[TrialRecord]:
    return [_probe(0, "head", head), _probe(1, "blocks.4", mid), _probe(2, "blocks.2", None)]


def test_top_features_that_lose_to_a_lower_tap_read_as_different():
    placement = measured_placement(QUADRANT, _probes(head=0.70, mid=0.82), pixel_score=0.40)
    assert placement.quadrant == "large-different" and placement.differs
    assert placement.a_priori == "large-similar" and "too ImageNet-specific" in placement.rationale
    assert Placement.from_json(json.loads(json.dumps(placement.to_json()))) == placement  # as profile.json keeps it
    with pytest.raises(AutoTransferError, match="another version wrote it"):
        Placement.from_json({**placement.to_json(), "confidence": 0.9})
    kept = measured_placement(QUADRANT, _probes(head=0.815, mid=0.82), pixel_score=0.40)
    assert kept.quadrant == "large-similar" and not kept.differs  # within the tie margin


def test_features_no_better_than_pixels_read_as_different():
    placement = measured_placement(QUADRANT, _probes(head=0.50, mid=0.45), pixel_score=0.55)
    assert placement.quadrant == "large-different" and "do not beat raw pixels" in placement.rationale


def test_the_words_follow_the_quadrant_placed():
    """The fifth fresh user read "small-different ... the top features are still relevant (similar)": the codes
    tied a lower tap (similar) but neither beat raw pixels (different). Each word names the quadrant printed."""
    cases = [((1.0, 1.0), 1.0), ((1.0, 1.0), 0.2), ((0.70, 0.82), 0.40), ((0.70, 0.82), 0.90), ((0.9, 0.5), None)]
    for (head, mid), pixels in cases:
        placement = measured_placement("small-different", _probes(head=head, mid=mid), pixel_score=pixels)
        verdict = placement.quadrant.split("-")[1]
        other = "different" if verdict == "similar" else "similar"
        assert f"({verdict})" in placement.rationale and other not in placement.rationale, placement
    tied_below_pixels = measured_placement("small-different", _probes(head=1.0, mid=1.0), pixel_score=1.0)
    assert tied_below_pixels.quadrant == "small-different" and "still relevant" not in tied_below_pixels.rationale


def test_no_placement_without_both_kinds_of_tap():
    assert measured_placement(QUADRANT, [_probe(0, "head", 0.9)], 0.5) is None
    assert corrected_prior(PRIOR, None) == PRIOR


def _seeds(prior: Prior) -> list[dict]:
    """The fine-tuning trials the prior seeds, in order (trial 0 is the recipe)."""
    space = load_search_space("default")
    study = optuna.create_study(direction="maximize")
    plan = FinetunePlan(None, [Candidate("test_efficientnet", 32, "head")], dict(space.ranges), prior,
                        Objective(metric="accuracy", reason=""))  # fmt: skip
    seed_trials(study, space, plan)
    return [t.system_attrs["fixed_params"] for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))]


def test_the_corrected_quadrant_changes_the_first_fine_tuning_trials():
    a_priori = _seeds(PRIOR)
    placement = measured_placement(QUADRANT, _probes(head=0.70, mid=0.82), pixel_score=0.40)
    corrected = _seeds(replace(corrected_prior(PRIOR, placement), head_lr=(1e-3, 1e-2)))
    # large-similar: the LP-FT recipe with augmentation, then fine-tune the whole network
    assert [p["strategy"] for p in a_priori[:2]] == ["lp_ft", "finetune_all"]
    assert a_priori[0]["backbone_lr_ratio"] < 1.0 and a_priori[0]["augmentation"] == "crop"
    # large-different: the recipe itself trains everything from the pretrained init, at the prior's head LR;
    # LP-FT is still tried, after the quadrant's other strategy, and nothing is seeded twice
    strategies = [p["strategy"] for p in corrected]
    assert strategies[:3] == ["train_all", "finetune_all", "lp_ft"] and len(set(strategies)) == len(strategies)
    assert corrected[0]["augmentation"] == "crop" and "backbone_lr_ratio" not in corrected[0]
    assert corrected[0]["head_lr"] == pytest.approx(10**-2.5)  # the prior's, not the LP-FT recipe's 1e-3


def test_a_combined_tap_is_not_a_lower_tap():
    """A combined tap holds the CNN codes too: the placement compares single taps only."""
    probes = [*_probes(head=0.80, mid=0.78), _probe(3, "blocks.4+head", 0.90)]
    placement = measured_placement(QUADRANT, probes, pixel_score=0.40)
    assert placement.quadrant == "large-similar" and "best lower tap 0.780" in placement.rationale


def test_fine_tuning_candidates_are_single_taps():
    """A combined tap that tops the probes stays a probe: fine-tuning gets the best single tap of its pair."""
    from types import SimpleNamespace

    from autotransfer.search.finetune_stage import choose_candidates

    probes = optuna.create_study(direction="maximize")
    for key, value in [("m@64/blocks.4+head", 0.9), ("m@64/head", 0.8), ("m@64/blocks.4", 0.7), ("n@64/head", 0.6)]:
        probes.add_trial(optuna.trial.create_trial(value=value, user_attrs={"candidate": key}))
    studies = SimpleNamespace(probes=probes, finetune=optuna.create_study(direction="maximize"))
    assert [c.key for c in choose_candidates(studies, 2)] == ["m@64/head", "n@64/head"]


def test_with_too_little_time_for_every_candidate_the_cheapest_that_fits_runs_next():
    """200 s left after the reserve: a 2-epoch trial of the 60 s/epoch candidate fits, the 150 s one does
    not; the search queues the cheap one instead of ending with the time unused, unless a queued trial of
    a candidate that no longer fits is next (Optuna runs queued trials first)."""
    from autotransfer.search.finetune_stage import affordable, next_queued_candidate

    epochs = {"big@128/head": 150.0, "small@64/head": 60.0, "mid@64/head": 90.0}
    assert affordable(epochs, left=260.0, reserve=60.0, judge=2) == ["small@64/head", "mid@64/head"]
    assert affordable(epochs, left=100.0, reserve=60.0, judge=2) == []
    study = optuna.create_study(direction="maximize")
    assert next_queued_candidate(study) is None
    study.enqueue_trial({"candidate": "big@128/head", "strategy": "lp_ft"})
    study.enqueue_trial({"candidate": "small@64/head"})
    assert next_queued_candidate(study) == "big@128/head"
