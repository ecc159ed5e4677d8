"""`fit` end to end on a tiny timm model with local weights: search, budget, failures, resume, Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import optuna
import pandas as pd
import pytest
from conftest import SPACE

from autotransfer import AutoTransfer, Pipeline
from autotransfer.budget import Deadline, format_duration, parse_duration
from autotransfer.errors import AutoTransferError
from autotransfer.options import RunOptions
from autotransfer.search.auto_space import AutoChoice
from autotransfer.search.records import TrialRecord
from autotransfer.search.space import load_search_space


def _fit(env, budget="3m", **kwargs):
    return AutoTransfer(
        time_budget=budget, search_space=env["space"], out=env["out"], profile_backbone="test_efficientnet", **kwargs
    )


def test_fit_returns_a_pipeline_and_a_complete_run_directory(fit_env):
    tic = time.monotonic()
    estimator = _fit(fit_env)
    assert estimator.fit(fit_env["data"]) is estimator  # scikit-learn: fit returns self
    assert time.monotonic() - tic < 180
    out = fit_env["out"]
    for name in (
        "pipeline/pipeline.json",
        "pipeline/model.safetensors",
        "leaderboard.csv",
        "profile.json",
        "report.html",
        "study.db",
        "fit.log",
    ):
        assert (out / name).is_file(), name
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["stage"]) == {"probe", "finetune"}
    assert board["chosen"].sum() == 1 and len(board) == len(estimator.leaderboard_)
    assert {"linear_probe", "mid_layer_probe"} <= set(board["strategy"])
    finetuned = board[board["stage"] == "finetune"]
    leftover = finetuned["epochs_why"].fillna("").str.startswith("leftover")
    assert (~leftover).sum() == 3  # max_trials; then most of the budget was left: the best configuration, longer
    assert leftover.sum() == 1 and finetuned.loc[leftover, "epochs_planned"].item() > 2
    assert estimator.profile_["quadrant"] and estimator.run_dir_ == out
    assert estimator.classes_.tolist() == ["a", "b", "c"] and estimator.best_["val_accuracy"] is not None
    assert estimator.predict(fit_env["data"]).shape == (36,) and estimator.predict_proba(fit_env["data"]).shape == (
        36,
        3,
    )
    loaded = Pipeline.load(out)
    assert len(loaded.predict(fit_env["data"])) == 36
    assert loaded.spec["metrics"]["val_accuracy"] == board.loc[board["chosen"], "val_accuracy"].item()
    html = (out / "report.html").read_text()
    assert "Leaderboard" in html and "<svg" in html
    assert estimator.get_params()["time_budget"] == "3m"  # the sklearn parameter contract
    # 36 images leave most of 3 minutes unused (max_trials): the reasons end with what the last stages took
    # of the time the search left them (the seventh fresh user: 38 s unused, the reserve not mentioned)
    profile = json.loads((out / "profile.json").read_text())
    assert profile["budget_unused"]["share"] > 0.1, profile["budget_unused"]
    assert profile["search_ends"][-1].startswith("the ensemble, refit and save took "), profile["search_ends"]


def test_the_recipe_then_the_profile_prior_seed_the_first_fine_tuning_trials(fit_env):
    _fit(fit_env).fit(fit_env["data"])
    study = optuna.load_study(study_name="finetune", storage=f"sqlite:///{fit_env['out'] / 'study.db'}")
    first = study.trials[0]
    assert first.user_attrs.get("seeded_by", "").startswith("recipe")
    assert first.params["strategy"] == "lp_ft" and first.params["augmentation"] == "crop"  # augmentation on
    assert study.trials[1].user_attrs.get("seeded_by") == "profile prior"
    assert study.user_attrs["candidates"] and first.params["candidate"] == study.user_attrs["candidates"][0]


def test_a_failing_trial_is_recorded_and_the_search_goes_on(fit_env, monkeypatch):
    import autotransfer.search.trial_body as search_module

    real = search_module.finetune
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "finetune", flaky)
    estimator = _fit(fit_env)
    estimator.fit(fit_env["data"])
    board = estimator.leaderboard_
    failed = board[board["status"] == "fail"]
    assert len(failed) == 1 and "out of memory" in failed["error"].item()
    assert (board["status"] == "complete").sum() >= 3


def test_running_again_resumes_without_repeating_finished_trials(fit_env):
    _fit(fit_env).fit(fit_env["data"])
    storage = f"sqlite:///{fit_env['out'] / 'study.db'}"
    before = {t.number: t.value for t in optuna.load_study(study_name="finetune", storage=storage).trials}
    probes = len(optuna.load_study(study_name="probes", storage=storage).trials)
    space = fit_env["space"]
    space.write_text(SPACE.replace("max_trials: 3", "max_trials: 3"))
    _fit(fit_env).fit(fit_env["data"])  # same command: nothing left to do but the refit
    after = optuna.load_study(study_name="finetune", storage=storage).trials
    assert {t.number: t.value for t in after} == before
    assert len(optuna.load_study(study_name="probes", storage=storage).trials) == probes


def test_a_different_search_in_the_same_run_directory_is_refused(fit_env):
    _fit(fit_env, budget="2m").fit(fit_env["data"])
    with pytest.raises(AutoTransferError, match="holds a search with another seed"):
        _fit(fit_env, seed=1).fit(fit_env["data"])


def test_sigkill_mid_search_then_resume_loses_no_finished_trial(fit_env, cli):
    space = fit_env["space"]
    space.write_text(SPACE.replace("max_trials: 3", "max_trials: 6").replace("epochs: 2", "epochs: 3"))
    args = [
        sys.executable,
        "-c",
        "from autotransfer.cli import main; main()",
        "fit",
        str(fit_env["data"]),
        "--search-space",
        str(space),
        "--out",
        str(fit_env["out"]),
        "--time-budget",
        "4m",
        "--profile-backbone",
        "test_efficientnet",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    storage = f"sqlite:///{fit_env['out'] / 'study.db'}"
    finished: dict[int, float] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(1.0)
        try:
            trials = optuna.load_study(study_name="finetune", storage=storage).trials
        except Exception:  # the study does not exist yet
            continue
        finished = {t.number: t.value for t in trials if t.state.is_finished()}
        if len(finished) >= 2:
            break
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = cli(args[3:])
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="finetune", storage=storage).trials
    after = {t.number: t.value for t in trials}
    assert all(after[n] == v for n, v in finished.items())  # nothing finished was lost or redone
    assert sum(t.state.is_finished() for t in trials) >= 6 and "resuming" in (fit_env["out"] / "fit.log").read_text()
    assert Pipeline.load(fit_env["out"]).spec["metrics"]["val_accuracy"] > 0


def test_a_budget_too_small_names_the_minimum(fit_env, cli):
    result = cli(
        [
            "fit",
            str(fit_env["data"]),
            "--search-space",
            str(fit_env["space"]),
            "--out",
            str(fit_env["out"]),
            "--time-budget",
            "1s",
            "--profile-backbone",
            "test_efficientnet",
        ]
    )
    assert result.exit_code == 2
    assert "too small" in result.output and "at least" in result.output and "Traceback" not in result.output


def test_ray_backend_runs_a_tiny_search_locally(fit_env):
    estimator = _fit(fit_env, budget="4m", backend="ray", cpus_per_trial=1)
    pipeline = estimator.fit(fit_env["data"]).pipeline_
    board = estimator.leaderboard_
    ray_rows = board[board["stage"] == "finetune"]
    assert len(ray_rows) >= 1 and ray_rows["val_accuracy"].notna().any()
    assert len(pipeline.predict(fit_env["data"])) == 36


@pytest.mark.parametrize(
    "text,seconds", [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), (45, 45)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "what"),
    [("", "Cannot read"), ("ten minutes", "Cannot read"), ("-5m", "must be positive"), ("0", "must be positive")],
)
def test_bad_durations_are_explained(text, what):
    with pytest.raises(AutoTransferError, match=what) as caught:
        parse_duration(text)
    assert caught.value.fix.startswith("write e.g. 90s, 10m")
    assert format_duration(5400) == "1h30m"


def test_built_in_search_spaces_load():
    for name in ("fast", "default", "thorough"):
        space = load_search_space(name)
        assert space.finetune_strategies and space.ranges["head_lr"].log
        assert bool(space.backbones) == bool(space.resolutions) == (name != "default")  # default: auto


@pytest.mark.parametrize(
    "text,named",
    [
        ("backbonez: [x]", "backbonez"),
        ("resolutions: [64, -1]", "resolutions"),
        ("strategies: [linear_probe, magic]", "magic"),
        ("finetune: {epochs: 0}", "finetune.epochs"),
        ("finetune: {head_lr: {low: 1.0, high: 0.1}}", "finetune.head_lr"),
        ("probe: {heads: [forest]}", "forest"),
        ("finetune: {unknown_knob: 3}", "finetune.unknown_knob"),
        ("- just\n- a list", "mapping"),
        ("backbones: [a\n  b: c", "not valid YAML"),
        ("finetune:\n  epochs: [1, 2\nprobe: {}", "line 3, column 6"),  # the fresh user: no line was named
    ],
)
def test_bad_search_space_files_name_the_key_and_value(tmp_path, text, named):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(AutoTransferError) as error:
        load_search_space(path)
    assert named in str(error.value) and str(path) in str(error.value)


def test_a_search_space_file_cannot_run_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("backbones: !!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(AutoTransferError, match="not valid YAML"):
        load_search_space(path)


def test_sampler_and_pruner_are_the_users_to_choose(fit_env):
    import optuna

    from autotransfer import AutoTransfer

    class CountingSampler(optuna.samplers.RandomSampler):
        calls = 0

        def before_trial(self, study, trial):
            CountingSampler.calls += 1
            super().before_trial(study, trial)

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    estimator = AutoTransfer(
        time_budget="5m",
        search_space=fit_env["space"],
        out=fit_env["out"],
        profile_backbone="test_efficientnet",
        sampler=CountingSampler(seed=0),
        pruner=AlwaysPrune(),
        verbose=0,
    )
    assert isinstance(estimator.get_params()["sampler"], CountingSampler)  # a scikit-learn parameter like the others
    estimator.fit(fit_env["data"])
    study = optuna.load_study(study_name="finetune", storage=f"sqlite:///{fit_env['out'] / 'study.db'}")
    searched = [t for t in study.trials if not t.user_attrs.get("seeded_by", "").startswith("leftover")]
    assert CountingSampler.calls == len(study.trials) and len(searched) == 3  # + the best one, longer (leftover time)
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in searched)
    assert all(t.user_attrs["epochs_run"] == 1 for t in searched)  # pruned after their first epoch


def _context_timed_in_a_burst(fit_env, budget: float):
    """A run context whose `auto` timed the backbone at 100 s per image (a burst of load)."""
    from autotransfer.report.progress import Progress
    from autotransfer.search.context import RunContext
    from autotransfer.search.settings import SearchSettings

    settings = SearchSettings(load_search_space(fit_env["space"]), budget, fit_env["out"],
                              options=RunOptions(profile_backbone="test_efficientnet"))  # fmt: skip
    context = RunContext(fit_env["data"], settings, Progress(budget, verbose=0))
    context.backbones, context.resolutions = ("test_efficientnet",), (32,)
    context.auto = AutoChoice(backbones=("test_efficientnet",), resolutions=(32,), native_side=32,
                              profile_resolution=32, seconds_per_image={"test_efficientnet": 100.0})  # fmt: skip
    return context


def test_a_budget_timed_in_a_burst_of_load_is_timed_again_before_it_is_refused(fit_env, monkeypatch):
    from autotransfer.search import run

    run.check_minimum_budget(_context_timed_in_a_burst(fit_env, 60.0))  # timed again: about 1 ms per image
    monkeypatch.setattr(run, "seconds_per_image", lambda *args: 100.0)  # the load lasts
    with pytest.raises(AutoTransferError, match="need at least") as caught:
        run.check_minimum_budget(_context_timed_in_a_burst(fit_env, 60.0))
    minimum = caught.value.what.split("need at least ")[1].split()[0]  # one number, the same in the fix
    assert f"use --time-budget {minimum} or more" in caught.value.fix and "about" not in caught.value.what


def test_the_reserve_grows_with_the_load_the_probes_measured(fit_env):
    from autotransfer.search import planner

    context = _context_timed_in_a_burst(fit_env, 60.0)
    context.auto = replace(context.auto, seconds_per_image={"test_efficientnet": 0.01})
    quiet, evaluation = context.reserve(None), context.evaluation_seconds(None)
    assert evaluation > 0
    context.slowdown = 3.0  # the last pair's extraction took 3x its estimate
    assert context.reserve(None) == pytest.approx(quiet + 2 * (planner.SAVE_SECONDS + evaluation))
    context.slowdown = 0.7  # faster than timed: the forwards as measured, saving as estimated
    assert context.reserve(None) == pytest.approx(quiet - 0.3 * evaluation)
    context.slowdown = 0.01  # one fast extraction never takes more than half the forwards' time away
    assert context.reserve(None) == pytest.approx(quiet - 0.5 * evaluation)


def test_the_reserve_keeps_a_refit_only_while_it_fits(fit_env):
    """A fine-tuned best keeps room for its refit on train+val; once that refit no longer fits, the
    refit is skipped anyway (refit.py), so only evaluating and saving are kept and the rest is used. A
    probe keeps room for its features extracted again in fp32 (refit.probe_model)."""
    context = _context_timed_in_a_burst(fit_env, 600.0)
    context.auto = replace(context.auto, seconds_per_image={"test_efficientnet": 0.01})
    best = TrialRecord(stage="finetune", trial=0, status="complete", resolution=32, backbone="test_efficientnet",
                       best_epoch=3, epoch_seconds=20.0)  # fmt: skip
    probe = context.reserve(replace(best, stage="probe"))
    assert context.refit_fits(best) and context.reserve(best) > probe + 4 * 20.0
    context.deadline.seconds = context.deadline.elapsed() + 60.0  # 60 s left: a 4-epoch refit needs more
    assert not context.refit_fits(best) and context.reserve(best) == pytest.approx(context.reserve(None))
    assert probe > context.reserve(None)


def test_a_probe_best_keeps_room_for_its_heads_refit_at_the_measured_load(fit_env):
    """The probe's estimate of its head's refit on train+val (refit_seconds, quiet machine) is kept, slowed
    by the load the probes measured: a slow refit no longer runs past the budget (refit.probe_model has no
    deadline)."""
    context = _context_timed_in_a_burst(fit_env, 600.0)
    probe = TrialRecord(stage="probe", trial=0, status="complete", resolution=32, backbone="test_efficientnet",
                        tap="head", head="svm", C=1.0, refit_seconds=0.0)  # fmt: skip
    cheap = context.reserve(probe)
    assert context.reserve(replace(probe, refit_seconds=40.0)) == pytest.approx(cheap + 40.0)
    context.slowdown = 2.5
    cheap = context.reserve(probe)
    assert context.reserve(replace(probe, refit_seconds=40.0)) == pytest.approx(cheap + 100.0)


def test_the_reserve_counts_forwards_at_the_speed_the_probes_extraction_measured(fit_env):
    """`auto` timed a few batches in a burst of load; the probes then extracted the pair's features, a whole
    pass: that measurement, not the timing, sizes the fp32 extraction and the evaluation the final pipeline
    needs. Features read from the cache measure no forward: the pass that filled the cache is used where it was
    recorded, else the timing stays."""
    from autotransfer.search.context import FP32_SLOWDOWN

    context = _context_timed_in_a_burst(fit_env, 6000.0)
    probe = TrialRecord(stage="probe", trial=0, status="complete", resolution=32, backbone="test_efficientnet",
                        tap="head", head="svm", C=1.0)  # fmt: skip
    timed = context.reserve(probe)
    context.extract_seconds["test_efficientnet@32"] = 3.0
    measured = context.reserve(probe)
    assert measured < timed / 100
    held_out = 1 - context.split_sizes(32)[0] / context.n_images()
    assert context.evaluation_seconds(probe) == pytest.approx(2 * 3.0 * held_out)
    assert measured == pytest.approx(context.reserve(None) + FP32_SLOWDOWN * 3.0)  # the fp32 extraction
    context.cached_pairs.add("test_efficientnet@32")
    assert context.reserve(probe) == pytest.approx(timed)
    # read from the cache, the pass that filled it (another run's) is the measurement
    context.recorded_extraction["test_efficientnet@32"] = 3.0
    assert context.reserve(probe) == pytest.approx(measured)


@pytest.mark.parametrize("combine", [True, False])
def test_the_best_pairs_taps_are_probed_together_once(fit_env, combine):
    space = fit_env["space"]
    text = space.read_text().replace("strategies: [linear_probe, mid_layer_probe, lp_ft, finetune_top, finetune_all]",
                                     "strategies: [linear_probe, mid_layer_probe]")  # fmt: skip
    space.write_text(text.replace("top_taps: 0}", f"top_taps: 0, combine_taps: {str(combine).lower()}}}"))
    _fit(fit_env).fit(fit_env["data"])
    board = pd.read_csv(fit_env["out"] / "leaderboard.csv")
    combined = board[board["tap"].str.contains("+", regex=False)]
    if not combine:
        assert combined.empty
        return
    taps = "blocks.0+blocks.1+blocks.2+blocks.3+blocks.4+head"  # every probed tap of the one pair, in order
    assert list(combined["tap"]) == [taps] and list(combined["strategy"]) == ["mid_layer_probe"]
    assert f"probe test_efficientnet@32/{taps}" in (fit_env["out"] / "fit.log").read_text()


def test_pairs_the_probes_left_for_fine_tuning_are_probed_with_the_time_it_leaves(fit_env, monkeypatch):
    from autotransfer.search import planner, run

    space = fit_env["space"]
    text = space.read_text().replace("resolutions: [32]", "resolutions: [32, 40]")
    space.write_text(text.replace("max_trials: 3", "max_trials: 1"))
    monkeypatch.setattr(run, "finetune_first", lambda *args: True)  # the profile recommends fine-tuning
    monkeypatch.setattr(planner, "cheap_share", lambda finetune_first: 1e-6 if finetune_first else 1.0)
    _fit(fit_env).fit(fit_env["data"])
    log = (fit_env["out"] / "fit.log").read_text()
    assert "cheap stage stops before test_efficientnet@40" in log  # the first pass kept to its share
    board = pd.read_csv(fit_env["out"] / "leaderboard.csv")
    assert set(board.loc[board["stage"] == "probe", "resolution"]) == {32, 40}  # the second pass probed it
    assert "fine-tuning: max_trials (1) reached" in log and log.index("max_trials (1) reached") < log.rindex("probe ")


@pytest.mark.parametrize("metric", ["log_loss", "roc_auc"])
def test_a_probability_metric_is_reported_on_the_test_split(fit_env, metric):
    """The fresh-user trial: with --metric roc_auc, no held-out ROC AUC appeared anywhere."""
    import json

    from conftest import make_imagefolder

    root = fit_env["data"].parent / "two"
    make_imagefolder(root / "train", {"a": 12, "b": 12})
    make_imagefolder(root / "test", {"a": 4, "b": 4}, seed=1)
    _fit(fit_env, budget="1m", metric=metric).fit(root)
    spec = json.loads((fit_env["out"] / "pipeline" / "pipeline.json").read_text())
    assert spec["metrics"]["metric"] == metric
    value = spec["metrics"]["test"][metric]
    assert 0.0 <= value <= 1.0 if metric == "roc_auc" else value > 0.0  # log_loss: the loss itself


def test_a_finished_run_is_reported_not_searched_again_and_the_outputs_say_things_once(fit_env, cli):
    """The fresh-user trial: `--resume` on a finished run started a second full search without a word; "Skipped
    2 file(s)" was printed twice, a label conflict passed unnoticed, and fit.log had no final summary."""
    data = fit_env["data"]
    (data / "a" / "broken.png").write_bytes(b"not an image")
    (data / "b" / "broken.jpg").write_bytes(b"nope")
    (data / "c" / "also-a.png").write_bytes((data / "a" / "img_0.png").read_bytes())
    args = ["fit", str(data), "--search-space", str(fit_env["space"]), "--out", str(fit_env["out"]),
            "--profile-backbone", "test_efficientnet", "--time-budget", "3m"]  # fmt: skip
    first = cli(args)
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())
    assert said.count("Skipped 2 file(s)") == 1 and said.count("1 label conflict(s)") == 1
    assert f"{data / 'a' / 'img_0.png'} (a) = {data / 'c' / 'also-a.png'} (c)" in said
    # issue 26's fourth trial: "probes (6)" then 11 probes ran (the count was of backbone/size pairs, unnamed)
    assert "probes (1 backbone/size pair(s))" in said and "fine-tuning (3 trial(s) at most)" in said
    log = (fit_env["out"] / "fit.log").read_text()
    assert "Done in" in log and "leaderboard (top 8" in log and "search score:" in log
    storage = f"sqlite:///{fit_env['out'] / 'study.db'}"
    trials = len(optuna.load_study(study_name="finetune", storage=storage).trials)

    again = cli([*args[:-1], "10m", "--resume"])  # a larger budget does not start a second search either
    assert again.exit_code == 0, again.output
    assert "holds a finished run (its pipeline is saved): nothing was searched again" in " ".join(again.output.split())
    assert "give another --out" in again.output and "Done in" not in again.output
    assert len(optuna.load_study(study_name="finetune", storage=storage).trials) == trials
    estimator = _fit(fit_env, budget="10m").fit(data)  # the API: the same answer, the saved run's attributes
    assert estimator.classes_.tolist() == ["a", "b", "c"] and estimator.best_["chosen"]
    assert len(optuna.load_study(study_name="finetune", storage=storage).trials) == trials
    frame = estimator.predict_proba_frame(data / "c")
    assert frame.index.name == "path" and list(frame.columns) == ["a", "b", "c"]
    assert list(frame.index) == sorted(str(p) for p in (data / "c").glob("*.png"))  # the documented order
    assert (frame.to_numpy() == estimator.predict_proba(data / "c")).all()


