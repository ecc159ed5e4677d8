"""The CLI and the Python API as two front ends of one engine: errors name their option in each one's
terms, argument errors come before the heavy imports, and both end fit.log with the same summary.
Also the pieces the thin CLI hands to others: ScoreSummary, Pipeline.top_k and repr, bench's selection,
the leaderboard table at 80 columns."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import make_imagefolder, small_probe_pipeline
from rich.console import Console

from autotransfer.errors import AutoTransferError, cli_flag, python_argument

PROBE = (
    "import sys\nfrom autotransfer.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
    "    print('torch' in sys.modules, e.code)"
)


def _cli(*args) -> subprocess.CompletedProcess:
    """The command in a child process; stdout ends with whether torch was imported and the exit code."""
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_an_error_names_its_option_as_each_front_end_writes_it():
    error = AutoTransferError(
        "The budget is too small.", where="{option}", fix="use {option:8m14s} or more, or --weights PATH {a}.",
        option="time_budget",
    )  # fmt: skip
    assert error.where == "--time-budget" and error.fix == "use --time-budget 8m14s or more, or --weights PATH {a}."
    assert "Where: --time-budget" in str(error)
    api = error.in_terms(python_argument)
    assert api.where == "time_budget=" and api.fix == 'use time_budget="8m14s" or more, or --weights PATH {a}.'
    assert api.option == "time_budget" and "--time-budget" not in str(api)
    plain = AutoTransferError("A {brace} without an option.", fix="{option} stays")
    assert plain.what == "A {brace} without an option." and plain.fix == "{option} stays"
    assert cli_flag("profile_backbone") == "--profile-backbone" and python_argument("out") == "out="


def test_the_api_names_its_parameters_not_the_clis_options(tmp_path):
    from autotransfer.api import AutoTransfer

    data = make_imagefolder(tmp_path / "data", {"a": 4, "b": 4})
    with pytest.raises(AutoTransferError) as caught:
        AutoTransfer(time_budget="1s", out=tmp_path / "run").fit(data)
    assert "raise time_budget=:" in caught.value.fix and "--" not in str(caught.value)
    with pytest.raises(AutoTransferError, match="Where: metric=") as caught:
        AutoTransfer(metric="nosuch", out=tmp_path / "run").fit(data)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--metric", "nosuch"], ("Unknown metric 'nosuch'", "Where: --metric")),
        (["--storage", "postgresql//bad"], ("is malformed", "Where: --storage")),
        (["--backend", "dask"], ("Unknown backend 'dask'", "Where: --backend")),
        (["--val-fraction", "0.95"], ("--val-fraction must be between", "Where: --val-fraction")),
    ],
)
def test_argument_errors_of_fit_are_answered_before_torch_is_imported(tmp_path, args, expected):
    """The fresh-user trial: --metric, --storage, --profile-backbone, export --format took 7-15 s to refuse."""
    data = make_imagefolder(tmp_path / "d", {"a": 2, "b": 2})
    done = _cli("fit", data, *args, "--out", tmp_path / "run")
    assert done.stdout.strip().splitlines()[-1] == "False 2", done.stdout + done.stderr
    assert all(text in done.stderr for text in expected), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_an_unknown_profile_backbone_and_export_format_are_answered_before_torch_is_imported(tmp_path):
    data = make_imagefolder(tmp_path / "d", {"a": 2, "b": 2})
    first = _cli("fit", data, "--profile-backbone", "nosuchnet")  # a first check ever lists timm's names once
    again = _cli("fit", data, "--profile-backbone", "mobilenetv2_10")
    assert first.stdout.strip().endswith(" 2") and "Unknown backbone 'nosuchnet'" in first.stderr
    assert again.stdout.strip() == "False 2", again.stdout + again.stderr
    assert "Did you mean: mobilenetv2_100" in again.stderr and "Where: --profile-backbone" in again.stderr
    (tmp_path / "ck").mkdir()
    done = _cli("export", tmp_path / "ck", "--format", "zip", "--out", tmp_path / "m")
    assert done.stdout.strip() == "False 2" and "Unknown export format 'zip'" in done.stderr
    assert "Where: --format" in done.stderr


def test_the_backbone_names_without_torch_agree_with_timm():
    from autotransfer.models.backbone_names import backbone_names, live_names

    cached, live = backbone_names(), live_names()
    for name in ("mobilenetv2_100", "resnet50.a1_in1k", "tv:resnet18", "nosuchnet", "tv:nosuch", "a:b"):
        from autotransfer.models.torchvision_specs import TORCHVISION_SPECS
        from autotransfer.models.zoo import _import_timm

        truth = (name.removeprefix("tv:") in TORCHVISION_SPECS) if name.startswith("tv:") else (
            ":" not in name and _import_timm().is_model(name))  # fmt: skip
        assert cached.is_known(name) == live.is_known(name) == truth, name


def test_the_score_summary_says_how_to_read_each_score():
    from autotransfer.report.score_summary import ScoreSummary

    per_class = {"a": {"recall": 0.5}, "b": {"recall": 0.5}}
    test = {"accuracy": 0.5, "balanced_accuracy": 0.51, "f1_macro": 0.4, "per_class": per_class, "log_loss": 0.7}
    scores = ScoreSummary.from_metrics(
        {"metric": "log_loss", "val_score": -0.25, "val_score_from": "validation split", "test": test}
    )
    assert scores.search_score == 0.25 and scores.lower_is_better and scores.chosen_on_val
    assert scores.search_score_text() == "log_loss 0.2500 (lower is better; maximised as its negative)"
    assert "optimistic" in scores.val_name and scores.search_source == "validation split"
    (split,) = scores.splits
    assert split.split == "test" and split.at_chance and split.probability_scores == {"log_loss": 0.7}
    cv = ScoreSummary.from_metrics({"metric": "accuracy", "val_score": 0.9, "val_score_from": "cross-validation"})
    assert not cv.chosen_on_val and cv.cross_validated and "held-out" in cv.val_name
    # the sixth fresh-user trial: an ensemble's "held-out validation" figure was its selection score on that split
    ensemble = ScoreSummary.from_metrics({"metric": "accuracy", "val_score": 0.76,
                                          "val_score_from": "validation split (members trained on train)"})  # fmt: skip
    assert ensemble.chosen_on_val and "optimistic" in ensemble.val_name
    assert ScoreSummary.from_metrics({}).search_score_text() is None


def _board(n: int = 8) -> pd.DataFrame:
    rows = [
        {"chosen": i == 0, "strategy": "finetune_partial_lpft" if i % 2 else "linear_probe_combined_taps",
         "backbone": "tf_efficientnet_lite2" if i % 2 else "mobilenetv2_100", "resolution": 224,
         "tap": "blocks.4+blocks.6+head", "val_score": 0.9 - i / 100, "seconds": 123.4, "status": "complete"}
        for i in range(n)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_terminal_leaderboard_reads_at_80_columns():
    """The fresh-user trial: at 80 columns the table's cells were cut to a few letters each."""
    from autotransfer.report.leaderboard_table import leaderboard_table

    for width, left_out in ((80, True), (200, False)):
        console = Console(file=io.StringIO(), width=width, no_color=True)
        console.print(leaderboard_table(_board(), "balanced_accuracy", width))
        lines = console.file.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        rows = [line for line in lines if "0.9" in line or "0.8" in line]
        assert len(rows) == 8  # one line per trial: nothing wrapped
        assert "★" in rows[0] and "linear_probe_comb" in rows[0] and "mobilenetv2_100" in rows[0]
        assert ("left out at this width: px, s, status" in console.file.getvalue()) is left_out
        assert all("blocks." in row for row in rows)  # the tap tells a backbone's probes apart: never left out


