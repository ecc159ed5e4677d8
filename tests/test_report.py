"""The run report: missing cells never break a table, and report.html says what happened (the chosen
trial marked, trials counted as they ran, time against the budget, per-class metrics, confusion
matrices, the most confident mistakes with embedded thumbnails, plots, a leaderboard per stage)."""

import base64
import io
import re
from dataclasses import replace
from html.parser import HTMLParser

import pandas as pd
import pytest
from PIL import Image
from sample_run import dataset_profile, make_run

from autotransfer.report.outputs import COLUMNS, leaderboard, trial_counts, write_outputs
from autotransfer.report.sections import placement_rows, thumbnail
from autotransfer.report.terminal import cell_text, frame_table, is_missing
from autotransfer.search.run_profile import RunProfile


class Page(HTMLParser):
    """Images, the chosen rows and the sections of a report."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images, self.chosen_rows, self.ids, self.in_chosen = [], [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "tr" and "chosen" in (attrs.get("class") or "").split():
            self.in_chosen = True
            self.chosen_rows.append([])

    def handle_endtag(self, tag):
        if tag == "tr":
            self.in_chosen = False

    def handle_data(self, data):
        if self.in_chosen and data.strip():
            self.chosen_rows[-1].append(data.strip())


@pytest.mark.parametrize("value", [pd.NA, None, float("nan"), pd.NaT])
def test_missing_cells_format_as_empty(value):
    assert is_missing(value) and cell_text(value) == ""


def test_a_leaderboard_with_never_run_trials_renders_in_the_terminal():
    """Issue 15.1: trials queued but never run have <NA> cells (Int64 columns); the summary table
    evaluated `v != v` on pd.NA and `fit` died after saving."""
    args = make_run.__globals__["records"](finetune_finished=False)
    frame = leaderboard(args, args[1], None)
    assert frame["resolution"].isna().any()  # <NA> in an Int64 column: the case that crashed
    table = frame_table(frame[["stage", "trial", "resolution", "val_accuracy", "status"]], "top")
    assert table.row_count == len(frame)
    assert cell_text(frame["resolution"].iloc[-1]) == "" and cell_text(0.86) == "0.860"


def test_report_of_a_full_run(tmp_path):
    args = make_run(tmp_path / "run")
    frame = write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    page = Page(text)
    # the chosen trial is the marked row (not the second row of the table)
    assert len(page.chosen_rows) == 1
    assert page.chosen_rows[0][:3] == ["★", "1", "finetune_top"]
    assert frame.loc[frame["chosen"], "trial"].tolist() == [1] and frame["chosen"].sum() == 1
    # trials counted as they ran; the time against the budget
    assert "4 probes, 2 fine-tuning trials (1 pruned, 1 failed); 1 queued trial not started" in text
    assert "97s of 2m00s" in text
    # metrics, per class and the confusion matrices of both splits
    assert "val accuracy — classes are balanced" in text and "83.3%" in text  # test accuracy 20/24
    for section in ("classes", "wrong", "search", "leaderboard"):
        assert section in page.ids
    assert text.count("<table class=confusion>") == 2
    assert re.search(r'<td class="cm diag" style="[^"]*">6</td>', text)  # 6 cats seen as cats (validation)
    # the gallery: the most confident mistakes first, thumbnails embedded and decodable
    assert len(page.images) == 6
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1]))).verify()
    assert text.index("88.8%") < text.index("57.9%")
    # plots are inline (one file), three of them
    assert text.count("<svg") == 3 and "<script" not in text
    # leaderboard: columns per stage, shared settings said once, all columns in the CSV
    probes = text[text.index("<h3>Probes") : text.index("<h3>Fine-tuning")]
    finetune = text[text.index("<h3>Fine-tuning") :]
    assert "<th>C</th>" in probes and "frozen groups" not in probes
    assert "<th>frozen groups</th>" in finetune and "<th>C</th>" not in finetune
    assert "share backbone <b>mobilenetv2_100</b>" in probes
    assert "1 queued trial(s) did not start" in finetune
    assert list(pd.read_csv(tmp_path / "run" / "leaderboard.csv").columns) == COLUMNS


def test_the_report_says_when_the_small_data_rule_chose_the_pipeline(tmp_path):
    args = make_run(tmp_path / "run")
    write_outputs(**args)
    assert "<th>choice</th>" not in (tmp_path / "run" / "report.html").read_text()  # the plain maximum
    args["pipeline"].spec["metrics"]["selection"] = "one-standard-error rule (small data): kept the cheaper probe"
    write_outputs(**args)
    assert "<th>choice</th><td>one-standard-error rule (small data)" in (tmp_path / "run" / "report.html").read_text()


def test_the_report_names_the_metric_the_test_balanced_accuracy_and_what_auto_chose(tmp_path):
    """The fresh-user trial: the cost chart was titled "accuracy" whatever the metric, the test cards had no
    balanced accuracy, and only the terminal said which backbones and sizes `auto` chose and why."""
    from autotransfer.search.auto_space import AutoChoice, resolutions_reason

    args = make_run(tmp_path / "run")
    profile = RunProfile.load(tmp_path / "run")
    profile.auto = AutoChoice(backbones=("mobilenetv2_100", "tf_efficientnet_lite0"), resolutions=(64, 96),
                              native_side=300, profile_resolution=64, skipped={"resnet50": "too slow for the budget"},
                              resolutions_reason=resolutions_reason((64, 96), 64, 300, pinned=False))  # fmt: skip
    profile.save(tmp_path / "run")
    args["pipeline"].spec["metrics"]["metric"] = "balanced_accuracy"
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Search score (balanced accuracy) against cost" in text and "Accuracy against cost" not in text
    # the card is the mean of the per-class recalls of the test predictions
    test = pd.read_csv(tmp_path / "run" / "predictions-test.csv")
    recall = (test["label"] == test["predicted"]).groupby(test["label"]).mean().mean()
    assert re.search(rf"test balanced accuracy</div><div[^>]*>{recall * 100:.1f}%", text)
    row = re.search(r"<th>backbones and sizes \(auto\)</th><td>([^<]*)</td>", text).group(1)
    assert row.startswith("backbones mobilenetv2_100, tf_efficientnet_lite0 at 64, 96 px (")
    assert "probed within the budget: mobilenetv2_100@64, mobilenetv2_100@96" in row  # lite0 never probed
    assert "left out: resnet50: too slow for the budget" in row


def test_report_when_no_fine_tuning_trial_finished_and_no_test(tmp_path):
    args = make_run(tmp_path / "run", with_test=False, finetune_finished=False)
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "4 probes, 0 fine-tuning trials (1 failed); 3 queued trials not started" in text
    assert "no fine-tuning trial finished within the budget" in text  # said, not a flat line at 0
    assert "no test split" in text and text.count("<table class=confusion>") == 1
    assert Page(text).chosen_rows[0][:3] == ["★", "1", "mid_layer_probe"]


def test_report_of_an_older_run_without_predictions_or_profile(tmp_path):
    args = make_run(tmp_path / "run")
    for name in ("predictions-val.csv", "predictions-test.csv", "profile.json"):
        (tmp_path / "run" / name).unlink()
    args["pipeline"].spec = {"metrics": {"val_accuracy": 0.9}}  # no classes, summary, per-class metrics
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "90.0%" in text and "Per class" not in text and "no profile" in text


def test_trial_counts_skip_trials_that_never_ran():
    frame = pd.DataFrame(
        {"stage": ["probe", "probe", "finetune", "finetune"], "status": ["complete", "fail", "waiting", "pruned"]}
    )
    counts = trial_counts(frame)
    assert counts["probe"]["ran"] == 1 and counts["finetune"]["ran"] == 1 and counts["finetune"]["not_started"] == 1
    assert counts["text"] == "1 probe (1 failed), 1 fine-tuning trial (1 pruned); 1 queued trial not started"
    frame["stopped"] = [None, None, None, "time budget: stopped after epoch 6"]  # the second fresh-user trial
    assert trial_counts(frame)["text"].startswith("1 probe (1 failed), 1 fine-tuning trial (1 stopped by the budget)")


@pytest.mark.filterwarnings("error")
def test_thumbnail_of_a_palette_image_with_transparency_bytes(tmp_path):
    """Clip art PNGs keep per-entry palette alpha; PIL warns when such an image goes straight to RGB."""
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] * 85)
    image.save(tmp_path / "clip.png", transparency=bytes([0, 128, 255] * 85))
    url = thumbnail(tmp_path / "clip.png", [])
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.mode == "RGB" and max(decoded.size) > 0
    assert decoded.getpixel((0, 0))[0] > 200  # entry 1 is half transparent red on white: light red


def test_the_report_shows_both_placements_and_the_size_measured_at():
    from autotransfer.search.placement import Placement

    measured = Placement(quadrant="small-similar", a_priori="small-different", differs=True, head_score=0.64,
                         mid_score=0.63, pixel_score=None, strategies=("linear_probe",),
                         rationale="CNN codes 0.64 vs 0.63")  # fmt: skip
    dataset = replace(dataset_profile(), quadrant="small-different", rationale="far from photos", similarity=0.49,
                      resolution={"profiled_at": 128}, nearest_reference="clipart",
                      separability={"knn_accuracy": 0.51, "chance": 0.10})  # fmt: skip
    profile = RunProfile(dataset=dataset, measured=measured)
    rows = dict(placement_rows(profile))
    assert rows["quadrant, a priori (profile)"].startswith("small-different — far from photos (similarity 0.49")
    assert (
        "at 128px" in rows["quadrant, a priori (profile)"]
        and "chance 0.10 (majority class)" in rows["quadrant, a priori (profile)"]
    )
    assert rows["quadrant, measured (probes)"] == "small-similar — differs from the profile: CNN codes 0.64 vs 0.63"
    skipped = dict(placement_rows(replace(profile, measured=None, measured_skipped="no lower tap probed")))
    assert skipped["quadrant, measured (probes)"] == "not measured: no lower tap probed"
    assert placement_rows(None) == []
    bare = replace(dataset_profile(), rationale="median 40", resolution={}, similarity=float("nan"))
    assert placement_rows(RunProfile(dataset=bare)) == [
        ("quadrant, a priori (profile)", "small-different — median 40")  # no empty "()" when nothing was measured
    ]


def test_the_cards_say_when_the_val_split_chose_and_show_the_metric_asked_for_on_test(tmp_path):
    """The fresh-user trial: cards called the val split "held-out" when the search chose on it, and a
    run asked for macro F1 or log loss showed neither on the test split."""
    args = make_run(tmp_path / "run")
    metrics = args["pipeline"].spec["metrics"]
    metrics.update(metric="f1_macro", val_score=0.8, val_score_from="validation split")
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "accuracy (val split)" in text and "held-out val" not in text
    assert "the split the search chose on: optimistic" in text
    assert re.search(r"test macro F1</div><div[^>]*>\d+\.\d%", text)
    metrics.update(metric="log_loss", val_score=-0.3125, val_score_from="cross-validation")
    per_class = {c: {"precision": 0.9, "recall": 0.875, "support": 8} for c in ("cat", "dog", "fox")}
    metrics["test"] = {"accuracy": 0.875, "balanced_accuracy": 0.875, "f1_macro": 0.87, "log_loss": 0.41,
                       "per_class": per_class}  # fmt: skip
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "accuracy (held-out val)" in text
    assert re.search(r"search score: log loss \(CV mean on train\+val\)</div><div[^>]*>0\.3125", text)
    assert re.search(r"test log loss</div><div[^>]*>0\.4100</div>\s*<div class=note>lower is better", text)


def test_the_report_explains_a_chosen_trial_off_the_pareto_front(tmp_path):
    """The fresh-user trial: the ★ sat off the Pareto front drawn on the same chart, a tie at half its cost listed
    above it, and why it was chosen was said only in the terminal."""
    args = make_run(tmp_path / "run")
    rows = args["records"]
    tie = replace(rows[5], trial=4, seconds=10.0)  # the ★ (trial 1, 21.5 s) scored 0.9 too, at twice the cost
    args["records"] = [*rows, tie]
    frame = write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert frame.loc[0, "chosen"] and frame.loc[0, "trial"] == 1  # the ★ first among equal scores
    why = text[text.index("<h3 id=why>") :]
    assert "Why the ★ trial" in why and "fine-tuning trial 1 (finetune_top)" in why
    assert "not on the Pareto front: fine-tuning trial 4 (finetune_top) scored 0.9000 in 10.0 s" in why
    assert "never by their measured seconds" in why and "scored on the validation split" in why
    assert "chosen (★), off the front: see why below" in text  # the plot's legend says so too
    args["records"] = rows  # no tie: on the front, nothing to excuse
    args["pipeline"].spec["metrics"] |= {"selection": "one-standard-error rule (small data): kept the cheaper X",
                                         "val_score_from": "cross-validation"}  # fmt: skip
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "It was chosen by the one-standard-error rule (small data)" in text
    assert "mean over cross-validation folds of train+val" in text
    assert "not on the Pareto front" not in text and "chosen (★)" in text


def test_the_distance_chart_names_the_profiling_backbone_when_another_is_chosen(tmp_path):
    args = make_run(tmp_path / "run")
    args["records"] = [
        replace(r, backbone="tf_efficientnet_lite0") if r.stage == "finetune" else r for r in args["records"]
    ]
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Profile: domain distance by depth of mobilenetv2_100" in text
    assert "the chosen pipeline uses tf_efficientnet_lite0" in text


def test_the_charts_say_where_each_score_was_measured_and_keep_the_test_score_apart(tmp_path):
    """Issue 26.7: the cost chart drew cross-validation scores of the probes beside the validation-split
    scores of fine-tuned trials, next to held-out score cards, without saying which was which."""
    from autotransfer.report.sections import stage_labels

    args = make_run(tmp_path / "run")
    metrics = args["pipeline"].spec["metrics"]
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "<!-- probes (validation split) -->" in text and "<!-- fine-tuning (validation split) -->" in text
    assert "Every score is on the validation split; the chosen pipeline" in text
    assert "held-out test score is in the cards above, not on this chart" in text
    # small data: the probes were cross-validated, the chosen (fine-tuned) trial scored on the val split
    metrics.update(val_score_from="validation split", metric_reason="classes are balanced; probes chosen by 3-fold "
                   "cross-validation (smallest class 10 training images)")  # fmt: skip
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert text.count("<!-- probes (CV mean on train+val) -->") == 2  # the cost chart and the history
    assert "<!-- probes (validation split) -->" not in text and "<!-- fine-tuning (validation split) -->" in text
    assert "Probe scores are means over cross-validation folds of train+val, fine-tuning scores are on the " in text
    assert stage_labels({"val_score_from": "cross-validation"})["probe"] == "probes (CV mean on train+val)"


def test_a_pareto_front_of_one_trial_draws_no_empty_legend_entry():
    """The fresh-user trial: a front of a single point had a legend entry whose line was drawn nowhere."""
    from autotransfer.report.plots import pareto_plot

    labels = {"probe": "probe (CV)", "finetune": "fine-tuning (val)"}
    one = pd.DataFrame([{"stage": "probe", "val_score": 0.9, "seconds": 2.0, "status": "complete", "chosen": True}])
    drawn = pareto_plot(one, labels)
    assert "chosen (★)" in drawn and "Pareto front" not in drawn  # matplotlib keeps each text as an SVG comment
    two = pd.concat([one, one.assign(val_score=0.95, seconds=5.0, chosen=False)], ignore_index=True)
    assert "Pareto front" in pareto_plot(two, labels)


def test_the_reports_boards_name_cv_scores_as_cv(tmp_path):
    """The fresh-user trial: the probes' table headed its CV means "val score" and "val accuracy"."""
    args = make_run(tmp_path / "run")
    args["records"] = [replace(r, score_source="cv" if r.stage == "probe" else "val") for r in args["records"]]
    frame = write_outputs(**args)
    assert set(frame.loc[frame["stage"] == "probe", "score_source"]) == {"cv"}
    text = (tmp_path / "run" / "report.html").read_text()
    probes, finetuning = text.split("<h3>Fine-tuning (", 1)
    probes = probes[probes.index("<h3>Probes (") :]
    assert "CV accuracy" in probes and "val accuracy" not in probes
    assert "val accuracy" in finetuning and "CV accuracy" not in finetuning