def test_the_estimator_before_fit_raises_not_fitted_and_a_missing_path_prints_nothing(tmp_path, capsys):
    from sklearn.exceptions import NotFittedError

    estimator = AutoTransfer()
    for method in (estimator.predict, estimator.predict_proba, estimator.predict_proba_frame):
        with pytest.raises(NotFittedError):
            method(tmp_path)
    with pytest.raises(AutoTransferError, match="The dataset path does not exist"):
        AutoTransfer(out=tmp_path / "run").fit(tmp_path / "no-such-folder")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "" and not (tmp_path / "run").exists()


def test_the_fast_space_leaves_the_stop_to_the_budget():
    """The fresh-user trial: `search_space="fast"` with a 1-minute budget stopped after 18 s at max_trials (8)."""
    fast, default = load_search_space("fast"), load_search_space("default")
    assert fast.max_trials >= default.max_trials and fast.epochs <= default.epochs
    assert fast.probe_heads == ("torch",)


def test_skipped_files_and_label_conflicts_are_said_once_per_run_whatever_the_sizes_decoded(fit_env, caplog):
    """The fresh-user trial: "Skipped 2 file(s)" was printed twice (the data is decoded at several sizes)."""
    from autotransfer.report.progress import Progress
    from autotransfer.search.context import RunContext
    from autotransfer.search.settings import SearchSettings

    data = fit_env["data"]
    (data / "a" / "broken.png").write_bytes(b"not an image")
    (data / "c" / "also-a.png").write_bytes((data / "a" / "img_0.png").read_bytes())
    settings = SearchSettings(load_search_space(fit_env["space"]), 60.0, fit_env["out"])
    context = RunContext(data, settings, Progress(60.0, verbose=0))
    with caplog.at_level("WARNING", logger="autotransfer"):
        for size in (32, 48, 32):
            assert len(context.dataset(size).conflicts) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("Skipped 1 file(s)") for m in messages) == 1
    assert sum(m.startswith("1 label conflict(s)") for m in messages) == 1