def test_inspect_titles_its_table_without_wrapping_at_80_columns(tmp_path):
    root = make_imagefolder(tmp_path / ("a-rather-long-folder-name-" * 3) / "d", {"a": 2, "b": 2})
    done = subprocess.run(
        [sys.executable, "-c", "from autotransfer.cli import main; main()", "inspect", str(root), "--size", "16"],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4 images, 2 classes" in done.stdout and str(root) in done.stdout.replace("\n", "")


def test_bench_selection_names_the_option_and_keeps_the_seeds_asked_for():
    from autotransfer.bench.selection import select
    from autotransfer.bench.suite import load_suite

    suite = load_suite("smoke")
    chosen, only = select(suite, contenders=f" {suite.contenders[0]} ,", seeds=str(suite.seeds[0]))
    assert only == (suite.contenders[0],) and chosen.seeds == (suite.seeds[0],)
    assert select(suite, contenders=None, seeds=None) == (suite, None)
    with pytest.raises(AutoTransferError, match="--contenders: nosuch not in suite"):
        select(suite, contenders="nosuch", seeds=None)
    with pytest.raises(AutoTransferError, match="--seeds 'x'"):
        select(suite, contenders=None, seeds="x")


def test_a_pipeline_ranks_its_top_k_and_shows_what_it_is(pipeline_dir_for_repr):
    import numpy as np

    pipe = pipeline_dir_for_repr
    probabilities = np.array([0.2, 0.5, 0.3])[: len(pipe.classes_)]
    ranked = pipe.top_k(probabilities, 50)
    assert [name for name, _ in ranked] == [str(pipe.classes_[i]) for i in np.argsort(-probabilities, kind="stable")]
    assert pipe.clamp_top_k(50) == len(pipe.classes_) and pipe.clamp_top_k(0) == 1
    shown = repr(pipe)
    assert shown.startswith("Pipeline(backbone='test_efficientnet', tap=") and "resolution=32" in shown
    assert "classes=['a', 'b']" in shown and "accuracy=" in shown
    from autotransfer.deploy.ensemble import EnsemblePipeline

    metrics = {"metric": "log_loss", "val_score": -0.3}
    ensemble = EnsemblePipeline.from_members([pipe, pipe], [0.5, 0.5], metrics=metrics, summary="two probes")
    expected = "EnsemblePipeline(summary='two probes', resolution=32, classes=['a', 'b'], log_loss=0.3000)"
    assert repr(ensemble) == expected


@pytest.fixture(scope="module")
def pipeline_dir_for_repr(tmp_path_factory):
    return small_probe_pipeline(tmp_path_factory.mktemp("repr"), {"a": 4, "b": 4})[0]


def test_the_api_ends_fit_log_with_the_summary_the_cli_prints(tmp_path, monkeypatch):
    """The fresh-user trial: the API's fit.log had no summary; the CLI's had one."""
    from sample_run import dataset_profile, records

    import autotransfer.api as api
    from autotransfer.report.fit_summary import print_fit_summary
    from autotransfer.report.outputs import leaderboard
    from autotransfer.search.run_profile import RunProfile

    rows, profile = records(finetune_finished=True), RunProfile(dataset=dataset_profile())
    fake = SimpleNamespace(
        spec={"metrics": {"metric": "accuracy", "val_score": 0.9, "val_score_from": "validation split"}},
        describe=lambda: "a probe", classes_=["a", "b"],
    )  # fmt: skip
    result = SimpleNamespace(pipeline=fake, leaderboard=leaderboard(rows, rows[0], None), profile=profile, seconds=50.0,
                             run_dir=tmp_path, best=rows[0], records=rows, already_finished=False)  # fmt: skip
    monkeypatch.setattr(api, "run", lambda data, settings, progress: result)
    api.AutoTransfer(time_budget="2m", out=tmp_path, verbose=0).fit(make_imagefolder(tmp_path / "d", {"a": 2, "b": 2}))
    screen = Console(file=io.StringIO(), width=160, no_color=True)
    print_fit_summary(result, 120.0, screen)
    logged = (Path(tmp_path) / "fit.log").read_text()
    assert "Done in 50s of the 2m00s budget" in logged and "search score: accuracy 0.9000" in logged
    # the same lines; the log's are never wrapped (soft wrap), so a table's title is not centred there
    assert [line.strip() for line in logged.strip().splitlines()] == [
        line.strip() for line in screen.file.getvalue().strip().splitlines()
    ]


def test_a_near_tie_in_backbone_timings_is_called_noise_not_faster():
    from autotransfer.search.auto_space import left_out_by_count

    measured = {"a": 0.010, "b": 0.0104, "c": 0.020}
    assert "within noise of a" in left_out_by_count("b", measured, ["a"], 1)
    assert "the order of this one timing decided" in left_out_by_count("b", measured, ["a"], 1)
    assert "timed faster" in left_out_by_count("c", measured, ["a"], 1)


def test_a_budget_too_small_is_refused_before_auto_times_the_backbones(fit_env, monkeypatch, tmp_path):
    """The fresh-user trial: a 2m budget was refused after 1m44s of timing under load, quoting 3m06s: the
    time spent timing was counted in the minimum. The check now comes first, with one number."""
    import re

    from autotransfer.options import RunOptions
    from autotransfer.search import run
    from autotransfer.search.settings import resolve_settings

    space = tmp_path / "auto.yaml"
    space.write_text(fit_env["space"].read_text().replace("backbones: [test_efficientnet]", "backbones: auto"))

    def timing_must_not_start(*args, **kwargs):
        raise AssertionError("auto timed the backbones before the budget check")

    monkeypatch.setattr(run, "resolve_auto", timing_must_not_start)
    monkeypatch.setattr(run, "seconds_per_image", lambda *args: 1.0)  # 36 images: 36 s of extraction at least
    options = RunOptions(time_budget="30s", search_space=str(space), out=tmp_path / "run",
                         profile_backbone="test_efficientnet")  # fmt: skip
    with pytest.raises(AutoTransferError, match="need at least") as caught:
        run.run(fit_env["data"], resolve_settings(options))
    numbers = set(re.findall(r"\b\d+m\d+s\b|\b\d+s\b", caught.value.what + caught.value.fix)) - {"30s"}
    assert len(numbers) == 1 and f"use --time-budget {numbers.pop()} or more" in caught.value.fix
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["fit", "{data}", "--search-space", "nosuch"], "Where: --search-space nosuch (looked for"),
        (["bench", "--suite", "nosuch"], "Where: --suite nosuch (looked for"),
        (["zoo", "fetch", "nosuch"], "Where: zoo fetch nosuch"),
        (["fit", "{data}", "--time-budget", "ten"], "Where: --time-budget"),
        (["cache", "clear", "--older-than", "soon"], "Where: --older-than"),
    ],
)
def test_user_errors_say_where(tmp_path, args, where):
    """The fresh-user trial: some errors had no "Where:" line."""
    data = make_imagefolder(tmp_path / "d", {"a": 2, "b": 2})
    done = _cli(*(str(data) if a == "{data}" else a for a in args))
    assert done.stdout.strip().endswith(" 2") and where in done.stderr, done.stderr
    assert "What to do:" in done.stderr


