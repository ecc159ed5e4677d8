"""Peer contenders of `autotransfer bench` (fastai, AutoGluon, a timm script): installation state and budgets."""

import json
import os
import sys
import textwrap

import pandas as pd
import pytest

from autotransfer.bench.leaderboard import write_leaderboard
from autotransfer.bench.runner import run_suite
from autotransfer.bench.suite import load_suite
from benchmarks.contenders._peer import epochs_that_fit

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