def test_the_report_reads_the_typed_profile_and_leaves_out_another_versions(tmp_path):
    """Issue 25: the report read profile.json as a dict; it reads it through RunProfile now, and a file another
    version wrote (refused by RunProfile) leaves the profile's sections out, said in one line, instead of failing."""
    import json

    args = make_run(tmp_path / "run")
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Profile: domain distance by depth of mobilenetv2_100" in text and text.count("<svg") == 3
    assert "<th>dataset</th><td>150 images, 3 classes; 1 file(s) skipped</td>" in text
    assert "quadrant, a priori (profile)" in text and "class &#39;fox&#39; has 3 near-duplicate images" in text
    assert "left out" not in text
    document = json.loads((tmp_path / "run" / "profile.json").read_text())
    for foreign in ({**document, "colour_histogram": [1, 2]}, {k: v for k, v in document.items() if k != "quadrant"}):
        (tmp_path / "run" / "profile.json").write_text(json.dumps(foreign))
        frame = write_outputs(**args)
        text = (tmp_path / "run" / "report.html").read_text()
        assert text.count("The profile&#39;s sections are left out: ") == 1 and "another version wrote it" in text
        assert text.count("<svg") == 2 and "The run has no profile" in text  # the two search charts remain
        assert (
            "quadrant, a priori" not in text and "Data problems" not in text and "<th>dataset</th><td>? images" in text
        )
        assert len(frame) == 8 and Page(text).chosen_rows[0][:3] == ["★", "1", "finetune_top"]
        assert pd.read_csv(tmp_path / "run" / "skipped.csv").empty


