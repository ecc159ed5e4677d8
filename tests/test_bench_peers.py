"""Peer contenders of `autotransfer bench` (fastai, AutoGluon, a timm script): installation state and budgets."""

import json
import os
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from autotransfer.bench.leaderboard import write_leaderboard
from autotransfer.bench.runner import run_suite
from autotransfer.bench.suite import load_suite
from benchmarks.contenders._peer import answer, epochs_that_fit

TOOL = textwrap.dedent("""
    import json, sys
    print(json.dumps({"test_accuracy": 0.75, "what": " ".join(sys.argv[1:])}))
""")


@pytest.fixture
def peer_suite(tmp_path, fit_env, monkeypatch):
    """Three peers under a private peers folder: one installed, one whose install failed, one never installed."""
    peers = tmp_path / "peers"
    monkeypatch.setenv("AUTOTRANSFER_PEERS", str(peers))
    (peers / "good" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, peers / "good" / "bin" / "python")
    (peers / "good" / ".installed-0123").touch()
    (peers / "broken" / "bin").mkdir(parents=True)  # a venv that pip left half-done: no stamp
    (peers / "broken.not-installed").write_text("install failed on 2026-01-01: ERROR: No matching distribution\n")
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        textwrap.dedent(f"""
        datasets:
          - {{name: tiny, path: {fit_env["data"]}, per_class: [4], test_per_class: 3}}
        seeds: [0, 1]
        budget: 30s
        fixed: {{backbone: test_efficientnet, resolution: 48}}
        contenders: [good, broken, absent]
        commands:
          good: ["{{peers}}/good/bin/python", "{tool}", --size, "{{resolution}}"]
          broken: ["{{peers}}/broken/bin/python", "{tool}"]
          absent: "{{peers}}/absent/bin/python {tool}"
    """)
    )
    return load_suite(suite_file), peers


def test_a_missing_peer_is_reported_as_not_installed_never_dropped(peer_suite, tmp_path):
    suite, peers = peer_suite
    out = tmp_path / "bench"
    records = run_suite(suite, out)
    assert len(records) == 6
    by = {(r["contender"], r["seed"]): r for r in records}
    assert by[("good", 0)]["status"] == "ok" and by[("good", 0)]["test_accuracy"] == 0.75
    assert by[("good", 0)]["test_scores"] == {"accuracy": 0.75}  # no test_predictions: accuracy only
    assert by[("good", 0)]["what"].endswith("--size 48")  # {resolution} is the suite's fixed resolution
    assert by[("broken", 1)]["status"] == "not installed" and "No matching distribution" in by[("broken", 1)]["error"]
    assert by[("absent", 0)]["status"] == "not installed" and str(peers / "absent") in by[("absent", 0)]["error"]
    assert by[("absent", 0)]["within_budget"] is None and by[("good", 0)]["within_budget"] is True  # ran nothing
    frame = write_leaderboard(records, suite, out, "test machine")
    assert list(frame["status"]) == ["ok", "ok", "not installed", "not installed", "not installed", "not installed"]
    markdown = (out / "leaderboard.md").read_text()
    assert "| broken (command) | not installed |" in markdown and "| absent (command) | not installed |" in markdown
    assert "## Not installed" in markdown and "No matching distribution" in markdown and "make peers" in markdown
    assert "## Failed cells" not in markdown
    csv = pd.read_csv(out / "leaderboard.csv")
    assert (csv["status"] == "not installed").sum() == 4
    assert csv.loc[csv["status"] == "not installed", "within_budget"].isna().all()
    write_leaderboard([r for r in records if r["status"] != "ok"], suite, out, "test machine")  # nothing to plot
    assert "| absent (command) | not installed |" in (out / "leaderboard.md").read_text()
    # once installed, the cells run: not-installed ones are tried again like failed ones
    (peers / "absent" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, peers / "absent" / "bin" / "python")
    (peers / "absent" / ".installed-4567").touch()
    records = run_suite(suite, out)
    assert {r["status"] for r in records if r["contender"] == "absent"} == {"ok"}


def test_cells_written_before_status_existed_still_make_a_leaderboard(peer_suite, tmp_path):
    suite, _ = peer_suite
    out = tmp_path / "bench"
    records = run_suite(suite, out)
    for record in records:
        record.pop("status")
    frame = write_leaderboard(records, suite, out, "test machine")
    assert set(frame["status"]) == {"ok", "failed"}


# A peer that reads the test folder with the peers' own helper and answers with its predictions:
# right on every other image, the first class otherwise. --mode breaks its answer on purpose.
PREDICTING_PEER = textwrap.dedent("""
    import pathlib, sys
    sys.path.insert(0, {root!r})
    from benchmarks.contenders import _peer
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    paths, labels = _peer.image_files(pathlib.Path(args["--test"]))
    first = sorted(labels)[0]
    predicted = [label if i % 2 == 0 else first for i, label in enumerate(labels)]
    predictions = dict(zip(paths, predicted))
    accuracy = sum(p == t for p, t in zip(predicted, labels)) / len(labels)
    mode = args.get("--mode")
    if mode == "unknown":
        predictions["elsewhere/cat.png"] = first
    elif mode == "missing":
        predictions.pop(paths[-1])
    elif mode == "disagrees":
        accuracy = 1.0
    _peer.answer(accuracy, "predicting peer", None, predictions)
""")


def _predicting_suite(tmp_path, fit_env, mode: str) -> Path:
    tool = tmp_path / "peer.py"
    tool.write_text(PREDICTING_PEER.format(root=str(Path(__file__).resolve().parents[1])))
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        textwrap.dedent(f"""
        datasets:
          - {{name: tiny, path: {fit_env["data"]}, per_class: [4], test_per_class: 3}}
        seeds: [0]
        budget: 30s
        contenders: [peer]
        commands:
          peer: ["{sys.executable}", "{tool}", --test, "{{test}}", --mode, {mode}]
    """)
    )
    return suite_file