def test_a_probe_whose_fp32_features_were_extracted_keeps_no_room_to_extract_them_again(fit_env):
    """Once a probe's fp32 features are in the feature cache (the ensemble stage extracts them for its
    members), its refit reads them: the reserve drops to evaluating and saving, so that time is used."""
    context = _context_timed_in_a_burst(fit_env, 600.0)
    context.auto = replace(context.auto, seconds_per_image={"test_efficientnet": 0.01})
    best = TrialRecord(stage="probe", trial=0, status="complete", resolution=32, backbone="test_efficientnet",
                       tap="head")  # fmt: skip
    before = context.reserve(best)
    assert before > context.reserve(None)
    context.fp32_features.add(("test_efficientnet", 32, "blocks.2"))  # another tap: still to extract
    assert context.reserve(best) == pytest.approx(before)
    context.fp32_features.add(("test_efficientnet", 32, "head"))
    assert context.reserve(best) == pytest.approx(context.reserve(None))


def test_time_left_after_the_search_goes_to_the_backbones_auto_left_out(fit_env):
    """Fine-tuning found no trial that fits and every chosen pair was probed: the backbones `auto` timed
    but left out are probed next (fastest first), unless ending now leaves at most 10% unused."""
    from autotransfer.search.widen import widen_to_skipped_backbones

    context = _context_timed_in_a_burst(fit_env, 600.0)
    timed = {"test_efficientnet": 1e-4, "test_convnext": 3e-4, "test_vit": 2e-4}
    context.auto = replace(context.auto, seconds_per_image=timed)
    assert widen_to_skipped_backbones(context, None)
    assert context.backbones == ("test_efficientnet", "test_vit", "test_convnext")
    assert not widen_to_skipped_backbones(context, None)  # nothing more to add

    context = _context_timed_in_a_burst(fit_env, 600.0)
    context.auto = replace(context.auto, seconds_per_image=timed)
    context.deadline = Deadline(600.0, time.monotonic() - 570.0)  # 5% left
    assert not widen_to_skipped_backbones(context, None)
    assert context.backbones == ("test_efficientnet",)


