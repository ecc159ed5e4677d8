"""Faults: interrupts at chosen moments of `fit` (extraction, a trial, the refit) then resume; NaN
losses; a full disk. The promise: no finished trial lost, no damaged cache or checkpoint, a clear
message, and the same quality in the end."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import torch
from conftest import SPACE, as_from_a_terminal, make_imagefolder

from autotransfer import AutoTransfer, Pipeline
from autotransfer.errors import AutoTransferError
from autotransfer.files import is_disk_full, write_text_atomic
from autotransfer.trial_status import RAN

FIT = [sys.executable, "-c", "from autotransfer.cli import main; main()", "fit"]


def _finished(out) -> dict[tuple[str, int], float]:
    """(study, trial number) -> value of every finished trial, read straight from the storage."""
    storage = f"sqlite:///{out / 'study.db'}"
    found = {}
    for name in ("probes", "finetune"):
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except Exception:  # not created yet
            continue
        found.update({(name, t.number): t.value for t in trials if t.state.is_finished()})
    return found


def _run_until(args, log, pattern: str, count: int, delay: float, sig: int) -> int:
    """Start `fit`, wait until its log gains ``count`` lines with ``pattern``, wait ``delay`` more, send ``sig``."""
    offset = log.stat().st_size if log.exists() else 0  # the log is appended to by every run
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ), preexec_fn=as_from_a_terminal)  # fmt: skip
    start = time.monotonic()
    while time.monotonic() - start < 300 and process.poll() is None:
        if log.exists() and log.read_text()[offset:].count(pattern) >= count:
            break
        time.sleep(0.05)
    if process.poll() is not None:  # the work left finished before that moment came
        assert process.returncode == 0, process.stderr.read()[-2000:]
        return 0
    time.sleep(delay)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == -signal.SIGINT and "budget: " in log.read_text()[offset:]:
        return 0  # it arrived as the interpreter shut down, after the run's last line: nothing left to lose
    if sig == signal.SIGINT and process.returncode != 0:
        assert process.returncode == 130 and "Trials that finished (if any) are saved" in stderr, stderr[-2000:]
    return process.returncode  # 0: it finished before the signal arrived (a tiny model is quick)


def test_interrupts_at_each_phase_lose_nothing_and_reach_the_same_quality(fit_env, tmp_path):
    space = fit_env["space"]
    space.write_text(SPACE.replace("max_trials: 3", "max_trials: 12").replace("epochs: 2", "epochs: 4"))
    data = make_imagefolder(tmp_path / "more", {"a": 80, "b": 80, "c": 80})  # trials long enough to land in
    common = ["--search-space", str(space), "--time-budget", "4m", "--profile-backbone", "test_efficientnet"]
    reference = tmp_path / "reference"
    done = subprocess.run(
        FIT + [str(data), "--out", str(reference), *common], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    out = fit_env["out"]
    args = FIT + [str(data), "--out", str(out), *common]
    log = out / "fit.log"
    rng = random.Random(0)  # random moments, but the same ones on every run of the test
    # during extraction and the cheap stage, during fine-tuning trials, during the refit/save
    kills = [
        ("profile:", 1, signal.SIGKILL),
        ("probe ", 1, signal.SIGINT),
        ("trial ", 1, signal.SIGKILL),
        ("trial ", 2, signal.SIGINT),
        ("final pipeline:", 1, signal.SIGKILL),
    ]
    landed = 0
    for pattern, count, sig in kills:
        before = _finished(out)
        landed += _run_until(args, log, pattern, count, rng.uniform(0.0, 0.2), sig) != 0
        after = _finished(out)
        assert all(after.get(key) == value for key, value in before.items()), (pattern, before, after)
    assert landed >= 3, f"only {landed} of {len(kills)} interruptions landed before the run finished"
    final = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ))
    assert final.returncode == 0, final.stderr
    kept = _finished(out)
    assert sum(1 for study, _ in kept if study == "finetune") >= 12
    resumed, expected = Pipeline.load(out), Pipeline.load(reference)
    # The same quality within one validation image: which trials, leftover epochs and ensemble members the
    # budget allows depend on timing (the interrupted runs spent theirs differently), not on what was lost.
    one_image = 1.0 / sum(c["support"] for c in expected.spec["metrics"]["val"]["per_class"].values())
    assert resumed.spec["metrics"]["val_accuracy"] >= expected.spec["metrics"]["val_accuracy"] - one_image - 1e-9
    assert json.loads((out / "run.json").read_text())["seed"] == 0


def test_a_nan_loss_trial_is_recorded_and_skipped(fit_env, monkeypatch):
    import autotransfer.search.trial_body as search_module

    real, calls = search_module.finetune, {"n": 0}

    def diverging_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            return real(*args, **kwargs)
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.CrossEntropyLoss, "forward", lambda self, x, y: (x * float("nan")).sum())
            return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "finetune", diverging_once)
    estimator = AutoTransfer(
        time_budget="3m", search_space=fit_env["space"], out=fit_env["out"], profile_backbone="test_efficientnet"
    )
    estimator.fit(fit_env["data"])
    board = estimator.leaderboard_
    failed = board[board["status"] == "fail"]
    assert len(failed) == 1 and "loss became nan" in failed["error"].item()
    assert board[board["stage"] == "finetune"]["status"].isin(RAN).sum() >= 2  # it went on


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(fit_env, monkeypatch):
    pipeline = (
        AutoTransfer(
            time_budget="3m", search_space=fit_env["space"], out=fit_env["out"], profile_backbone="test_efficientnet"
        )
        .fit(fit_env["data"])
        .pipeline_
    )
    folder = fit_env["out"] / "pipeline"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr("autotransfer.deploy.pipeline.save_file", _no_space)
    with pytest.raises(AutoTransferError, match="Could not write the checkpoint") as caught:
        pipeline.save(folder)
    assert "previous files are intact" in str(caught.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".pipeline")] == []
    Pipeline.load(folder)


def test_disk_full_while_caching_features_is_one_message_and_a_rerun_finishes(fit_env, monkeypatch, isolated_cache):
    def full(path, shape):
        path.write_bytes(b"\x93NUMPY partial")
        _no_space()

    with monkeypatch.context() as patch:
        patch.setattr("autotransfer.models.features._feature_file", full)
        with pytest.raises(AutoTransferError) as caught:
            AutoTransfer(
                time_budget="3m",
                search_space=fit_env["space"],
                out=fit_env["out"],
                profile_backbone="test_efficientnet",
            ).fit(fit_env["data"])
    assert "The disk is full" in str(caught.value) and "run the same command again" in str(caught.value)
    leftovers = [p for p in (isolated_cache / "features").rglob("*.npy") if p.is_file()]
    assert all(np.load(p).size for p in leftovers)  # no partial file was left where a reader would find it
    AutoTransfer(
        time_budget="3m", search_space=fit_env["space"], out=fit_env["out"], profile_backbone="test_efficientnet"
    ).fit(fit_env["data"])


def test_disk_full_while_writing_the_decode_cache_keeps_earlier_entries(fit_env, monkeypatch, isolated_cache):
    from autotransfer.data.datasets import load_dataset

    first = load_dataset(fit_env["data"], image_size=32, show_progress=False)
    entries = sorted(p.name for p in (isolated_cache / "decoded").iterdir())
    with monkeypatch.context() as patch:
        patch.setattr("autotransfer.data.decode_cache.np.lib.format.open_memmap", _no_space)
        with pytest.raises(AutoTransferError, match="The disk is full: the decode cache could not be written"):
            load_dataset(fit_env["data"], image_size=48, show_progress=False)
    assert sorted(p.name for p in (isolated_cache / "decoded").iterdir()) == entries  # no half-written entry
    again = load_dataset(fit_env["data"], image_size=32, show_progress=False)
    assert again.cache_hit and np.array_equal(np.asarray(again.images), np.asarray(first.images))


def test_a_small_run_file_that_cannot_be_written_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    write_text_atomic(path, "old")
    monkeypatch.setattr("pathlib.Path.write_text", _no_space)
    with pytest.raises(OSError):
        write_text_atomic(path, "new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


@pytest.mark.parametrize(
    "error, full",
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (RuntimeError("(sqlite3.OperationalError) database or disk is full"), True),
        (OSError(errno.EACCES, "Permission denied"), False),
    ],
)
def test_disk_full_is_recognised_whichever_layer_reports_it(error, full):
    assert is_disk_full(error) is full


def test_files_written_atomically_get_an_ordinary_files_mode(tmp_path):
    """report.html, leaderboard.csv and exports were 0600 (mkstemp's mode) beside a 0644 fit.log: a
    report that another user, or a web server, cannot read."""
    import os
    import stat

    from autotransfer.files import write_text_atomic

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_text_atomic(tmp_path / "report.html", "<html></html>")
    assert stat.S_IMODE(os.stat(tmp_path / "report.html").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_a_pair_killed_between_its_probe_rows_is_probed_again():
    """The fault test's resumed run (a run killed after the first of a pair's rows was recorded) skipped the
    pair's other taps: each row is a trial of its own, and one finished row counted the pair as probed."""
    from autotransfer.search.probe_stage import _probed_pairs
    from autotransfer.search.records import trial_attrs

    study = optuna.create_study(direction="maximize")

    def row(tap: str, **extra) -> None:
        attrs = trial_attrs(candidate=f"net@32/{tap}", pair="net@32", stage="probe", tap=tap, **extra)
        study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs=attrs))

    row("blocks.0", pair_rows=3)
    assert _probed_pairs(study) == set()  # 1 of its 3 rows
    row("blocks.1", pair_rows=3)
    row("head", pair_rows=3)
    assert _probed_pairs(study) == {"net@32"}
    row("blocks.0+head")  # a combined probe's row, recorded later, counts no rows of its own
    assert _probed_pairs(study) == {"net@32"}
    older = optuna.create_study(direction="maximize")
    older.add_trial(
        optuna.trial.create_trial(value=0.9, user_attrs=trial_attrs(candidate="old@32/head", stage="probe"))
    )
    assert _probed_pairs(older) == {"old@32"}  # a study of an earlier version: its rows are whole pairs
