"""`autotransfer bench`: suites, contenders, resumable cells, the leaderboard's arithmetic."""

import json
import sys
import textwrap

import pandas as pd
import pytest

from autotransfer.bench.contenders import BENCH_METRICS
from autotransfer.bench.leaderboard import cell_frame, render_markdown, write_leaderboard
from autotransfer.bench.runner import plan, run_suite
from autotransfer.bench.suite import BUILTIN_CONTENDERS, load_suite
from autotransfer.errors import AutoTransferError
from autotransfer.models.zoo import create_backbone

# An external tool: prints its arguments' test folder size and a fixed accuracy; counts its runs.
TOOL = textwrap.dedent("""
    import json, pathlib, sys
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    with open(args["--log"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    if args.get("--fail"):
        sys.exit("tool failed on purpose")
    test = pathlib.Path(args["--test"])
    print("some chatter")
    print(json.dumps({"test_accuracy": 0.5, "what": str(sum(1 for _ in test.rglob("*.png")))}))
""")


def _suite(tmp_path, body: str) -> object:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(body))
    return load_suite(path)


@pytest.fixture
def tool_suite(tmp_path, fit_env):
    """A suite over fit_env's folder (a path dataset) with two command contenders."""
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL)
    log = tmp_path / "calls.log"
    text = f"""
        datasets:
          - {{name: tiny, path: {fit_env["data"]}, per_class: [4, 6], test_per_class: 3}}
        seeds: [0, 1]
        budget: 30s
        contenders: [good, bad]
        commands:
          good: ["{sys.executable}", "{tool}", --train, "{{train}}", --test, "{{test}}", --log, "{log}"]
          bad: ["{sys.executable}", "{tool}", --test, "{{test}}", --log, "{log}", --fail, "1"]
    """
    return _suite(tmp_path, text), log, text


def test_builtin_suites_load_and_cover_every_contender():
    smoke, small = load_suite("smoke"), load_suite("cpu-small")
    assert set(BUILTIN_CONTENDERS) <= set(smoke.contenders) and "pixels-logreg" in smoke.contenders
    assert smoke.budget == 60 and small.budget == 120 and small.seeds == (0, 1)
    assert {n for d in small.datasets for n in d.per_class} == {25, 250}
    assert len(plan(small)) == 2 * 2 * 2 * len(small.contenders)


@pytest.mark.parametrize(
    "body, key",
    [
        ("datasets: [{name: digits, per_class: [5]}]\nbogus: 1\n", "bogus"),
        ("datasets: [{name: nope, per_class: [5]}]\n", "datasets[0].name"),
        ("datasets: [{name: x, path: /no/such/folder, per_class: [5]}]\n", "datasets[0].path"),
        ("datasets: [{name: digits, per_class: [0]}]\n", "datasets[0].per_class"),
        ("datasets: [{name: digits, per_class: [5]}]\nbudget: soon\n", "budget"),
        ("datasets: [{name: digits, per_class: [5]}]\ncontenders: [fit, magic]\n", "contenders"),
        ("datasets: [{name: digits, per_class: [5]}]\ncommands: {fit: [echo]}\n", "commands.fit"),
        ("datasets: [{name: digits, per_class: [5]}]\ncommands: {x: 'a \"b'}\n", "commands.x"),
        ("datasets: [{name: digits, per_class: [5]}, {name: digits, per_class: [6]}]\n", "datasets"),
        ("seeds: [0]\n", "datasets"),
    ],
)
def test_bad_suites_are_refused_naming_the_key_and_the_file(tmp_path, body, key):
    with pytest.raises(AutoTransferError) as caught:
        _suite(tmp_path, body)
    assert repr(key) in str(caught.value) and "suite.yaml" in str(caught.value)


def test_a_suite_file_cannot_construct_objects(tmp_path):
    with pytest.raises(AutoTransferError, match="not valid YAML"):
        _suite(tmp_path, "datasets: !!python/object/apply:os.system ['touch pwned']\n")
    assert not (tmp_path / "pwned").exists()


