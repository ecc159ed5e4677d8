"""The same command, seed and data give the same trials and the same pipeline on CPU (budget large
enough not to cut anything, so the result does not depend on the machine's speed)."""

import json

import optuna
from conftest import SPACE

from autotransfer import AutoTransfer


def _trials(out) -> list[tuple]:
    storage = f"sqlite:///{out / 'study.db'}"
    rows = []
    for name in ("probes", "finetune"):
        for trial in optuna.load_study(study_name=name, storage=storage).trials:
            attrs = {k: v for k, v in trial.user_attrs.items() if "seconds" not in k and k != "checkpoint_dir"}
            rows.append(
                (
                    name,
                    trial.number,
                    trial.state.name,
                    trial.value,
                    json.dumps(trial.params, sort_keys=True),
                    json.dumps(attrs, sort_keys=True, default=str),
                )
            )
    return rows


def _weights_and_settings(pipeline) -> tuple:
    """What the pipeline computes with: each member's tensors and hyperparameters (one member unless the
    run chose an ensemble), and the ensemble's weights."""
    members = getattr(pipeline, "members", [pipeline])
    return (
        [(m.spec["tensors_sha256"], json.dumps(m.spec["hyperparameters"], sort_keys=True)) for m in members],
        list(getattr(pipeline, "weights", [1.0])),
    )


def test_same_seed_same_trials_same_pipeline(fit_env, tmp_path):
    fit_env["space"].write_text(SPACE.replace("max_trials: 3", "max_trials: 4"))
    runs = []
    for name in ("first", "second"):
        estimator = AutoTransfer(
            time_budget="10m",
            search_space=fit_env["space"],
            out=tmp_path / name,
            seed=3,
            profile_backbone="test_efficientnet",
        )
        runs.append((estimator.fit(fit_env["data"]).pipeline_, tmp_path / name))
    (first, first_dir), (second, second_dir) = runs
    assert _trials(first_dir) == _trials(second_dir)
    assert _weights_and_settings(first) == _weights_and_settings(second)
    other = (
        AutoTransfer(
            time_budget="10m",
            search_space=fit_env["space"],
            out=tmp_path / "other",
            seed=4,
            profile_backbone="test_efficientnet",
        )
        .fit(fit_env["data"])
        .pipeline_
    )
    assert _trials(tmp_path / "other") != _trials(first_dir)  # the seed does change the search
    assert other.classes_.tolist() == first.classes_.tolist()