def test_time_left_after_the_search_goes_to_the_sizes_auto_did_not_choose(fit_env, monkeypatch):
    """The fifth fresh-user trial: a 2-minute run on 500 small images left 30% of its budget unused; every
    chosen pair was probed and no fine-tuning trial fitted. The sizes of `auto`'s ladder it did not choose
    come next, nearest the best's size first, each only where decoding the data at it and probing it fit;
    never when the space pins the sizes or ending now leaves at most 10% unused."""
    from autotransfer.search.context import RunContext
    from autotransfer.search.objective import Objective
    from autotransfer.search.widen import widen_to_other_sizes

    best = TrialRecord(stage="probe", trial=0, status="complete", resolution=64, backbone="test_efficientnet")
    decodes: list[int] = []
    monkeypatch.setattr(RunContext, "decode_estimate", lambda self, size: decodes.append(size) or 1.0)
    monkeypatch.setattr(RunContext, "reserve", lambda self, best, refit=True: 10.0)

    def context_at(native: int, resolutions: tuple[int, ...], left: float):
        context = _context_timed_in_a_burst(fit_env, 600.0)
        context.auto = replace(context.auto, native_side=native, resolutions=resolutions,
                               seconds_per_image={"test_efficientnet": 1e-4})  # fmt: skip
        context.resolutions = resolutions
        context.settings.space = replace(context.settings.space, resolutions=())  # left to `auto`
        context.objective = Objective(metric="accuracy", reason="test")
        context.deadline = Deadline(600.0, time.monotonic() - (600.0 - left))
        return context

    context = context_at(28, (64, 128), left=300.0)  # the ladder for 28-px images: 64, 96, 128
    assert widen_to_other_sizes(context, best) and context.resolutions == (64, 96, 128)
    assert decodes == [96]  # each new size's decoding is estimated before it is added
    assert not widen_to_other_sizes(context, best)  # nothing more on the ladder

    context = context_at(300, (128, 224), left=300.0)  # 64..224: nearest 64 px first, then 96, 160, 192
    decodes.clear()
    assert widen_to_other_sizes(context, best) and context.resolutions == (64, 96, 128, 160, 192, 224)
    assert decodes == [64, 96, 160, 192]
    monkeypatch.setattr(RunContext, "decode_estimate", lambda self, size: 100.0 if size > 96 else 1.0)
    context = context_at(300, (128, 224), left=100.0)  # decoding 160 or 192 px would not fit
    assert widen_to_other_sizes(context, best) and context.resolutions == (64, 96, 128, 224)

    assert not widen_to_other_sizes(context_at(28, (64, 128), left=50.0), best)  # 40 s of 600 after the reserve
    context = context_at(28, (64, 128), left=300.0)
    context.settings.space = replace(context.settings.space, resolutions=(64, 128))  # pinned by the space
    assert not widen_to_other_sizes(context, best)