def test_every_error_the_cli_raises_itself_says_where():
    import ast

    package = Path(__file__).resolve().parents[1] / "autotransfer" / "cli"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "AutoTransferError":
                assert any(k.arg == "where" for k in node.keywords), f"{path.name}:{node.lineno}"


def test_the_terminal_leaderboard_marks_where_each_search_score_was_measured():
    """The fresh-user trial: CV means of probes and validation scores of fine-tuning sat in one column called
    by the metric's name, with nothing to tell them apart."""
    from autotransfer.report.leaderboard_table import leaderboard_table

    board = _board(4).assign(score_source=["cv", "val", "cv", "val"])
    console = Console(file=io.StringIO(), width=200, no_color=True)
    console.print(leaderboard_table(board, "balanced_accuracy", 200))
    text = console.file.getvalue()
    assert "search score" in text and "0.900 CV" in text and "0.890 val" in text
    assert "search score: balanced accuracy (CV = mean over cross-validation folds of train+val, val = " in text
    only_val = Console(file=io.StringIO(), width=200, no_color=True)
    only_val.print(leaderboard_table(_board(2).assign(score_source="val"), "accuracy", 200))
    assert "CV" not in only_val.file.getvalue() and "(val = validation split)" in only_val.file.getvalue()


def test_progress_lines_say_cv_for_a_cross_validated_probe():
    from autotransfer.report.progress import Progress

    progress = Progress(60.0, verbose=0, console=Console(file=io.StringIO()))
    record = {"stage": "probe", "trial": 0, "status": "complete", "val_score": 0.9, "score_source": "cv"}
    assert "[bold]CV 0.9000[/]" in progress.trial_line(record)
    finetuned = {**record, "stage": "finetune", "val_score": 0.8, "score_source": "val"}
    assert "[bold]val 0.8000[/]" in progress.trial_line(finetuned)