def test_a_peer_with_test_predictions_is_scored_on_every_metric(tmp_path, fit_env, cli):
    out = tmp_path / "out"
    suite_file = _predicting_suite(tmp_path, fit_env, "good")
    result = cli(["bench", "--suite", str(suite_file), "--out", str(out), "--metric", "f1_macro"])
    assert result.exit_code == 0, result.output
    cell = json.loads(next((out / "cells").glob("*--peer.json")).read_text())
    # 3 classes x 3 test images a, a, a, b, b, b, c, c, c predicted a, a, a, a, b, a, c, a, c
    f1 = (2 * 0.5 * 1 / 1.5 + 2 * 1 * (1 / 3) / (4 / 3) + 2 * 1 * (2 / 3) / (5 / 3)) / 3  # per class 2PR/(P+R)
    assert cell["test_scores"] == pytest.approx({"accuracy": 6 / 9, "balanced_accuracy": 6 / 9, "f1_macro": f1})
    assert cell["test_accuracy"] == pytest.approx(6 / 9)
    csv = pd.read_csv(out / "leaderboard.csv")
    assert list(csv["metric"]) == ["f1_macro"] and csv["test_f1_macro"][0] == pytest.approx(f1)
    assert f"| peer (command) | {f1:.3f} |" in (out / "leaderboard.md").read_text()


@pytest.mark.parametrize(
    "mode, message",
    [
        ("unknown", "test_predictions do not match the test folder: 'elsewhere/cat.png' is not a held-out file"),
        ("missing", "test_predictions do not match the test folder: no prediction for "),
        ("disagrees", "its test_accuracy 1.0000 disagrees with the accuracy of its test_predictions (0.6667)"),
    ],
)
def test_test_predictions_that_do_not_fit_the_test_folder_fail_the_cell(tmp_path, fit_env, mode, message):
    (record,) = run_suite(load_suite(_predicting_suite(tmp_path, fit_env, mode)), tmp_path / "out")
    assert record["status"] == "failed" and record["test_scores"] == {} and message in record["error"], record["error"]
    if mode == "missing":
        assert (
            record["error"]
            .splitlines()[0]
            .endswith(".png' (0 unknown path(s), 1 held-out file(s) without a prediction).")
        )


def test_answer_prints_predictions_as_test_predictions(capsys):
    predictions = {"t/a/1.png": "a", "t/b/2.png": "a"}
    answer(0.5, "w", 0.25, predictions)
    line = {"test_accuracy": 0.5, "what": "w", "val_accuracy": 0.25, "test_predictions": predictions}
    assert json.loads(capsys.readouterr().out) == line
    answer(0.5, "w")
    assert "test_predictions" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "left, epoch, reserve, expected",
    [
        (100.0, 10.0, 5.0, 9),  # 95 s of training: 9 whole epochs
        (100.0, 10.0, 0.0, 10),
        (100.0, 30.0, 20.0, 2),
        (10.0, 30.0, 5.0, 1),  # never zero: the peer trains at least once and its overrun shows
        (-5.0, 1.0, 5.0, 1),
        (1e6, 0.01, 5.0, 100),  # capped
        (100.0, 0.0, 5.0, 100),  # nothing measured
    ],
)
def test_epochs_that_fit_the_budget(left, epoch, reserve, expected):
    assert epochs_that_fit(left, epoch, reserve) == expected


def test_epochs_that_fit_can_be_none_when_the_timed_batches_trained():
    assert epochs_that_fit(10.0, 30.0, 5.0, least=0) == 0 and epochs_that_fit(100.0, 10.0, 5.0, least=0) == 9


def test_builtin_suites_list_every_peer():
    for name in ("smoke", "cpu-small"):
        suite = load_suite(name)
        assert {"timm-script", "fastai", "autogluon"} <= set(suite.contenders)
        assert suite.commands["fastai"][0] == "{peers}/fastai/bin/python"
        assert suite.commands["autogluon"][0] == "{peers}/autogluon/bin/python"


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["timm-script", "fastai", "autogluon"])
def test_each_peer_on_real_weights(cli, tmp_path, monkeypatch, peer):
    """Needs `make peers` (fastai, autogluon) and the offline zoo's mobilenetv2_100; about two minutes each.

    The smoke suite's peer command on its dataset, with a 90 s budget: imports alone take 5-15 s here.
    """
    import yaml

    from autotransfer.bench.contenders import peers_dir

    if peer != "timm-script" and not any((peers_dir() / peer).glob(".installed-*")):
        pytest.skip(f"{peer} is not installed: run `make peers` (its not-installed report is tested above)")
    monkeypatch.delenv("AUTOTRANSFER_CACHE")  # the real cache: offline ImageNet weights
    smoke = load_suite("smoke")
    suite = tmp_path / "peer.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "datasets": [{"name": "digits", "per_class": [15], "test_per_class": 15}],
                "seeds": [0],
                "budget": "90s",
                "fixed": {"backbone": smoke.fixed_backbone, "resolution": smoke.fixed_resolution},
                "contenders": [peer],
                "commands": {peer: list(smoke.commands[peer])},
            }
        )
    )
    result = cli(["bench", "--suite", str(suite), "--out", str(tmp_path / "out")], timeout=600)
    assert result.exit_code == 0, result.output
    cell = json.loads(next((tmp_path / "out" / "cells").glob(f"*--{peer}.json")).read_text())
    assert cell["status"] == "ok", cell["error"]
    assert 0 <= cell["test_accuracy"] <= 1 and "mobilenetv2_100" in cell["what"] and "64px" in cell["what"]
