"""The ``distributed`` tier: several ``autotransfer fit`` workers on one PostgreSQL study, and the Ray
backend on a real multi-node Ray cluster (separate raylets on this machine, loopback only).

Run with ``python -m pytest -m distributed`` (needs the Debian ``postgresql`` package, the
``[postgres]`` and ``[ray]`` extras; a missing piece skips its tests with the reason).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import SPACE
from distributed_fixtures import RAY_LOOPBACK_ENV, postgres, ray_cluster  # noqa: F401  (fixtures)

pytestmark = pytest.mark.distributed


def fit_command(env: dict, out: Path, budget: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from autotransfer.cli import main; main()",
        "fit",
        str(env["data"]),
        "--search-space",
        str(env["space"]),
        "--out",
        str(out),
        "--time-budget",
        budget,
        "--profile-backbone",
        "test_efficientnet",
        *extra,
    ]


def start_worker(command: list[str], log: Path, **env: str) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115  (the child keeps it)
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **env})


def finetune_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="finetune", storage=storage).trials
    except Exception:  # not created yet
        return []


# ---------------------------------------------------------------------------------------------- PostgreSQL
def test_two_workers_share_one_postgresql_study(fit_env, postgres, tmp_path):  # noqa: F811
    url = postgres.database("two_workers")
    fit_env["space"].write_text(SPACE.replace("max_trials: 3", "max_trials: 4"))
    workers = [
        start_worker(fit_command(fit_env, tmp_path / f"run{i}", "3m", "--storage", url), tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    codes = [w.wait(timeout=300) for w in workers]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    trials = finetune_trials(url)
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= 4 and not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    probes = optuna.load_study(study_name="probes", storage=url).trials
    keys = [(t.user_attrs.get("candidate"), t.user_attrs.get("C"), t.user_attrs.get("head")) for t in probes]
    assert len(keys) == len(set(keys)), "a probe was computed twice"


# ---------------------------------------------------------------------------------------------- Ray
def test_the_ray_backend_runs_trials_on_two_nodes(fit_env, ray_cluster, tmp_path):  # noqa: F811
    ray_cluster.add_node()
    fit_env["space"].write_text(SPACE.replace("max_trials: 3", "max_trials: 4"))
    out = tmp_path / "run"
    command = fit_command(fit_env, out, "4m", "--backend", "ray", "--ray-address", ray_cluster.address)
    tic = time.monotonic()
    worker = start_worker(command, tmp_path / "fit.log", **RAY_LOOPBACK_ENV)
    code = worker.wait(timeout=360)
    assert code == 0, (tmp_path / "fit.log").read_text()[-3000:]
    assert time.monotonic() - tic < 240 * 1.05
    trials = finetune_trials(f"sqlite:///{out / 'study.db'}")
    assert len(trials) >= 1
