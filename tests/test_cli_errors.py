"""Every write path of the command line, and every exit status: 0 done, 2 a mistake explained in one
message (never a traceback), 130 interrupted. Also the summary `fit` prints after saving, with the
missing cells of trials that never ran (issue 15.1: it crashed there with pd.NA)."""

import io
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import make_imagefolder, small_probe_pipeline
from rich.console import Console
from sample_run import dataset_profile, records

import autotransfer.cli as cli_module
from autotransfer.errors import AutoTransferError
from autotransfer.report.fit_summary import print_fit_summary
from autotransfer.report.outputs import leaderboard
from autotransfer.search.run_profile import RunProfile


def run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", "from autotransfer.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=timeout,
    )


def one_clear_error(done, *expected):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.count("Error:") == 1, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A small saved pipeline (random-init test backbone; a probe head) and a folder of images."""
    pipeline, root = small_probe_pipeline(tmp_path_factory.mktemp("cli"), {"a": 6, "b": 6})
    return pipeline.save(tmp_path_factory.mktemp("ck") / "pipeline"), root


def test_fit_summary_prints_with_trials_that_never_ran(monkeypatch, tmp_path):
    rows = records(finetune_finished=False)
    board = leaderboard(rows, rows[1], None)
    assert board["resolution"].isna().any() and board["trial"].dtype == "Int64"
    buffer = io.StringIO()
    console = Console(file=buffer, width=160)
    pipeline = SimpleNamespace(spec={"metrics": {"val_accuracy": 0.86}}, describe=lambda: "a probe")
    result = SimpleNamespace(
        pipeline=pipeline,
        leaderboard=board,
        profile=RunProfile(dataset=dataset_profile()),
        run_dir=tmp_path,
        seconds=97.0,
        records=rows,
    )
    print_fit_summary(result, 120.0, console)
    text = buffer.getvalue()
    assert "Done in 97s of the 2m00s budget (4 probes, 0 fine-tuning trials (1 failed); 3 queued" in text
    assert text.index("report.html") < text.index("leaderboard (top 8")  # where the report is comes first
    assert "waiting" not in text  # trials that never ran are not in the table


@pytest.mark.parametrize(
    "raised,code,message",
    [
        (AutoTransferError("bad thing", where="here", fix="do this"), 2, "Where: here"),
        (KeyboardInterrupt(), 130, "Interrupted"),
        (OSError(28, "No space left on device"), 2, "The disk is full"),
    ],
)
def test_exit_status_of_each_kind_of_ending(monkeypatch, capsys, raised, code, message):
    def app():
        raise raised

    monkeypatch.setattr(cli_module, "app", app)
    with pytest.raises(SystemExit) as ended:
        cli_module.main()
    assert ended.value.code == code and message in capsys.readouterr().err


def test_export_to_unwritable_places(tmp_path, pipeline_dir):
    folder, _ = pipeline_dir
    (tmp_path / "afile").write_text("x")
    one_clear_error(run_cli("export", folder, "--out", "/proc/x/model.onnx"), "Cannot write --out /proc/x/model.onnx")
    one_clear_error(
        run_cli("export", folder, "--out", tmp_path / "afile" / "m.onnx"),
        f"{tmp_path / 'afile'} is a file, not a folder",
    )
    one_clear_error(run_cli("export", folder, "--out", tmp_path), "is a folder; a file name is needed")


def test_predict_csv_that_cannot_be_written_is_refused_before_any_image(pipeline_dir):
    """The CSV is written row by row as batches finish (issue 27.3), so it is opened before any work."""
    folder, root = pipeline_dir
    done = run_cli("predict", folder, root / "a", "--csv", "/proc/p.csv")
    one_clear_error(done, "Cannot write --csv /proc/p.csv")
    assert "classified" not in done.stdout


def test_predict_names_the_files_of_a_folder_it_did_not_read(tmp_path, pipeline_dir):
    """The fresh-user trial: a notes.txt in a folder was passed over in silence."""
    import shutil

    folder, root = pipeline_dir
    images = shutil.copytree(root / "a", tmp_path / "images")
    (images / "notes.txt").write_text("x")
    (images / ".hidden.txt").write_text("x")  # hidden: never meant as data, not named
    done = run_cli("predict", folder, images)
    assert done.returncode == 0, done.stderr
    assert "6 image(s) classified" in done.stdout
    assert "note: 1 file(s) in the folders given are not images by name and were not read" in done.stderr
    assert "notes.txt" in done.stderr and ".hidden" not in done.stderr
    assert "note: --size" not in done.stderr
    at_size = run_cli("predict", folder, images / "img_0.png", "--size", "48")
    assert at_size.returncode == 0 and "note: --size 48 classifies each image at its own aspect ratio and scale" in (
        " ".join(at_size.stderr.split())
    )
    original = run_cli("predict", folder, images / "img_0.png", "--size", "original")
    trained = json.loads((folder / "pipeline.json").read_text())["preprocess"]["size"]
    said = " ".join(original.stderr.split())
    assert f"its shorter side within {trained}..{2 * trained} px (larger images scaled down)" in said, said


def test_predict_with_nothing_classified_fails_and_keeps_errors_out_of_the_label_column(tmp_path, pipeline_dir):
    folder, root = pipeline_dir
    (tmp_path / "empty.png").write_bytes(b"")
    done = run_cli("predict", folder, tmp_path / "missing.png", tmp_path / "empty.png")
    one_clear_error(done, "No image was classified: 2 input(s)")
    assert "no such file" not in done.stdout and "skipped" in done.stderr and "missing.png" in done.stderr
    partly = run_cli("predict", folder, root / "a" / "img_0.png", tmp_path / "missing.png", "--csv", tmp_path / "p.csv")
    assert partly.returncode == 0, partly.stderr
    assert "1 image(s) classified" in partly.stdout and "no such file" not in partly.stdout
    assert pd.read_csv(tmp_path / "p.csv")["error"].notna().sum() == 1


def test_outputs_of_fit_profile_and_bench_are_checked_first(tmp_path):
    (tmp_path / "afile").write_text("x")
    blocked = tmp_path / "afile" / "run"
    one_clear_error(run_cli("fit", tmp_path, "--out", tmp_path / "afile"), "is a file; a folder is needed")
    one_clear_error(run_cli("fit", tmp_path, "--out", blocked), "is a file, not a folder")
    one_clear_error(run_cli("profile", tmp_path, "--out", blocked / "p.json"), "is a file, not a folder")
    one_clear_error(run_cli("bench", "--suite", "smoke", "--out", blocked), "is a file, not a folder")


def test_a_run_directory_that_cannot_be_created_is_one_clear_error(fit_env):
    # /proc: it exists and root may "write" to it, but no folder can be made there
    done = run_cli(
        "fit", fit_env["data"], "--search-space", fit_env["space"], "--time-budget", "1m", "--out", "/proc/at"
    )
    one_clear_error(done, "Cannot create --out /proc/at", "Where: /proc/at")


def test_unknown_backbone_in_a_space_file_names_the_nearest_and_where(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("backbones: [mobilenetv2_10]\nresolutions: [32]\n")
    data = make_imagefolder(tmp_path / "d", {"a": 2, "b": 2})
    done = run_cli("fit", data, "--search-space", space, "--out", tmp_path / "run")
    one_clear_error(
        done, "Unknown backbone 'mobilenetv2_10'. Did you mean: mobilenetv2_100", f"Where: {space}, key backbones"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA has the device")
def test_a_device_this_machine_lacks_is_one_clear_error(tmp_path, pipeline_dir):
    data = make_imagefolder(tmp_path / "d", {"a": 4, "b": 4})
    one_clear_error(run_cli("fit", data, "--device", "cuda", "--out", tmp_path / "run"), "'cuda' is not available")
    assert not (tmp_path / "run").exists()
    checkpoint, _ = pipeline_dir
    one_clear_error(run_cli("predict", checkpoint, data / "a", "--device", "cuda"), "'cuda' is not available")
    one_clear_error(run_cli("predict", checkpoint, data / "a", "--device", "tpu"), "Unknown device 'tpu'")


def test_resume_with_no_earlier_run_says_it_starts_anew(tmp_path):
    data = make_imagefolder(tmp_path / "d", {"a": 4, "b": 4})
    done = run_cli("fit", data, "--resume", "--out", tmp_path / "fresh", "--time-budget", "1s")
    assert "--resume: nothing to resume in" in " ".join(done.stdout.split()), done.stdout
    one_clear_error(done, "time budget")


def test_predict_on_a_run_stopped_before_saving_says_how_to_finish_it(tmp_path, pipeline_dir):
    """The fresh-user trial: predict or export on an interrupted run said only "No pipeline checkpoint"."""
    _, root = pipeline_dir
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    for command in (("predict", tmp_path / "run", root / "a"), ("export", tmp_path / "run", "--out", tmp_path / "m")):
        one_clear_error(
            run_cli(*command),
            "has no pipeline yet: its fit stopped before saving one",
            f"--out {tmp_path / 'run'} --resume",
        )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user@db.example/runs", ("driver for postgresql", "pip install 'autotransfer[postgres]'")),
        ("postgresql//user@db.example/runs", ("is malformed", "write it as e.g. sqlite:///study.db")),
        ("postgresql://user@db.example:port/runs", ("is malformed",)),
        ("mysql://user@db.example/runs", ("driver for mysql", "pip install mysqlclient")),  # not "MySQLdb"
    ],
)
def test_a_storage_url_names_the_missing_driver_or_the_malformed_url(tmp_path, url, expected):
    """The fresh-user trial: both said "Failed to import DB access module ... check the --storage URL"."""
    pytest.importorskip("sqlalchemy")
    import importlib.util

    if importlib.util.find_spec("psycopg") or importlib.util.find_spec("psycopg2"):
        pytest.skip("a PostgreSQL driver is installed here")
    data = make_imagefolder(tmp_path / "d", {"a": 4, "b": 4})
    done = run_cli("fit", data, "--storage", url, "--out", tmp_path / "run")
    one_clear_error(done, *expected)
    assert "Failed to import" not in done.stderr and not (tmp_path / "run").exists()


def test_a_budget_below_any_run_is_refused_at_once_with_one_number(tmp_path):
    """The fresh-user trial: `--time-budget 1s` took 8 s and quoted "about 23s" and then "34s or more"."""
    data = make_imagefolder(tmp_path / "d", {"a": 4, "b": 4})
    done = run_cli("fit", data, "--time-budget", "1s", "--out", tmp_path / "run")
    one_clear_error(done, "The time budget (1s) is too small")
    assert len(set(re.findall(r"\b\d+(?:m\d+)?s\b", done.stderr)) - {"1s"}) == 1, done.stderr  # one minimum
    assert not (tmp_path / "run").exists()  # refused before the run directory or any decoding


def test_an_unknown_profile_backbone_is_refused_before_any_work(tmp_path):
    """The fresh-user trial: `--profile-backbone nosuchnet` failed after 6 s of profiling, leaving a run folder."""
    data = make_imagefolder(tmp_path / "d", {"a": 4, "b": 4})
    done = run_cli("fit", data, "--profile-backbone", "nosuchnet", "--out", tmp_path / "run")
    one_clear_error(done, "Unknown backbone 'nosuchnet'", "--profile-backbone")
    assert not (tmp_path / "run").exists()


def test_importing_the_cli_does_not_import_torch():
    """Start-up: `predict` on a missing checkpoint took 3.5 s and `zoo list` 5 s, mostly importing torch."""
    probe = "import sys, autotransfer.cli; print(sorted({'torch', 'timm', 'optuna', 'pandas', 'sklearn', "
    probe += "'matplotlib'} & {name.split('.')[0] for name in sys.modules}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_predict_and_export_on_a_missing_checkpoint_answer_before_importing_torch(tmp_path):
    probe = (
        "import sys\nfrom autotransfer.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules, e.code)"
    )
    for command in (["predict", str(tmp_path / "none"), "x.png"], ["export", str(tmp_path / "none"), "--out", "m"]):
        done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == "False 2", done.stdout + done.stderr
        assert "No pipeline checkpoint at" in done.stderr and "does not exist" in done.stderr
    tmp_path.joinpath("d").mkdir()
    done = subprocess.run([sys.executable, "-c", probe, "fit", str(tmp_path / "d"), "--time-budget", "abc"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == "False 2", done.stdout + done.stderr  # fresh-user trial: 8 s to say so


def test_quiet_fit_shows_only_the_summary_and_keeps_the_log(fit_env, tmp_path):
    """The fresh-user trial: `fit -q` still printed every INFO line (one per probe) before the summary."""
    out = tmp_path / "run"
    args = ("fit", fit_env["data"], "--search-space", fit_env["space"], "--time-budget", "2m", "--out", out, "-q")
    done = run_cli(*args, "--profile-backbone", "test_efficientnet")
    assert done.returncode == 0, done.stderr
    assert "probe " not in done.stderr and "Done in" in done.stdout
    assert "probe " in (out / "fit.log").read_text()


def test_slow_argument_errors_are_answered_before_torch_is_imported(tmp_path):
    """The fresh-user trial (issue 26 leftovers): these took 3.5-6.3 s, importing torch, timm or Optuna first."""
    from autotransfer.models.backbone_names import backbone_names

    backbone_names()  # the names' cache, as a first check ever builds it (models/backbone_names.py)
    data = make_imagefolder(tmp_path / "d", {"a": 2, "b": 2})
    bad_space = tmp_path / "space.yaml"
    bad_space.write_text("epochs: 3\n")
    odd_net = tmp_path / "odd.yaml"
    odd_net.write_text("backbones: [nosuchnet_v9]\n")
    probe = (
        "import sys\nfrom autotransfer.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print(sorted({'torch', 'timm', 'optuna'} & set(sys.modules)), e.code)"
    )
    cases = [
        (["fit", data, "--search-space", "nosuch"], ("No search space 'nosuch'", "--search-space")),
        # the sixth fresh user: a malformed space file was read only after torch was imported (5.9 s)
        (["fit", data, "--search-space", bad_space], ("Bad search space key 'epochs'", f"Where: {bad_space}")),
        # the seventh: an unknown backbone in a space file took 7 s
        (["fit", data, "--search-space", odd_net], ("Unknown backbone 'nosuchnet_v9'", f"{odd_net}, key backbones")),
        (["fit", data, "--device", "tpu"], ("Unknown device 'tpu'", "Where: --device")),
        # the fifth fresh user: a run directory that cannot be created was refused after 15 s of work
        (["fit", data, "--out", "/proc/at-run"], ("Cannot create --out /proc/at-run", "Where: /proc/at-run")),
        (
            ["fit", data, "--out", data / "a" / "img_0.png" / "run"],
            ("img_0.png is a file, not a folder", "What to do:"),
        ),
        (["fit", data, "--storage", "sqlite:////proc/at/s.db"], ("names the SQLite file /proc/at/s.db", "--storage")),
        (["fit", data, "--storage", f"sqlite:///{tmp_path}/none/s.db"], (f"its folder {tmp_path}/none does not",)),
        (["predict", data, "x.png", "--size", "bad"], ("size must be 'native', 'original'", "Where: --size")),
        (["predict", data, "x.png", "--device", "tpu"], ("Unknown device 'tpu'",)),
        # the seventh fresh user: refused after 7 s of work (root may "write" to /proc by os.access)
        (["predict", data, "x.png", "--csv", "/proc/x.csv"], ("Cannot write --csv /proc/x.csv", "Where: /proc/x.csv")),
        # the fifth fresh user: 26 s to say resnet18 has no weights here (torch and timm imported first)
        (["zoo", "show", "resnet18"], ("No pretrained weights found for resnet18", "Where: looked in")),
        (["zoo", "show", "nosuchnet"], ("Unknown backbone 'nosuchnet'", "Where: autotransfer zoo show nosuchnet")),
        # issue 26's fourth trial: 4.9 s to refuse a missing --weights; `image_size` named for --size 0, no Where/fix
        (["zoo", "show", "mobilenetv2_100", "--weights", tmp_path / "missing"], ("No weights at", "Where: --weights")),
        (["zoo", "verify", "--weights", tmp_path / "missing"], ("the path does not exist", "Where: --weights")),
        (["profile", data, "--weights", tmp_path / "missing"], ("No weights at", "What to do:")),
        (["profile", data, "--size", "2"], ("between 8 and 1024 pixels; got 2", "Where: --size")),
        (["inspect", data, "--size", "0"], ("between 8 and 1024 pixels; got 0", "Where: --size", "give --size a")),
        (["rank", data, "--size", "5000"], ("got 5000", "Where: --size")),
        # the fifth fresh user: predict --size took 16..4096, inspect/profile/rank 8..1024; one range, one message
        (["predict", data, "x.png", "--size", "2000"], ("between 8 and 1024 pixels; got 2000", "Where: --size")),
        (["predict", data, "x.png", "--size", "4"], ("between 8 and 1024 pixels; got 4", "give --size a size")),
        # the fifth trial: `rank --backbones nosuch` had no Where line, and was answered after decoding
        (["rank", data, "--backbones", "mobilenetv2_100,nosuch"], ("Unknown backbone 'nosuch'", "Where: --backbones")),
    ]
    for command, expected in cases:
        done = subprocess.run([sys.executable, "-c", probe, *map(str, command)], capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.stdout.strip() == "[] 2", (command, done.stdout, done.stderr)
        assert done.stderr.count("Error:") == 1 and "Traceback" not in done.stderr, done.stderr
        said = " ".join(done.stderr.split())  # rich wraps at the console's width
        for text in expected:
            assert text in said, (command, done.stderr)
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob("runs*"))


def test_an_sqlite_storage_in_a_writable_folder_passes_the_early_check(tmp_path):
    from autotransfer.storage_url import check_storage_url

    check_storage_url(f"sqlite:///{tmp_path}/study.db")
    assert not (tmp_path / "study.db").exists()  # the check leaves no file behind
    (tmp_path / "study.db").write_bytes(b"")
    check_storage_url(f"sqlite:///{tmp_path}/study.db")
    check_storage_url("sqlite:///:memory:")


def test_predict_refuses_a_csv_in_a_folder_that_does_not_exist(tmp_path):
    """The fresh-user trial: `predict --csv /missing/dir/x.csv` created the folders silently."""
    probe = (
        "import sys\nfrom autotransfer.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules, e.code)"
    )
    target = tmp_path / "missing" / "dir" / "x.csv"
    done = subprocess.run([sys.executable, "-c", probe, "predict", str(tmp_path), "x.png", "--csv", str(target)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == "False 2", done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert f"Cannot write --csv {target}: the folder {target.parent} does not exist" in said
    assert f"Where: {target.parent}" in said and "mkdir -p" in said
    assert not (tmp_path / "missing").exists()
    one_clear_error(run_cli("profile", tmp_path, "--out", tmp_path / "no" / "p.json"), "the folder", "does not exist")
    assert not (tmp_path / "no").exists()


def test_predict_on_paths_that_do_not_exist_is_refused_before_the_pipeline_is_loaded(tmp_path):
    """The fresh-user trial: `predict RUN missing.jpg` took 7-12 s (the pipeline loaded first) to say
    "none readable as an image"."""
    probe = (
        "import sys\nfrom autotransfer.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules, e.code)"
    )
    missing = tmp_path / "nothing.jpg"
    done = subprocess.run([sys.executable, "-c", probe, "predict", str(tmp_path), str(missing)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == "False 2", done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert f"No such file or folder: {missing}" in said and f"Where: {missing}" in said


def test_the_summary_in_fit_log_keeps_every_line_whole(tmp_path):
    """The fresh-user trial: fit.log was hard-wrapped at 160 columns (the console's width), so a grep for a
    line of the summary found half of it."""
    from autotransfer.report.fit_summary import LOG_WIDTH, append_to_fit_log

    rows = records()
    reason = "classes are imbalanced " + "and this reason goes on " * 12 + "to its very end"
    assert len(reason) > LOG_WIDTH
    pipeline = SimpleNamespace(spec={"metrics": {"metric": "accuracy", "metric_reason": reason}}, describe=lambda: "p")
    from autotransfer.search.run_profile import RunProfile

    result = SimpleNamespace(pipeline=pipeline, leaderboard=leaderboard(rows, rows[1], None),
                             profile=RunProfile(dataset=dataset_profile()),
                             run_dir=tmp_path, seconds=97.0, records=rows)  # fmt: skip
    assert append_to_fit_log(result, 120.0) is None
    lines = (tmp_path / "fit.log").read_text().splitlines()
    assert f"metric: {reason}" in lines
    assert any(line.startswith("leaderboard (top 8") or "leaderboard (top 8" in line for line in lines)


ENGINE_MODULES_CHECKED = ("bench/leaderboard.py", "data/sources.py", "transfer/probes.py", "transfer/profile.py",
                          "models/zoo.py", "search/space_files.py", "builtin_yaml.py", "storage_url.py",
                          "deploy/predict_size.py", "option_checks.py", "cli/common.py")  # fmt: skip


def test_every_error_of_these_modules_says_where():
    """The fresh-user trial found errors with no "Where:" in these modules: each AutoTransferError built
    there names what, where and what to do."""
    import ast
    from pathlib import Path

    import autotransfer

    package = Path(autotransfer.__file__).parent
    missing = []
    for name in ENGINE_MODULES_CHECKED:
        for node in ast.walk(ast.parse((package / name).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AutoTransferError":
                given = {keyword.arg for keyword in node.keywords}
                if not {"where", "fix"} <= given:
                    missing.append(f"{name}:{node.lineno}")
    assert not missing, missing