def test_command_contenders_run_without_a_shell_resume_and_rerun_failures(tool_suite, tmp_path):
    suite, log, _ = tool_suite
    out = tmp_path / "bench out; rm -rf ~"  # a path a shell would misread: must be one argument
    records = run_suite(suite, out)
    assert len(records) == 8
    good = [r for r in records if r["contender"] == "good"]
    bad = [r for r in records if r["contender"] == "bad"]
    assert all(r["test_accuracy"] == 0.5 and r["error"] is None and r["what"] == "9" for r in good)  # 3 classes x 3
    assert all(r["test_scores"] == {"accuracy": 0.5} for r in good)  # no test_predictions: accuracy only
    assert all(r["test_accuracy"] is None and "tool failed on purpose" in r["error"] for r in bad)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 8 and all(c["--test"].startswith(str(out)) for c in calls)
    # the test split is the same for both regimes of a seed, and differs between seeds
    tests = {
        (r["per_class"], r["seed"]): sorted(
            p.name for p in (out / "data").glob(f"tiny-{r['per_class']}-test3-s{r['seed']}/test/*/*")
        )
        for r in good
    }
    assert tests[(4, 0)] == tests[(6, 0)] and tests[(4, 0)] != tests[(4, 1)]
    assert len(list((out / "data" / "tiny-6-test3-s0" / "train").glob("*/*"))) == 18
    run_suite(suite, out)  # finished cells are skipped, failed ones are tried again
    assert len(log.read_text().splitlines()) == 8 + 4


def test_bench_seeds_runs_and_reports_only_those_seeds_and_renders_without_running_when_done(tool_suite, tmp_path, cli):
    _, log, _ = tool_suite
    args = ["bench", "--suite", str(tmp_path / "suite.yaml"), "--contenders", "good", "--out", str(tmp_path / "o")]
    result = cli([*args, "--seeds", "0"])
    assert result.exit_code == 0, result.output
    assert len(log.read_text().splitlines()) == 2  # per_class 4 and 6, seed 0 only
    board = pd.read_csv(tmp_path / "o" / "leaderboard.csv")
    assert set(board["seed"]) == {0} and len(board) == 2
    assert "- good (command) (tiny 4/class seed 0): 9" in (tmp_path / "o" / "leaderboard.md").read_text()  # what it ran
    assert cli([*args, "--seeds", "0"]).exit_code == 0 and len(log.read_text().splitlines()) == 2  # only rendered
    result = cli([*args, "--seeds", "0,7"])
    assert result.exit_code == 2 and "--seeds '0,7'" in result.output and "choose from 0, 1" in result.output
    assert "Traceback" not in result.output


def test_an_interrupted_bench_writes_the_leaderboard_of_the_cells_that_finished(tool_suite, tmp_path, cli):
    _, _, text = tool_suite
    stop = f'["{sys.executable}", "-c", "import os, signal; os.kill(os.getppid(), signal.SIGINT)"]'
    text = text.replace("contenders: [good, bad]", "contenders: [good, stop]").replace(
        "commands:", f"commands:\n          stop: {stop}"
    )
    _suite(tmp_path, text)
    out = tmp_path / "o"
    out.mkdir()
    (out / "leaderboard.md").write_text("# Benchmark suite `smoke` (an older run)")
    result = cli(["bench", "--suite", str(tmp_path / "suite.yaml"), "--out", str(out), "--metric", "balanced_accuracy"])
    assert result.exit_code == 130 and "1 finished cell(s) are saved" in result.output, result.output
    markdown = (out / "leaderboard.md").read_text()
    assert "older run" not in markdown
    assert "## Test balanced accuracy" in markdown and "| good (command) | not recorded |" in markdown  # no predictions
    assert len(pd.read_csv(out / "leaderboard.csv")) == 1


def test_a_changed_setting_reruns_only_the_cells_it_touches(tool_suite, tmp_path):
    suite, log, text = tool_suite
    out = tmp_path / "out"
    run_suite(suite, out, only=("good",))
    assert len(log.read_text().splitlines()) == 4
    changed = _suite(tmp_path, text.replace("--log", "--extra, x, --log", 1))
    run_suite(changed, out, only=("good",))
    assert len(log.read_text().splitlines()) == 8