def test_a_second_probe_pass_counts_only_the_pairs_it_has_left(fit_env, monkeypatch):
    """The fifth fresh-user trial: "probes (8 backbone/size pair(s)): the pairs skipped before", then 2 ran.
    The second pass (after fine-tuning) names the pairs it has left, and says nothing when none is left."""
    from autotransfer.search import probe_stage
    from autotransfer.search.candidates import Candidate
    from autotransfer.search.objective import Objective
    from autotransfer.search.records import trial_attrs

    context = _context_timed_in_a_burst(fit_env, 600.0)
    context.auto = replace(context.auto, seconds_per_image={"test_efficientnet": 1e-4})
    context.objective = Objective(metric="accuracy", reason="")
    study = optuna.create_study(direction="maximize")
    attrs = trial_attrs(stage="probe", candidate=Candidate("test_efficientnet", 32, "head").key)
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs=attrs))
    stages, probed = [], []
    monkeypatch.setattr(context.progress, "stage", lambda name, total, **kw: stages.append((name, total)))
    monkeypatch.setattr(probe_stage, "_probe_pair", lambda study, context, config, name, size: probed.append(name) or 1)
    best = TrialRecord(stage="probe", trial=0, status="complete", resolution=32, backbone="test_efficientnet")
    probe_stage.run_probe_stage(study, context, False, [], keep_for=best)
    assert stages == [] and probed == []  # every pair probed before
    context.backbones = ("test_efficientnet", "test_vit")
    probe_stage.run_probe_stage(study, context, False, [], keep_for=best)
    assert stages == [("probes", 1)] and probed == ["test_vit"]


