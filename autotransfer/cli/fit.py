"""`autotransfer fit` (and its --resume): check the arguments before any heavy import, run the search,
and print what it found (report/fit_summary.py; the same lines end fit.log)."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.logging import RichHandler
from rich.markup import escape

from autotransfer.cli.common import DEFAULTS, err, out, prepare_output
from autotransfer.errors import AutoTransferError


def fit(  # noqa: PLR0913 (typer reads a command's options from its parameters: one per option)
    data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
    time_budget: str = typer.Option(
        str(DEFAULTS["time_budget"]), "--time-budget", help="hard wall-clock bound, e.g. 90s, 10m, 2h"
    ),
    search_space: str = typer.Option(
        str(DEFAULTS["search_space"]), "--search-space", help="fast | default | thorough | a YAML file"
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="run directory (default runs/<timestamp>); an unfinished one continues its search, a finished one "
        "(pipeline saved) is reported and not searched again",
    ),
    resume: bool = typer.Option(
        False,
        "--resume/--no-resume",
        help="continue the latest run in runs/ of this data (with no --out); a finished run is not searched again",
    ),
    storage: str | None = typer.Option(
        DEFAULTS["storage"], help="Optuna storage URL shared by workers (default: SQLite in the run directory)"
    ),
    backend: str = typer.Option(DEFAULTS["backend"], help="optuna (this process) | ray (Ray Tune trials)"),
    ray_address: str | None = typer.Option(DEFAULTS["ray_address"], help="existing Ray cluster (default: a local Ray)"),
    cpus_per_trial: float = typer.Option(DEFAULTS["cpus_per_trial"], help="Ray: CPUs per trial"),
    gpus_per_trial: float = typer.Option(DEFAULTS["gpus_per_trial"], help="Ray: GPUs per trial (fractions allowed)"),
    profile_backbone: str = typer.Option(
        DEFAULTS["profile_backbone"], help="the BatchNorm backbone the profiler measures with"
    ),
    val_fraction: float = typer.Option(
        DEFAULTS["val_fraction"], help="share of each class held out for validation (no val/ folder)"
    ),
    seed: int = typer.Option(DEFAULTS["seed"], help="seed of the split, the samplers and the training"),
    device: str | None = typer.Option(DEFAULTS["device"], help="cpu or cuda (default: cuda when present)"),
    metric: str = typer.Option(
        DEFAULTS["metric"],
        help="auto | accuracy | balanced_accuracy | f1_macro | roc_auc | log_loss (auto: balanced accuracy "
        "when the classes are imbalanced from 3:1)",
    ),
    ensemble: bool = typer.Option(
        DEFAULTS["ensemble"],
        "--ensemble/--no-ensemble",
        help="average the best few configurations when validation says it beats the best one alone",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only warnings and the summary (fit.log keeps every line)"),
) -> None:
    """Find the best way to transfer an ImageNet network to DATA, within the time budget."""
    start = time.monotonic()
    from autotransfer.data.sources import check_data_path
    from autotransfer.option_checks import check_options_early
    from autotransfer.options import RunOptions

    check_data_path(data)  # before the engine's imports: a typo is answered at once
    options = RunOptions(
        time_budget=time_budget, search_space=search_space, backend=backend, out=out_dir, storage=storage,
        seed=seed, val_fraction=val_fraction, device=device, ray_address=ray_address, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, profile_backbone=profile_backbone, metric=metric, ensemble=ensemble,
    )  # fmt: skip
    if out_dir is None and resume:
        out_dir = latest_run(data)
    elif resume and not (Path(out_dir) / "run.json").exists():
        out.print(f"--resume: nothing to resume in {out_dir} (no earlier run there): starting a new run")
    if out_dir is not None:
        prepare_output(out_dir, "--out", directory=True)
    check_options_early(options)  # the cheap checks, before torch, optuna and the search are imported
    _run_and_summarise(data, replace(options, out=out_dir), start=start, quiet=quiet)


def _run_and_summarise(data: Path, options, *, start: float, quiet: bool) -> None:
    """The search with its progress on the terminal, then the summary (and what the cache gained)."""
    from autotransfer.budget import format_duration
    from autotransfer.data.cache_index import cache_limit, entry_bytes
    from autotransfer.report.fit_summary import append_to_fit_log, print_fit_summary, where_lines
    from autotransfer.report.progress import Progress
    from autotransfer.search.run import run
    from autotransfer.search.settings import resolve_settings
    from autotransfer.search.storage import WrittenByAnotherWorker

    settings = resolve_settings(options, start=start)
    err.print(
        f"fit {escape(str(data))}: search space [bold]{settings.space.name}[/], budget "
        f"{format_duration(settings.time_budget)}, run directory {escape(str(settings.out))}"
    )
    cache_limit()  # a malformed AUTOTRANSFER_CACHE_LIMIT is refused before any work
    cached_before = entry_bytes()
    if quiet:  # the log lines too (fit.log keeps them): only warnings, errors and the summary on the terminal
        for handler in logging.getLogger().handlers:
            if isinstance(handler, RichHandler):
                handler.setLevel(logging.WARNING)
    progress = Progress(settings.time_budget, verbose=0 if quiet else 1, start=start, console=err)
    try:
        result = run(data, settings, progress)
    except WrittenByAnotherWorker as done:  # a worker of a shared study: its part is done
        err.print(escape(str(done)), highlight=False)
        return
    except KeyboardInterrupt:
        err.print(
            f"Interrupted. Trials that finished (if any) are saved in {settings.out}; run the same command with "
            f"--out {settings.out} (or --resume) to continue."
        )
        sys.exit(130)
    finally:
        progress.close()
    if result.already_finished:  # the note (search/finished.py) is logged; where to find what it saved
        out.print(where_lines(result.run_dir))
        return
    print_fit_summary(result, settings.time_budget, out)
    problem = append_to_fit_log(result, settings.time_budget)
    if problem:
        err.print(f"note: the summary could not be added to fit.log ({escape(problem)})")
    print_cache_growth(cached_before, settings.out / "fit.log")


def print_cache_growth(before: dict[str, int], log_file: Path) -> None:
    """What the run added to the cache (the entries it opened; ``before``: cache_index.entry_bytes at its
    start), in the summary and at the end of fit.log; then the size limit."""
    from autotransfer.data.cache_index import enforce_limit, format_bytes, own_growth
    from autotransfer.settings import cache_dir

    added = own_growth(before)
    line = (f"cache: {'+' if added >= 0 else '-'}{format_bytes(abs(added))} of decoded images and features for "
            f"this run in {cache_dir()} (`autotransfer cache` lists them, `autotransfer cache clear` removes "
            "them)")  # fmt: skip
    evicted = enforce_limit()
    if evicted.removed:
        line += (f"; {len(evicted.removed)} least recently used entr{'y' if len(evicted.removed) == 1 else 'ies'} "
                 f"evicted ({format_bytes(evicted.freed)}, AUTOTRANSFER_CACHE_LIMIT)")  # fmt: skip
    out.print(escape(line), highlight=False)
    try:
        with open(log_file, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO autotransfer.cli: {line}\n")
    except OSError:
        pass  # the summary above has it; the log is a copy


def latest_run(data: Path) -> Path:
    """The newest run directory under runs/ of ``data`` (``fit --resume`` with no --out)."""
    runs = sorted(
        (
            p.parent
            for p in Path("runs").glob("*/run.json")
            if json.loads(p.read_text()).get("data") == str(data.resolve())
        ),
        key=lambda p: p.name,
    )
    if not runs:
        raise AutoTransferError(
            f"--resume: no earlier run of {data} in runs/.", where=str(Path("runs").resolve()),
            fix="start one without --resume.",
        )  # fmt: skip
    return runs[-1]