def test_editing_the_search_space_file_makes_only_fit_cells_stale(tmp_path, fit_env):
    from autotransfer.bench.runner import CellKey, cell_settings

    suite = _suite(
        tmp_path,
        f"""
        datasets: [{{name: tiny, path: {fit_env["data"]}, per_class: [4], test_per_class: 3}}]
        search_space: {fit_env["space"]}
        contenders: [fit, codes_svm]
    """,
    )
    fit, codes = CellKey("tiny", 4, 0, "fit"), CellKey("tiny", 4, 0, "codes_svm")
    before = cell_settings(suite, fit), cell_settings(suite, codes)
    fit_env["space"].write_text(fit_env["space"].read_text().replace("max_trials: 3", "max_trials: 5"))
    assert cell_settings(suite, fit) != before[0] and cell_settings(suite, codes) == before[1]


def test_a_command_without_an_answer_is_a_clear_failure(tmp_path, fit_env):
    suite = _suite(
        tmp_path,
        f"""
        datasets: [{{name: tiny, path: {fit_env["data"]}, per_class: [4], test_per_class: 3}}]
        budget: 30s
        commands: {{quiet: ["{sys.executable}", -c, "print('no json')"], missing: [/no/such/tool]}}
        contenders: [quiet, missing]
    """,
    )
    errors = {r["contender"]: r["error"] for r in run_suite(suite, tmp_path / "out")}
    assert "no JSON line with a test_accuracy" in errors["quiet"]
    assert "no such program" in errors["missing"]


def _records():
    rows = []
    for seed, accuracies in (
        (0, {"fit": 0.9, "codes_svm": 0.8, "grid": 0.85}),
        (1, {"fit": 0.7, "codes_svm": 0.8, "grid": 0.75}),
    ):
        for name, accuracy in accuracies.items():
            configs = [{"test_accuracy": 0.88 if seed == 0 else 0.75}] if name == "grid" else []
            rows.append(
                {
                    "dataset": "d",
                    "per_class": 10,
                    "seed": seed,
                    "contender": name,
                    "title": name,
                    "n_classes": 2,
                    "test_accuracy": accuracy,
                    "val_accuracy": None,
                    "what": "w",
                    "configs": configs,
                    "error": None,
                    "seconds": 10.0,
                    "within_budget": True,
                }
            )
    rows.append(
        {**rows[1], "dataset": "e", "contender": "fit", "title": "fit", "test_accuracy": None, "error": "it broke"}
    )
    return rows


def test_leaderboard_oracle_regret_and_ranks(tmp_path):
    suite = _suite(
        tmp_path,
        """
        datasets: [{name: d, path: .., per_class: [10]}, {name: e, path: .., per_class: [10]}]
        contenders: [fit, codes_svm, grid]
    """,
    )
    frame = cell_frame(_records(), suite)
    d = frame[frame["dataset"] == "d"].set_index(["seed", "contender"])
    # seed 0: oracle = best grid config 0.88 vs fixed 0.8 -> 0.88; seed 1: fixed 0.8 beats the grid's 0.75
    assert d.loc[(0, "fit"), "oracle"] == pytest.approx(0.88) and d.loc[(1, "fit"), "oracle"] == pytest.approx(0.8)
    assert d.loc[(0, "fit"), "regret"] == pytest.approx((0.88 - 0.9) / (0.88 - 0.5))
    assert d.loc[(1, "codes_svm"), "regret"] == pytest.approx(0.0)
    assert d.loc[(0, "fit"), "rank"] == 1 and d.loc[(1, "fit"), "rank"] == 3
    text = render_markdown(frame, suite, "test machine")
    assert "| fit | 0.800 ± 0.100 | failed |" in text and "it broke" in text
    assert "## Normalised regret" in text
    assert "Over budget" not in text