def test_a_run_that_could_start_no_candidate_names_the_budget_it_needs(fit_env, monkeypatch):
    """The budget passed the check before the run, then a slow first stage (a first decode of large
    photos on a loaded machine) left no room for one candidate: the error names a budget, not only
    'raise it' (the CLI's exit code for it is test_cli_errors')."""
    from autotransfer.search import run

    profile_stage = run.profile_stage

    def slow_profile(context):
        profile = profile_stage(context)
        context.deadline.start -= context.deadline.left() - 2.0  # as if it had taken all but 2 s
        return profile

    monkeypatch.setattr(run, "profile_stage", slow_profile)
    with pytest.raises(AutoTransferError, match=r"No trial finished within the time budget \(40s\)") as caught:
        _fit(fit_env, budget="40s").fit(fit_env["data"])
    needed = caught.value.what.split("need at least ")[1].split()[0]
    assert parse_duration(needed) > 40 and f'time_budget="{needed}" or more' in str(caught.value)


def test_a_fine_tuning_epoch_is_estimated_from_computed_forwards_at_the_training_precision(fit_env, monkeypatch):
    """A pair whose features were read from the cache timed no forward pass (auto's timing stands in),
    and a CPU whose probes extracted in bf16 trains in fp32, FP32_SLOWDOWN times slower."""
    from autotransfer.search import context as context_module

    context = _context_timed_in_a_burst(fit_env, 600.0)
    context.auto = replace(context.auto, seconds_per_image={"test_efficientnet": 0.01})
    context.extract_seconds["test_efficientnet@32"] = 5.0
    monkeypatch.setattr(context_module, "bf16_supported", lambda device: False)
    assert context.training_forward_seconds("test_efficientnet", 32) == pytest.approx(5.0)
    monkeypatch.setattr(context_module, "bf16_supported", lambda device: True)
    slower = 5.0 * context_module.FP32_SLOWDOWN
    assert context.training_forward_seconds("test_efficientnet", 32) == pytest.approx(slower)
    context.cached_pairs.add("test_efficientnet@32")  # read, not computed: 0.01 s per image of auto's timing
    timed = 0.01 * context.n_images() * context_module.FP32_SLOWDOWN
    assert context.training_forward_seconds("test_efficientnet", 32) == pytest.approx(timed)
    assert context.training_forward_seconds("test_vit", 32) is None  # neither probed nor timed


