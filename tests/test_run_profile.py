"""profile.json as typed fields: the dataset's profile plus what the run adds, the same JSON written back;
another version's file is one clear error."""

import json

import pytest
from sample_run import dataset_profile

from autotransfer.errors import AutoTransferError
from autotransfer.search.auto_space import AutoChoice
from autotransfer.search.run_profile import RunProfile
from autotransfer.transfer.profile import Prior

PRIOR = Prior(strategies=("lp_ft", "finetune_top"), taps=("blocks.4", "head"), freeze_groups=(3, 6),
              head_lr=(1e-3, 1e-2), backbone_lr_ratio=(0.001, 0.05), layer_decay=(0.85, 1.0))  # fmt: skip


def test_profile_json_round_trips_through_typed_fields():
    auto = AutoChoice(backbones=("test_efficientnet",), resolutions=(32,), native_side=40, profile_resolution=32,
                      seconds_per_image={"test_efficientnet": 0.01})  # fmt: skip
    load, unused = {"others_busy": 1.0, "cpus": 2}, {"seconds": 3.0, "share": 0.1}
    profile = RunProfile(dataset=dataset_profile(PRIOR), auto=auto, measured_skipped="the budget left no room",
                         machine_load=load, budget_unused=unused)  # fmt: skip
    document = json.loads(json.dumps(profile.to_json()))  # as profile.json holds it
    assert document["prior"]["taps"] == ["blocks.4", "head"] and document["similarity"] is None
    assert document["machine_load"] == {"others_busy": 1.0, "cpus": 2} and "measured" not in document
    again = RunProfile.from_json(document)
    assert again.dataset.prior == PRIOR and again.auto == auto and again.measured_skipped == "the budget left no room"
    assert json.loads(json.dumps(again.to_json())) == document


def test_another_versions_profile_is_refused():
    document = json.loads(json.dumps(RunProfile(dataset=dataset_profile(PRIOR)).to_json()))
    for changed in ({**document, "measured_later": 1}, {k: v for k, v in document.items() if k != "quadrant"}):
        with pytest.raises(AutoTransferError, match="another version wrote it"):
            RunProfile.from_json(changed)
    with pytest.raises(AutoTransferError, match="another version wrote it"):
        RunProfile.from_json({**document, "prior": {**document["prior"], "epochs": [1, 2]}})