def _ensemble_run(tmp_path):
    """The sample run whose final pipeline is an ensemble of probe trial 1 and fine-tuning trial 1."""
    from autotransfer.search.ensemble_selection import EnsembleChoice
    from autotransfer.search.ensemble_stage import Ensemble, selection_words

    args = make_run(tmp_path / "run")
    rows = args["records"]
    ensemble = Ensemble(members=[rows[5], rows[1]], choice=EnsembleChoice({0: 1 / 3, 1: 2 / 3}, 0.95, 0.9),
                        val_probabilities=[])  # fmt: skip
    args["pipeline"].spec["metrics"] |= {"val_score": 0.95, "selection": selection_words(ensemble),
                                         "val_score_from": "validation split (members trained on train)"}  # fmt: skip
    return args, ensemble


def test_an_ensemble_marks_every_member_and_credits_its_test_score_to_none(tmp_path):
    """Issue 26: with an ensemble chosen, leaderboard.csv marked only the best single trial `chosen` and wrote the
    ensemble's test accuracy on that row."""
    from autotransfer.search.records import TrialRecord

    args, ensemble = _ensemble_run(tmp_path)
    frame = write_outputs(**args, ensemble=ensemble)
    chosen = frame[frame["chosen"]]
    assert sorted(zip(chosen["stage"], chosen["trial"], chosen["ensemble_weight"].round(3))) == [
        ("finetune", 1, 0.333), ("probe", 1, 0.667)
    ]  # fmt: skip
    assert frame["ensemble_weight"].notna().sum() == 2 and frame["test_accuracy"].isna().all()
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert list(board.columns) == COLUMNS and board["chosen"].sum() == 2
    records = [TrialRecord.from_row(row) for row in board.to_dict("records")]  # a finished run reads it back
    assert [(r.stage, r.trial) for r in records] == list(zip(board["stage"], board["trial"], strict=True))
    # one trial chosen: its row alone, with the test score and no weight
    single = write_outputs(**{**args, "pipeline": make_run(tmp_path / "single")["pipeline"]})
    assert single["chosen"].sum() == 1 and single["ensemble_weight"].isna().all()
    assert single.loc[single["chosen"], "test_accuracy"].tolist() == [0.875]