def test_leaderboard_flags_cells_over_budget(tmp_path):
    suite = _suite(tmp_path, "datasets: [{name: d, path: .., per_class: [10]}]\ncontenders: [fit, codes_svm, grid]")
    records = [r for r in _records() if r["dataset"] == "d"]
    records[0] = {**records[0], "seconds": 200.0, "within_budget": False}  # fit, seed 0
    records[2] = {**records[2], "seconds": 300.0, "within_budget": False}  # the grid has no budget: not flagged
    text = render_markdown(cell_frame(records, suite), suite, "test machine")
    assert "| fit | 105 (over budget) |" in text
    assert "## Over budget" in text and "- d 10/class seed 0, fit: 200 s" in text


def test_leaderboard_files(tmp_path):
    suite = _suite(
        tmp_path,
        """
        datasets: [{name: d, path: .., per_class: [10]}, {name: e, path: .., per_class: [10]}]
        contenders: [fit, codes_svm, grid]
    """,
    )
    write_leaderboard(_records(), suite, tmp_path, "test machine <8 cores>")
    assert len(pd.read_csv(tmp_path / "leaderboard.csv")) == 7
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 2
    # the run report's style sheet, and text escaped by the template
    assert "test machine &lt;8 cores&gt;" in page and ".board tr.chosen td{" in page


def _scored_records() -> list[dict]:
    """One (group, seed) where accuracy and balanced accuracy disagree, and a cell from before test_scores."""

    def cell(contender: str, scores: dict | None, configs: list[dict] = ()) -> dict:
        record = {**_records()[0], "contender": contender, "title": contender, "configs": list(configs)}
        record["test_accuracy"] = scores["accuracy"]
        return {**record, "test_scores": scores} if "balanced_accuracy" in scores else record

    grid_configs = [
        {"test_accuracy": 0.85, "test_scores": {"accuracy": 0.85, "balanced_accuracy": 0.7, "f1_macro": 0.72}},
        {"test_accuracy": 0.7, "test_scores": {"accuracy": 0.7, "balanced_accuracy": 0.75, "f1_macro": 0.74}},
    ]
    return [
        cell("fit", {"accuracy": 0.9, "balanced_accuracy": 0.6, "f1_macro": 0.62}),
        cell("codes_svm", {"accuracy": 0.8, "balanced_accuracy": 0.8, "f1_macro": 0.79}),
        cell("mid_layer", {"accuracy": 0.95}),  # written before cells recorded test_scores
        cell("grid", grid_configs[0]["test_scores"], grid_configs),
    ]


def test_the_leaderboard_ranks_by_the_chosen_metric(tmp_path):
    suite = _suite(
        tmp_path, "datasets: [{name: d, path: .., per_class: [10]}]\ncontenders: [fit, codes_svm, mid_layer, grid]"
    )
    by_accuracy = cell_frame(_scored_records(), suite).set_index("contender")
    assert by_accuracy["rank"].to_dict() == {"mid_layer": 1, "fit": 2, "grid": 3, "codes_svm": 4}
    assert by_accuracy.loc["fit", "oracle"] == pytest.approx(0.95) and set(by_accuracy["metric"]) == {"accuracy"}
    frame = cell_frame(_scored_records(), suite, "balanced_accuracy")
    balanced = frame.set_index("contender")
    assert balanced["rank"].dropna().to_dict() == {"codes_svm": 1, "grid": 2, "fit": 3}
    assert pd.isna(balanced.loc["mid_layer", "rank"]) and pd.isna(balanced.loc["mid_layer", "test_balanced_accuracy"])
    assert balanced.loc["mid_layer", "test_accuracy"] == 0.95  # still in the CSV
    # oracle: the best balanced accuracy of the grid's configurations (0.75) or a fixed strategy (0.8)
    assert balanced.loc["fit", "oracle"] == pytest.approx(0.8)
    assert balanced.loc["fit", "regret"] == pytest.approx((0.8 - 0.6) / (0.8 - 0.5))
    assert cell_frame(_scored_records(), suite, "f1_macro").set_index("contender")["rank"].dropna().to_dict() == {
        "codes_svm": 1, "grid": 2, "fit": 3
    }  # fmt: skip
    text = render_markdown(frame, suite, "test machine")
    assert "## Test balanced accuracy" in text and "Test balanced accuracy on held-out images" in text
    assert "## Test accuracy" not in text
    assert "| codes_svm | 0.800 | 1.00 | +0.000 |" in text and "| fit | 0.600 | 3.00 | +0.667 |" in text
    assert "| mid_layer | not recorded |  |  |" in text and "## Failed cells" not in text
    assert (
        "## Not recorded: test balanced accuracy" in text
        and "1 finished cell(s) have no test balanced accuracy" in text
    )
    assert "ran before the bench recorded it, or come from a peer that printed no test_predictions" in text
    assert "- mid_layer: 1 cell(s)" in text
    write_leaderboard(_scored_records(), suite, tmp_path, "test machine", metric="f1_macro")
    csv = pd.read_csv(tmp_path / "leaderboard.csv").set_index("contender")
    assert set(csv["metric"]) == {"f1_macro"} and csv.loc["fit", "test_f1_macro"] == 0.62
    assert pd.isna(csv.loc["mid_layer", "test_f1_macro"]) and pd.isna(csv.loc["mid_layer", "test_balanced_accuracy"])
    assert "## Test macro F1" in (tmp_path / "leaderboard.md").read_text()
    assert "Macro F1 against wall time" in (tmp_path / "report.html").read_text()