def test_decoding_at_a_new_size_is_timed_and_free_once_cached(fit_env):
    """What widening to another size costs before any image is decoded at it (RunContext.decode_estimate)."""
    context = _context_timed_in_a_burst(fit_env, 600.0)
    assert context.decode_estimate(24) > 0  # timed on a few files, scaled to all of them
    context.dataset(24)
    assert context.decode_estimate(24) == 0.0  # decoded in this run
    assert _context_timed_in_a_burst(fit_env, 600.0).decode_estimate(24) == 0.0  # in the decode cache


def test_the_probes_after_the_search_leave_the_ensemble_its_room(fit_env, monkeypatch):
    """real-cpu A/B (animal-mnist, 3 minutes): the backbone `auto` left out was probed in the last 40 s and
    the ensemble, 0.964 on validation against 0.932 for the best alone in an earlier run, got no time. The
    probes run after the search keep room for two members past the best."""
    from autotransfer.search.context import RunContext
    from autotransfer.search.widen import widen_to_skipped_backbones

    context = _context_timed_in_a_burst(fit_env, 600.0)
    context.auto = replace(context.auto, seconds_per_image={"test_efficientnet": 1e-3, "test_vit": 2e-3})
    best = TrialRecord(stage="probe", trial=0, status="complete", resolution=32, backbone="test_efficientnet",
                       tap="head")  # fmt: skip
    assert context.ensemble_room(best) > 0 and context.ensemble_room(None) == 0.0
    context.settings.options = replace(context.settings.options, ensemble=False)  # --no-ensemble
    assert context.ensemble_room(best) == 0.0

    monkeypatch.setattr(RunContext, "reserve", lambda self, best, refit=True: 10.0)
    monkeypatch.setattr(RunContext, "ensemble_room", lambda self, best: 100.0)
    context.deadline = Deadline(600.0, time.monotonic() - 450.0)  # 150 s left: 140 past the reserve, 40 past both
    assert not widen_to_skipped_backbones(context, best) and context.backbones == ("test_efficientnet",)
    monkeypatch.setattr(RunContext, "ensemble_room", lambda self, best: 0.0)
    assert widen_to_skipped_backbones(context, best)
