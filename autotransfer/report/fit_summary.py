"""What a run says when it ends, on the terminal (`autotransfer fit`) and at the end of fit.log (the CLI
and the Python API alike): where the outputs are, the scores and how to read them
(report/score_summary.py), the search's choices and the top of the leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from autotransfer.report.leaderboard_table import leaderboard_table
from autotransfer.report.score_summary import ScoreSummary

if TYPE_CHECKING:
    from autotransfer.search.records import TrialRecord
    from autotransfer.search.run_profile import RunProfile

LOG_WIDTH = 160  # fit.log's leaderboard: wide enough for its every column (text lines are never wrapped)


def where_lines(run_dir: Path) -> str:
    return (
        f"pipeline: {escape(str(run_dir / 'pipeline'))}\nreport:   {escape(str(run_dir / 'report.html'))}\n"
        f"predict:  autotransfer predict {escape(str(run_dir))} IMAGES..."
    )


def print_fit_summary(result, budget: float, console: Console) -> None:
    """Where everything is first (so that it is seen whatever follows), then the chosen pipeline and
    the leaderboard's top rows of trials that ran. ``result``: search/run.py's RunResult."""
    from autotransfer.budget import format_duration
    from autotransfer.cpu_threads import load_note
    from autotransfer.report.outputs import trial_counts

    run_dir = result.run_dir
    metrics = result.pipeline.spec.get("metrics", {})
    counts = trial_counts(result.leaderboard)
    console.print(
        f"[bold green]Done[/] in {format_duration(result.seconds)} of the {format_duration(budget)} budget "
        f"({counts['text']}): {escape(result.pipeline.describe())}"
    )
    print_scores(metrics, console)
    print_search_choices(result.profile, result.records, console)
    print_unused_budget(result.profile, console)
    if load_note(result.profile.machine_load):
        console.print(f"[yellow]note:[/] {escape(load_note(result.profile.machine_load))}")
    console.print(where_lines(run_dir))
    console.print(leaderboard_table(result.leaderboard, metrics.get("metric", "accuracy"), console.width))
    skipped = result.profile.dataset.skipped
    if skipped:
        console.print(
            f"[yellow]{len(skipped)} file(s) skipped[/] (each with its reason in "
            f"{escape(str(run_dir / 'skipped.csv'))}): "
            + escape(", ".join(f"{Path(s['path']).name} ({s['reason']})" for s in skipped[:5]))
            + (", ..." if len(skipped) > 5 else "")
        )


def print_unused_budget(profile, console: Console) -> None:
    """Over ``UNUSED_SHARE`` of the budget left unused: how much, and why the search stopped where it did
    (``profile``: search/run_profile.py's RunProfile)."""
    from autotransfer.budget import format_duration
    from autotransfer.search.planner import UNUSED_SHARE

    unused = profile.budget_unused or {}
    if unused.get("share", 0.0) <= UNUSED_SHARE:
        return
    why = "; ".join(profile.search_ends or ["nothing more to search"])
    console.print(f"[yellow]unused:[/] {format_duration(unused['seconds'])} ({unused['share']:.0%} of the budget): "
                  f"{escape(why)}")  # fmt: skip


def print_scores(metrics: dict, console: Console) -> None:
    """The metric and why, the search score (val split or CV mean), the held-out and test figures."""
    from autotransfer.report.terminal import recall_summary

    scores = ScoreSummary.from_metrics(metrics)
    if scores.metric_reason:
        console.print(f"metric: {escape(scores.metric_reason)}")
    if scores.search_score is not None:  # what the search compared: on the val split, or a CV mean on small data
        refit = "" if scores.refit_on_train_val else "; not refit on train+val: the budget left no room"
        console.print(f"search score: {scores.search_score_text()} ({scores.search_source}){refit}")
    if scores.selection:
        console.print(f"choice: {escape(scores.selection)}")
    for split in scores.splits:
        name = scores.val_name if split.split == "val" else "test"
        console.print(
            f"{name}: accuracy {split.accuracy:.4f}, balanced accuracy {split.balanced_accuracy:.4f}, "
            f"macro F1 {split.f1_macro:.4f}"
            + "".join(f", {metric} {value:.4f}" for metric, value in split.probability_scores.items())
            + "; "
            + escape(recall_summary(split.per_class))
        )
        if split.at_chance:
            console.print(
                f"[yellow]warning:[/] {split.split} balanced accuracy {split.balanced_accuracy:.4f} is at chance "
                f"level (1/{len(split.per_class)} = {split.chance:.4f}): the pipeline does not tell these classes "
                "apart. Check that each class folder holds its own images, or raise --time-budget."
            )


def print_search_choices(profile: RunProfile, records: list[TrialRecord], console: Console) -> None:
    """Both placements (a priori and measured by the probes) and what `auto` chose, with reasons, and which
    (backbone, size) pairs the budget let the probes reach (``records``: the search's, search/records.py)."""
    if profile.measured_skipped:
        console.print(f"placement: not measured by the probes ({escape(profile.measured_skipped)})")
    placement = profile.measured
    if placement is not None:
        verdict = "differs from" if placement.differs else "agrees with"
        console.print(
            f"placement: a priori {placement.a_priori}, measured by the probes {placement.quadrant} "
            f"({verdict} the profile): {escape(placement.rationale)}"
        )
    if profile.auto is not None:
        from autotransfer.report.search_choices import describe_auto

        probed = [(r.backbone, r.resolution) for r in records if r.stage == "probe" and r.status == "complete"]
        console.print(f"auto: {escape(describe_auto(profile.auto.to_json(), probed))}")


def append_to_fit_log(result, budget: float) -> str | None:
    """The summary again at the end of the run's fit.log (the terminal's scrollback is gone tomorrow);
    the reason it could not be written, if so (the run's outputs are saved either way)."""
    try:
        with open(Path(result.run_dir) / "fit.log", "a") as log_file:
            # soft_wrap: a line of text stays one line in the file (grep finds it whole); the tables keep their width
            console = Console(file=log_file, width=LOG_WIDTH, no_color=True, soft_wrap=True)
            print_fit_summary(result, budget, console)
    except OSError as error:
        return str(error)
    return None