def test_no_oracle_for_a_metric_the_grid_did_not_record(tmp_path):
    suite = _suite(
        tmp_path, "datasets: [{name: d, path: .., per_class: [10]}]\ncontenders: [fit, codes_svm, mid_layer, grid]"
    )
    records = _scored_records()
    records[3] = {**records[3], "configs": [{"test_accuracy": 0.85}]}  # a grid cell from before test_scores
    balanced = cell_frame(records, suite, "balanced_accuracy")
    assert balanced["oracle"].isna().all() and balanced["regret"].isna().all()  # the fixed ones alone are no oracle
    assert cell_frame(records, suite)["oracle"].notna().all()  # accuracy: as before


@pytest.mark.parametrize("metric, why", [("roc_auc", "it needs class probabilities"), ("auc", "no such metric")])
def test_bench_metric_must_be_a_label_metric(cli, tmp_path, metric, why):
    result = cli(["bench", "--suite", "smoke", "--metric", metric, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count("Error:") == 1 and "Traceback" not in result.output
    assert f"cannot rank by {metric!r}: {why}" in result.output
    assert "accuracy, balanced_accuracy or f1_macro" in result.output


def test_every_builtin_contender_end_to_end_on_a_tiny_model(tmp_path, fit_env):
    """fit, the fixed strategies and the grid on a random-weight timm model: cheap, but the real code."""
    suite = _suite(
        tmp_path,
        f"""
        datasets: [{{name: tiny, path: {fit_env["data"]}, per_class: [8], test_per_class: 4}}]
        budget: 2m
        search_space: {fit_env["space"]}
        profile_backbone: test_efficientnet
        fixed: {{backbone: test_efficientnet, resolution: 32}}
    """,
    )
    records = {r["contender"]: r for r in run_suite(suite, tmp_path / "out")}
    assert set(records) == set(BUILTIN_CONTENDERS)
    for name, record in records.items():
        assert record["error"] is None, (name, record["error"])
        assert 0.0 <= record["test_accuracy"] <= 1.0 and record["what"]
        assert set(record["test_scores"]) == set(BENCH_METRICS), name
        assert record["test_scores"]["accuracy"] == record["test_accuracy"], name
    for config in records["grid"]["configs"]:
        assert set(config["test_scores"]) == set(BENCH_METRICS)
        assert config["test_scores"]["accuracy"] == config["test_accuracy"]
    taps = create_backbone("test_efficientnet").taps
    assert [c["tap"] for c in records["grid"]["configs"]] == [t.name for t in taps]  # every tap, one size
    assert "test_efficientnet" in records["codes_svm"]["what"]


def test_cli_bench_errors_are_one_clear_message(cli, tmp_path):
    result = cli(["bench", "--suite", "no-such-suite"])
    assert result.exit_code == 2 and "No benchmark suite 'no-such-suite'" in result.output
    assert "smoke" in result.output and "Traceback" not in result.output
    result = cli(["bench", "--suite", "smoke", "--contenders", "fit,magic", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "magic" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_smoke_suite_on_real_weights(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOTRANSFER_CACHE")  # the real cache: offline ImageNet weights
    result = cli(["bench", "--suite", "smoke", "--out", str(tmp_path / "smoke")], timeout=900)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "smoke" / "leaderboard.csv")
    ran = frame[frame["status"] != "not installed"]  # the peers need `make peers` (tests/test_bench_peers.py)
    assert len(frame) == len(load_suite("smoke").contenders) and ran["error"].isna().all()
    fit = frame.set_index("contender").loc["fit"]
    assert fit["test_accuracy"] > 0.5 and fit["within_budget"]  # 10 classes: chance is 0.1
    assert "| autotransfer fit |" in (tmp_path / "smoke" / "leaderboard.md").read_text()


def test_bench_runs_command_contenders_from_any_directory_and_fails_with_exit_1(tmp_path, fit_env):
    """The fresh-user trial: outside the repository root `python -m benchmarks.contenders...` could not be
    imported, the peers were looked for in ./.peers, and a suite with failed cells exited 0."""
    import subprocess

    suite = tmp_path / "suite.yaml"
    suite.write_text(
        textwrap.dedent(f"""
        datasets:
          - {{name: tiny, path: {fit_env["data"]}, per_class: [6], test_per_class: 3}}
        seeds: [0]
        budget: 60s
        contenders: [pixels, broken]
        commands:
          pixels: "{{python}} -m benchmarks.contenders.pixels_logreg --train {{train}} --test {{test}} --seed {{seed}}"
          broken: ["{sys.executable}", "-c", "import sys; sys.exit('broken on purpose')"]
    """)
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from autotransfer.cli import main; main()",
            "bench",
            "--suite",
            str(suite),
            "--out",
            "o",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    board = pd.read_csv(elsewhere / "o" / "leaderboard.csv").set_index("contender")
    assert board.loc["pixels", "status"] == "ok", board.loc["pixels", "error"]  # benchmarks/ found from elsewhere
    assert board.loc["broken", "status"] == "failed"
    assert done.returncode == 1, done.stderr
    assert "Failed: 1 of 2 cells" in " ".join(done.stderr.split()) and "Traceback" not in done.stderr


def test_peers_are_looked_for_in_the_repository_not_the_current_directory(tmp_path, monkeypatch):
    from autotransfer.bench.contenders import REPOSITORY, peers_dir

    monkeypatch.delenv("AUTOTRANSFER_PEERS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert REPOSITORY is not None and peers_dir() == REPOSITORY / ".peers"
    monkeypatch.setenv("AUTOTRANSFER_PEERS", str(tmp_path / "mine"))
    assert peers_dir() == tmp_path / "mine"


def test_a_cell_at_chance_level_is_flagged_as_suspect(tmp_path):
    """The smoke suite's "fine-tune all, pretrained LR x0.01" scored 0.120 on 10 classes and was ranked as a result."""
    suite = _suite(tmp_path, "datasets: [{name: d, path: .., per_class: [10], test_per_class: 15}]\ncontenders: [fit]")
    base = {**_records()[0], "n_classes": 10, "title": "fit"}
    records = [{**base, "seed": 0, "test_accuracy": 0.12}, {**base, "seed": 1, "test_accuracy": 0.9}]
    frame = cell_frame(records, suite)
    assert frame.set_index("seed")["at_chance"].to_dict() == {0: True, 1: False}
    text = render_markdown(frame, suite, "test machine")
    assert "1 at chance: suspect" in text and "## At chance level (suspect)" in text
    assert "- d 10/class seed 0, fit: 0.120 on 10 classes (chance 0.100)" in text
