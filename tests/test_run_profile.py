"""profile.json as typed fields: the dataset's profile plus what the run adds, the same JSON written back;
another version's file is one clear error."""

import json

import pytest

from autotransfer.errors import AutoTransferError
from autotransfer.search.auto_space import AutoChoice
from autotransfer.search.run_profile import RunProfile
from autotransfer.transfer.profile import DatasetProfile, Prior

PRIOR = Prior(strategies=("lp_ft", "finetune_top"), taps=("blocks.4", "head"), freeze_groups=(3, 6),
              head_lr=(1e-3, 1e-2), backbone_lr_ratio=(0.001, 0.05), layer_decay=(0.85, 1.0))  # fmt: skip


def _profile() -> DatasetProfile:
    return DatasetProfile(
        n_images=36, n_classes=3, images_per_class={"a": 12, "b": 12, "c": 12},
        class_balance={"imbalance_ratio": 1.0}, resolution={"median_short_side": 30.0, "profiled_at_reason": "32px"},
        grayscale_share=0.0, exact_duplicates=0, cross_split_duplicates=0, skipped=[], backbone="test_efficientnet",
        image_size=32, sample_size=36, layer_distance=[], group_distance=[{"group": 0, "distance": 0.5}],
        similarity=float("nan"), similarity_parts={}, references={"noise": None}, separability={}, size_class="small",
        domain="different", quadrant="small-different", recommended_strategy="lp_ft", rationale="small and different",
        prior=PRIOR, thresholds={"similar_at": 0.75},
    )  # fmt: skip


def test_profile_json_round_trips_through_typed_fields():
    auto = AutoChoice(backbones=("test_efficientnet",), resolutions=(32,), native_side=40, profile_resolution=32,
                      seconds_per_image={"test_efficientnet": 0.01})  # fmt: skip
    load, unused = {"others_busy": 1.0, "cpus": 2}, {"seconds": 3.0, "share": 0.1}
    profile = RunProfile(dataset=_profile(), auto=auto, measured_skipped="the budget left no room",
                         machine_load=load, budget_unused=unused)  # fmt: skip
    document = json.loads(json.dumps(profile.to_json()))  # as profile.json holds it
    assert document["prior"]["taps"] == ["blocks.4", "head"] and document["similarity"] is None
    assert document["machine_load"] == {"others_busy": 1.0, "cpus": 2} and "measured" not in document
    again = RunProfile.from_json(document)
    assert again.dataset.prior == PRIOR and again.auto == auto and again.measured_skipped == "the budget left no room"
    assert json.loads(json.dumps(again.to_json())) == document


def test_another_versions_profile_is_refused():
    document = json.loads(json.dumps(RunProfile(dataset=_profile()).to_json()))
    for changed in ({**document, "measured_later": 1}, {k: v for k, v in document.items() if k != "quadrant"}):
        with pytest.raises(AutoTransferError, match="another version wrote it"):
            RunProfile.from_json(changed)
    with pytest.raises(AutoTransferError, match="another version wrote it"):
        RunProfile.from_json({**document, "prior": {**document["prior"], "epochs": [1, 2]}})
