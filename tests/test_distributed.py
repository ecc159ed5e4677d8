"""The ``distributed`` tier: several ``autotransfer fit`` workers on one PostgreSQL study, and the Ray
backend on a real multi-node Ray cluster (separate raylets on this machine, loopback only).

Run with ``python -m pytest -m distributed`` (needs the Debian ``postgresql`` package, the
``[postgres]`` and ``[ray]`` extras; a missing piece skips its tests with the reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import SPACE, make_imagefolder
from distributed_fixtures import RAY_DRIVER_ENV, postgres, ray_cluster  # noqa: F401  (fixtures)

from autotransfer.search.storage import PAST_MAX_TRIALS

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


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test():
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def start_worker(command: list[str], log: Path, **env: str) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115  (the child keeps it)
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **env})
    _started.append(process)
    return process


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
RAY_ENV = RAY_DRIVER_ENV  # nothing about loopback: the backend keeps a loopback address on loopback


def ray_results(out: Path) -> list[dict]:
    """Every result Ray Tune logged so far under ``out/ray`` (one dict per reported epoch)."""
    rows = []
    for path in out.glob("ray/finetune-*/*/result.json"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append({**json.loads(line), "trial_dir": path.parent.name})
    return rows


def test_the_ray_backend_runs_trials_on_two_nodes(fit_env, ray_cluster, tmp_path):  # noqa: F811
    head = ray_cluster.alive_nodes()
    ray_cluster.add_node()
    nodes = ray_cluster.alive_nodes()
    fit_env["space"].write_text(SPACE.replace("max_trials: 3", "max_trials: 4"))
    out = tmp_path / "run"
    command = fit_command(fit_env, out, "4m", "--backend", "ray", "--ray-address", ray_cluster.address)
    tic = time.monotonic()
    code = start_worker(command, tmp_path / "fit.log", **RAY_ENV).wait(timeout=360)
    assert code == 0, (tmp_path / "fit.log").read_text()[-3000:]
    seconds = time.monotonic() - tic
    trials = finetune_trials(f"sqlite:///{out / 'study.db'}")
    # A trial Tune's budget stops before its first epoch (a worker slow to start on a loaded machine) reports
    # nothing, so it names no node and says so; every node must have run one of the others.
    silent = [t for t in trials if t.user_attrs.get("node_id") is None]
    assert all(t.user_attrs.get("error") == "no epoch finished" for t in silent), [t.user_attrs for t in silent]
    ran_on = {t.user_attrs["node_id"] for t in trials if t not in silent}
    assert len(trials) == 4 and ran_on == set(nodes), (ran_on, nodes, head)
    print(f"2-node Ray: {len(trials)} trials on {len(ran_on)} nodes in {seconds:.0f}s (budget 240s)")


def test_killing_a_ray_worker_node_mid_trial_retries_the_trial_within_the_budget(fit_env, ray_cluster, tmp_path):  # noqa: F811
    head = set(ray_cluster.alive_nodes())
    worker_node = ray_cluster.add_node()
    (worker_id,) = set(ray_cluster.alive_nodes()) - head
    fit_env["space"].write_text(SPACE.replace("max_trials: 3", "max_trials: 4").replace("epochs: 2", "epochs: 4"))
    out, budget = tmp_path / "run", 240
    command = fit_command(fit_env, out, f"{budget}s", "--backend", "ray", "--ray-address", ray_cluster.address)
    tic = time.monotonic()
    driver = start_worker(command, tmp_path / "fit.log", **RAY_ENV)
    killed_at = None
    while killed_at is None and driver.poll() is None and time.monotonic() - tic < budget:
        time.sleep(0.2)
        if ray_cluster.running_trials(worker_node):  # a trial actor runs on the worker node: the node dies
            ray_cluster.kill_node(worker_node)
            killed_at = time.monotonic() - tic
    assert killed_at is not None, "no trial ran on the worker node: " + (tmp_path / "fit.log").read_text()[-2000:]
    code = driver.wait(timeout=budget * 2)
    seconds = time.monotonic() - tic
    assert code == 0, (tmp_path / "fit.log").read_text()[-3000:]
    trials = finetune_trials(f"sqlite:///{out / 'study.db'}")
    keys = ("ray_attempts", "node_ids", "node_id", "epochs_run")
    summary = [{"state": t.state.name, **{a: t.user_attrs.get(a) for a in keys}} for t in trials]
    retried = [t for t in trials if t.user_attrs.get("ray_attempts", 1) >= 2]
    assert len(retried) >= 1, summary  # FailureConfig started the interrupted trial again
    for trial in retried:  # ... on the surviving node, to the end
        assert trial.state.is_finished() and trial.user_attrs["node_id"] != worker_id, summary
        assert trial.user_attrs.get("best_val_score") is not None, summary
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials), summary
    assert (out / "pipeline" / "pipeline.json").is_file()
    assert seconds <= budget * 1.05, f"{seconds:.0f}s for a {budget}s budget"
    print(
        f"Ray worker node killed at {killed_at:.0f}s: {len(retried)} trial(s) retried on the head "
        f"({summary}); run {seconds:.0f}s for a {budget}s budget"
    )


def test_a_resumed_ray_run_keeps_the_trials_it_recorded(fit_env, ray_cluster, tmp_path):  # noqa: F811
    fit_env["space"].write_text(SPACE.replace("max_trials: 3", "max_trials: 4"))
    out = tmp_path / "run"
    command = fit_command(fit_env, out, "4m", "--backend", "ray", "--ray-address", ray_cluster.address)
    storage = f"sqlite:///{out / 'study.db'}"
    driver = start_worker(command, tmp_path / "first.log", **RAY_ENV)
    deadline = time.monotonic() + 240
    kept: dict[int, float | None] = {}
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
        kept = {t.number: t.user_attrs.get("best_val_score") for t in finetune_trials(storage)}
        if len(kept) >= 2:
            driver.send_signal(signal.SIGKILL)
            break
    driver.wait()
    assert 2 <= len(kept) < 4, "the first run was not killed between its trials"
    code = start_worker(command, tmp_path / "second.log", **RAY_ENV).wait(timeout=360)
    log = (tmp_path / "second.log").read_text()
    assert code == 0, log[-3000:]
    trials = finetune_trials(storage)
    assert {t.number: t.user_attrs.get("best_val_score") for t in trials if t.number in kept} == kept
    assert len(trials) == 4
    assert f"{len(kept)} trial(s) kept from before" in (out / "fit.log").read_text()


def test_three_postgresql_workers_one_killed_mid_trial_lose_and_repeat_nothing(fit_env, postgres, tmp_path):  # noqa: F811
    url = postgres.database("three_workers").replace("postgresql+psycopg://", "postgresql://")  # the plain URL
    max_trials = 6
    # Epochs long enough (180 images) for the kill to land mid-trial, and no pruning before the last epoch.
    space = SPACE.replace("max_trials: 3", f"max_trials: {max_trials}").replace("epochs: 2", "epochs: 6")
    fit_env["space"].write_text(space + "pruner: {min_epochs: 6}\n")
    fit_env["data"] = make_imagefolder(tmp_path / "bigger", {"a": 60, "b": 60, "c": 60})
    grace = {"AUTOTRANSFER_HEARTBEAT_GRACE": "6"}
    outs = [tmp_path / f"run{i}" for i in range(3)]
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    workers = [start_worker(fit_command(fit_env, outs[i], "6m", "--storage", url), logs[i], **grace) for i in range(3)]
    victim = workers[0]
    killed_trial = None
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and killed_trial is None and victim.poll() is None:
        time.sleep(0.2)
        for t in finetune_trials(url):
            mine = t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            if mine and t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("epochs_run", 0) >= 1:
                victim.send_signal(signal.SIGKILL)
                killed_trial = t.number
                break
    assert killed_trial is not None, "the victim never ran a fine-tuning trial: " + logs[0].read_text()[-2000:]
    victim.wait()
    codes = [w.wait(timeout=300) for w in workers[1:]]
    outputs = [log.read_text() for log in logs[1:]]
    assert codes == [0, 0], outputs
    trials = finetune_trials(url)
    by_number = {t.number: t for t in trials}
    assert by_number[killed_trial].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retries) == 1, "the killed trial was not retried exactly once"
    retry = retries[0]
    assert retry.state.is_finished() and retry.state != optuna.trial.TrialState.FAIL
    assert retry.params == by_number[killed_trial].params
    assert not retry.user_attrs["worker"].endswith(f":{victim.pid}")  # another worker ran it
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    # two workers that ask for the last place at once: the later trial gives way, untrained
    gave_way = [t for t in trials if str(t.user_attrs.get("stopped", "")).startswith(PAST_MAX_TRIALS)]
    assert not [t for t in gave_way if t.user_attrs.get("epochs_run")]
    done = [t for t in trials if t.state.is_finished() and t.number not in retried and t not in gave_way]
    assert len(done) == max_trials, [(t.number, t.state.name, t.user_attrs.get("stopped")) for t in trials]
    # Exactly one final pipeline; the other survivor says who wrote it.
    written = [out for out in outs if (out / "pipeline" / "pipeline.json").is_file()]
    assert len(written) == 1, written
    final = optuna.load_study(study_name="final", storage=url).trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in final) == 1
    assert sum("written by worker" in text for text in outputs) == 1
    assert "Traceback" not in "".join(outputs)
    print(
        f"3 PostgreSQL workers, one SIGKILLed in trial {killed_trial}: retried as trial {retry.number} by "
        f"{retry.user_attrs['worker']}; {len(done)} of {max_trials} done, 0 lost, 0 run twice; one pipeline in "
        f"{written[0].name}"
    )
