"""Two `fit` processes sharing one cache directory and one study storage: both finish, neither the
caches nor the studies are damaged, and no trial is left half-recorded."""

import os
import subprocess
import sys

import numpy as np
import optuna
import pytest
from conftest import SPACE
from optuna.trial import TrialState

from autotransfer import Pipeline
from autotransfer.data.datasets import load_dataset


def test_two_fits_sharing_cache_and_storage(fit_env, tmp_path, isolated_cache):
    space = fit_env["space"]
    space.write_text(SPACE.replace("max_trials: 3", "max_trials: 4"))
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    runs = [tmp_path / "worker-a", tmp_path / "worker-b"]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from autotransfer.cli import main; main()",
                "fit",
                str(fit_env["data"]),
                "--search-space",
                str(space),
                "--storage",
                storage,
                "--out",
                str(out),
                "--time-budget",
                "4m",
                "--profile-backbone",
                "test_efficientnet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ),
        )
        for out in runs
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), "\n".join(o[-3000:] for o in outputs)

    finetune = optuna.load_study(study_name="finetune", storage=storage).trials
    assert not [t for t in finetune if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in finetune) >= 4
    assert len({t.number for t in finetune}) == len(finetune)
    probes = optuna.load_study(study_name="probes", storage=storage).trials
    assert probes and all(t.state == TrialState.COMPLETE for t in probes)

    arrays = list((isolated_cache / "features").rglob("*.npy"))
    assert arrays and all(np.load(p).ndim == 2 for p in arrays)  # every cached feature file is whole
    assert not [p for p in isolated_cache.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    again = load_dataset(fit_env["data"], image_size=32, show_progress=False)
    assert again.cache_hit and len(again) == 36
    # One final pipeline per shared study (docs/distributed.md): one worker writes it, the other says where.
    written = [out for out in runs if (out / "pipeline" / "pipeline.json").is_file()]
    assert len(written) == 1, outputs
    assert len(Pipeline.load(written[0]).predict(str(fit_env["data"] / "a"))) == 12
    other = "".join(o for o, out in zip(outputs, runs) if out != written[0])
    assert str(written[0]) in " ".join(other.split()), other[-2000:]  # the summary names where it is


@pytest.mark.parametrize("race", ["UNIQUE constraint failed: alembic_version", "table studies already exists"])
def test_a_worker_that_loses_the_race_to_create_the_storage_opens_it_again(tmp_path, monkeypatch, race):
    """Two workers creating a new SQLite storage at once: the loser's error reads either way (a full test
    run beside other work saw 'table studies already exists' end a worker with exit 2)."""
    from autotransfer.search import storage

    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise RuntimeError(f"(sqlite3.OperationalError) {race}")
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    opened = storage.open_storage(None, tmp_path)
    assert len(calls) == 2 and isinstance(opened, real)
