"""`autotransfer bench`: run a benchmark suite and write its leaderboard."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from autotransfer.cli.common import err, out, prepare_output
from autotransfer.errors import AutoTransferError

# The suites that ship as package data, named in `bench --help` (a directory listing: no import).
SUITE_NAMES = ", ".join(sorted(path.stem for path in (Path(__file__).parents[1] / "bench" / "suites").glob("*.yaml")))


def bench(
    suite_name: str = typer.Option(..., "--suite", help=f"{SUITE_NAMES} (autotransfer/bench/suites) or a YAML file"),
    out_dir: Path | None = typer.Option(None, "--out", help="results folder (default runs/bench-<suite>)"),
    contenders: str | None = typer.Option(None, help="comma-separated subset of the suite's contenders"),
    seeds: str | None = typer.Option(None, help="comma-separated subset of the suite's seeds, e.g. 0"),
    metric: str = typer.Option(
        "accuracy",
        help="what the leaderboard ranks by: accuracy | balanced_accuracy | f1_macro (every cell records all three)",
    ),
) -> None:
    """Run a benchmark suite: fit against the fixed strategies and baselines; resumable. The leaderboard
    covers the contenders and seeds asked for: with all of them finished, it is only written again.

    Exit status: 0 when every cell finished (peers that are not installed and cells at chance level are
    reported, not failures), 1 when a cell failed (the leaderboard is still written), 2 for a usage error.
    Runs from any directory: command contenders and the peers' folder are found in the repository.
    """
    from autotransfer.bench.leaderboard import check_bench_metric, write_leaderboard
    from autotransfer.bench.runner import finished_records, run_suite
    from autotransfer.bench.selection import select
    from autotransfer.bench.suite import load_suite
    from autotransfer.machine import describe_machine

    check_bench_metric(metric)
    if out_dir is not None:
        prepare_output(out_dir, "--out", directory=True)
    suite = load_suite(suite_name)
    suite, only = select(suite, contenders=contenders, seeds=seeds)
    out_dir = out_dir or Path("runs") / f"bench-{suite.name}"
    try:
        records = run_suite(suite, out_dir, only)
    except KeyboardInterrupt:
        finished = finished_records(suite, out_dir, only)
        if finished:  # the leaderboard of what finished, so the folder never shows an older run's
            write_leaderboard(finished, suite, out_dir, describe_machine(), metric)
        err.print(
            f"Interrupted. {len(finished)} finished cell(s) are saved in {escape(str(out_dir))}"
            + (" and in its leaderboard" if finished else "")
            + "; run the same command to go on."
        )
        sys.exit(130)
    if not records:
        raise AutoTransferError(
            "No cell of the suite has finished, so there is no leaderboard.", where=str(out_dir),
            fix="see each cell's error above, fix it, and run the same command again.",
        )  # fmt: skip
    frame = write_leaderboard(records, suite, out_dir, describe_machine(), metric)
    out.print((out_dir / "leaderboard.md").read_text())
    failed, missing = int((frame["status"] == "failed").sum()), int((frame["status"] == "not installed").sum())
    suspect = int(frame["at_chance"].sum())
    out.print(
        f"{len(frame)} cells ({failed} failed"
        + (f", {missing} not installed: make peers" if missing else "")
        + (f", {suspect} at chance level: suspect" if suspect else "")
        + f"): {escape(str(out_dir / 'leaderboard.md'))}, leaderboard.csv, report.html"
    )
    if failed:  # the leaderboard is written, but the suite did not do what was asked
        err.print(
            f"[bold red]Failed:[/] {failed} of {len(frame)} cells (each with its error under 'Failed cells' in "
            f"{escape(str(out_dir / 'leaderboard.md'))}); the others are kept: run the same command to try the "
            "failed ones again.",
            highlight=False,
        )
        sys.exit(1)