def test_the_report_explains_a_chosen_ensemble(tmp_path):
    """Issue 26: "Why the ★" named one member of the chosen ensemble."""
    args, ensemble = _ensemble_run(tmp_path)
    write_outputs(**args, ensemble=ensemble)
    text = (tmp_path / "run" / "report.html").read_text()
    page = Page(text)
    assert sorted(row[:3] for row in page.chosen_rows) == [["★", "1", "finetune_top"], ["★", "1", "mid_layer_probe"]]
    why = text[text.index("<h3 id=why>") : text.index("<h2 id=leaderboard>")]
    assert "Why the ★ trials: an ensemble of 2" in why
    assert (
        "An ensemble of 2 trials: probe trial 1 (mid_layer_probe, weight 0.67) and fine-tuning trial 1 "
        "(finetune_top, weight 0.33)</b>, the ensemble&#39;s val accuracy 0.9500 on the validation split (members "
        "trained on train)" in why
    )
    assert "greedy ensemble selection (Caruana et al. 2004): 0.9500 on the validation split against 0.9000" in why
    assert "only when its validation score beats that trial&#39;s alone" in why and "not on the Pareto" not in why
    assert "each of its 2 members is marked ★, its weight said under its table" in text
    assert "★ members of the chosen ensemble: trial 1 (weight 0.67)." in text  # under the probes' table
    assert "★ members of the chosen ensemble: trial 1 (weight 0.33)." in text  # under the fine-tuning one
    assert "ensemble members (★)" in text and "the red rings are the chosen ensemble&#39;s members" in text
    assert "(the chosen pipeline uses" not in text  # both members use the profiling backbone
    lite0 = [replace(r, backbone="tf_efficientnet_lite0") if r.stage == "finetune" else r for r in args["records"]]
    write_outputs(**{**args, "records": lite0}, ensemble=replace(ensemble, members=[lite0[5], lite0[1]]))
    text = (tmp_path / "run" / "report.html").read_text()
    assert "(the chosen pipeline uses tf_efficientnet_lite0, mobilenetv2_100)" in text


def test_the_time_card_warns_when_the_run_went_over_its_budget(tmp_path):
    """Issue 26: a run over its budget showed a full bar and no word of it (fit.log said "over the ... budget")."""
    args = make_run(tmp_path / "run")
    write_outputs(**args)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "97s of 2m00s" in text and "over the budget" not in text and "timebar over" not in text
    write_outputs(**{**args, "elapsed": 150.0})
    text = (tmp_path / "run" / "report.html").read_text()
    assert "2m30s of 2m00s" in text and "⚠ over the budget by 30s (25%)" in text and "timebar over" in text
