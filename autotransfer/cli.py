"""The ``autotransfer`` command. Every user mistake ends in one clear message, never a traceback.

Start-up is kept light (`autotransfer --help` and `--version` well under a second): torch, timm,
numpy and pandas are imported inside the commands that need them, never at module level.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from autotransfer import __version__
from autotransfer.errors import AutoTransferError
from autotransfer.files import disk_full_error, is_disk_full
from autotransfer.options import DEFAULTS as RUN_DEFAULTS

if TYPE_CHECKING:
    from autotransfer.search.records import TrialRecord

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def _flags_without_type(core=typer.core) -> None:
    """typer (0.29) prints ``<bool>`` after every on/off flag in --help, as if it took a value:
    show flags (``--json``, ``--resume/--no-resume``, ``-h``) without a type column entry."""
    option = getattr(core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if original is None or getattr(original, "_flags_plain", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else original(self, ctx)

    display_type_rich._flags_plain = True
    option.display_type_rich = display_type_rich


_flags_without_type()
app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP_OPTIONS,
    help="Find the best way to transfer an ImageNet-pretrained network to your images.",
)
zoo_app = typer.Typer(
    no_args_is_help=True, context_settings=HELP_OPTIONS, help="The backbones: list, describe, fetch and verify weights."
)
app.add_typer(zoo_app, name="zoo")
# The suites that ship as package data, named in `bench --help` (a directory listing: no import).
SUITE_NAMES = ", ".join(sorted(path.stem for path in (Path(__file__).parent / "bench" / "suites").glob("*.yaml")))

# Piped output (CI logs, `| less`) gets a width that fits the tables instead of rich's default 80.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

OFFLINE_BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
MIN_TOP1 = 15  # of 20 foolbox ImageNet images; correctly mapped weights get 17-18


DEFAULTS = asdict(RUN_DEFAULTS)  # autotransfer/options.py: light, so --help stays fast


def _show_version(value: bool) -> None:
    if value:
        print(f"autotransfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", is_eager=True, callback=_show_version, help="print the version and exit"
    ),
) -> None:
    """Find the best way to transfer an ImageNet-pretrained network to your images."""


@zoo_app.command("list")
def zoo_list(as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table")) -> None:
    """One row per known backbone: source, offline weights, native resolution, taps, depth groups."""
    from autotransfer.models.zoo_table import known_rows

    rows = known_rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Known backbones (any other timm name works too)")
    table.add_column("name", no_wrap=True)
    for column in ("source", "weights offline", "native px", "taps", "depth groups"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["source"],
            "[green]yes[/]" if row["weights_available"] else "no",
            str(row["native_resolution"]),
            str(len(row["taps"])),
            str(row["depth_groups"]),
        )
    out.print(table)
    if not all(r["weights_available"] for r in rows if r["source"] == "offline zoo"):
        out.print("Run [bold]autotransfer zoo fetch[/] to install the offline zoo's ImageNet weights.")


@zoo_app.command("show")
def zoo_show(
    name: str,
    weights: Path | None = typer.Option(None, help="weights file or directory"),
    pretrained: bool = typer.Option(True, help="resolve pretrained weights (off: architecture only)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Taps, depth groups, preprocessing and weight source of one backbone."""
    from autotransfer.models.zoo import create_backbone

    backbone = create_backbone(name, pretrained=pretrained, weights=weights, device="cpu" if pretrained else "meta")
    info = backbone.describe()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    out.print(f"[bold]{name}[/] ({info['source']}), weights: {info['weights']}, features: {info['num_features']}")
    out.print(f"preprocess: {info['preprocess']}")
    taps = Table(title="tap points (early to late)")
    for column in ("name", "module", "channels", "stride"):
        taps.add_column(column)
    for tap in info["taps"]:
        taps.add_row(tap["name"], tap["module"], str(tap["channels"]), str(tap["stride"] or "-"))
    out.print(taps)
    out.print("depth groups: " + ", ".join(f"{g['index']}:{g['name']}" for g in info["depth_groups"]))


@zoo_app.command("fetch")
def zoo_fetch(names: list[str] | None = typer.Argument(None, help="default: the whole offline zoo")) -> None:
    """Download, verify (SHA-256) and convert the offline zoo's ImageNet weights into the cache."""
    from autotransfer.models.weights import OFFLINE_ZOO
    from autotransfer.models.zoo import create_backbone

    for name in names or list(OFFLINE_ZOO):
        if name not in OFFLINE_ZOO:
            raise AutoTransferError(f"{name} is not in the offline zoo.", fix=f"choose from {', '.join(OFFLINE_ZOO)}.")
        backbone = create_backbone(name, pretrained=True)
        out.print(f"{name}: {backbone.weights.describe()}")


@zoo_app.command("verify")
def zoo_verify(
    names: list[str] | None = typer.Argument(None, help="default: the whole offline zoo"),
    weights: Path | None = typer.Option(None, help="weights file or directory to check"),
) -> None:
    """ImageNet top-1 on 20 real ImageNet images: proves the weights are loaded and mapped correctly."""
    from autotransfer.models.imagenet_check import imagenet_top1
    from autotransfer.models.weights import OFFLINE_ZOO

    failed = []
    for name in names or list(OFFLINE_ZOO):
        result = imagenet_top1(name, weights=weights)
        ok = result.correct >= MIN_TOP1
        failed += [] if ok else [name]
        out.print(
            f"{name}: top-1 {result.correct}/{result.total} "
            + ("[green]ok[/]" if ok else "[red]FAILED[/]")
            + f"  (weights: {result.weights.split(' (')[0]})"
        )
    if failed:
        raise AutoTransferError(
            f"Weights of {', '.join(failed)} score below {MIN_TOP1}/20 on real ImageNet images.",
            fix="the file is not ImageNet-1k weights for this architecture, or is mapped wrongly.",
        )


@app.command()
def inspect(
    data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
    size: int = typer.Option(128, help="working resolution (pixels) of the decode cache"),
    val_fraction: float = typer.Option(DEFAULTS["val_fraction"], help="share of each class held out for validation"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Index and decode a dataset once (cached), and summarise classes, splits and skipped files."""
    from autotransfer.data.datasets import load_dataset

    start = time.perf_counter()
    dataset = load_dataset(data, image_size=size, val_fraction=val_fraction, seed=seed, show_progress=not as_json)
    seconds = time.perf_counter() - start
    summary = {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "n_images": len(dataset),
        "n_classes": len(dataset.classes),
        "splits": {s: dataset.counts(s) for s in ("train", "val", "test") if len(dataset.indices(s))},
        "skipped": [{"path": s.path, "reason": s.reason} for s in dataset.skipped],
        "label_conflicts": [conflict.to_json() for conflict in dataset.conflicts],
        "decode_cache": {"hit": dataset.cache_hit, "seconds": round(seconds, 3), "size": size},
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{dataset.root} ({dataset.layout}): {len(dataset)} images, {len(dataset.classes)} classes")
    table.add_column("class")
    for split in summary["splits"]:
        table.add_column(split, justify="right")
    for name in dataset.classes:
        table.add_row(name, *(str(summary["splits"][s][name]) for s in summary["splits"]))
    out.print(table)
    out.print(
        f"decoded at {size}px in {seconds:.2f}s ({'cache hit' if dataset.cache_hit else 'decoded and cached'}); "
        f"{len(dataset.skipped)} file(s) skipped"
        + (f", [yellow]{len(dataset.conflicts)} label conflict(s)[/] (listed above)" if dataset.conflicts else "")
    )


@app.command()
def rank(
    data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
    backbones: str = typer.Option(",".join(OFFLINE_BACKBONES), help="comma-separated backbone names"),
    size: int = typer.Option(96, help="input resolution (pixels)"),
    probe: bool = typer.Option(True, help="also train a linear probe per candidate (slower)"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score every (backbone, tap) with zero-cost proxies and linear probes: the engine's cheap stage."""
    from autotransfer.data.datasets import load_dataset
    from autotransfer.report.terminal import frame_table
    from autotransfer.transfer.ranking import RankingConfig, proxy_agreement, rank_candidates

    dataset = load_dataset(data, image_size=size, seed=seed, show_progress=not as_json)
    config = RankingConfig(probe=probe, seed=seed)
    table = rank_candidates(
        dataset, [b.strip() for b in backbones.split(",") if b.strip()], config, show_progress=not as_json
    )
    agreement = proxy_agreement(table) if probe else None
    if as_json:
        print(
            json.dumps(
                {
                    "candidates": table.to_dict("records"),
                    "agreement": None if agreement is None else agreement.to_dict("records"),
                },
                indent=2,
            )
        )
        return
    columns = ["backbone", "tap", "channels", "logme", "knn", "hscore"] + (
        ["probe_accuracy", "probe_head"] if probe else []
    )
    out.print(frame_table(table[columns], f"{len(table)} candidates on {data} at {size}px (best LogME first)"))
    if agreement is not None:
        out.print(frame_table(agreement, "rank agreement of each zero-cost score with the probe accuracy"))


@app.command()
def profile(
    data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
    backbone: str = typer.Option("mobilenetv2_100", help="a BatchNorm backbone to measure with"),
    weights: Path | None = typer.Option(None, help="weights file or directory for the backbone"),
    size: int | None = typer.Option(
        None, help="resolution the images are measured at (pixels); default: the size `fit` profiles at"
    ),
    sample: int = typer.Option(256, help="images sampled (seeded) for the per-layer statistics"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
    out_file: Path | None = typer.Option(None, "--out", help="also write the JSON to this file"),
) -> None:
    """Size, quality, per-layer distance to ImageNet, and the strategy the engine will start from."""
    if out_file is not None:
        _prepare_output(out_file, "--out")
    from autotransfer.report.terminal import render_profile
    from autotransfer.transfer.profile import profile_dataset

    result = profile_dataset(
        data,
        backbone=backbone,
        weights=weights,
        image_size=size,
        sample_size=sample,
        seed=seed,
        show_progress=not as_json,
    )
    document = result.to_json()
    if out_file is not None:
        from autotransfer.files import write_text_atomic

        try:
            write_text_atomic(out_file, json.dumps(document, indent=2))
        except OSError as error:
            raise _output_error(out_file, "--out", error) from error
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        render_profile(out, document)


@app.command()
def fit(
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

    check_data_path(data)  # before the engine's imports: a typo is answered at once
    from autotransfer.budget import format_duration, parse_duration

    parse_duration(time_budget)  # likewise a budget that is not a duration (its floor needs the engine)
    from autotransfer.options import RunOptions
    from autotransfer.report.progress import Progress
    from autotransfer.search.run import run
    from autotransfer.search.settings import resolve_settings
    from autotransfer.search.storage import WrittenByAnotherWorker

    if out_dir is None and resume:
        out_dir = _latest_run(data)
    elif resume and not (Path(out_dir) / "run.json").exists():
        out.print(f"--resume: nothing to resume in {out_dir} (no earlier run there): starting a new run")
    if out_dir is not None:
        _prepare_output(out_dir, "--out", directory=True)
    options = RunOptions(
        time_budget=time_budget,
        search_space=search_space,
        backend=backend,
        out=out_dir,
        storage=storage,
        seed=seed,
        val_fraction=val_fraction,
        device=device,
        ray_address=ray_address,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        profile_backbone=profile_backbone,
        metric=metric,
        ensemble=ensemble,
    )
    settings = resolve_settings(options, start=start)
    _check_space_backbones(search_space, settings.space.backbones)
    err.print(
        f"fit {escape(str(data))}: search space [bold]{settings.space.name}[/], budget "
        f"{format_duration(settings.time_budget)}, run directory {escape(str(settings.out))}"
    )
    from autotransfer.data.cache_index import cache_limit, evictable_bytes

    cache_limit()  # a malformed AUTOTRANSFER_CACHE_LIMIT is refused before any work
    cached_before = evictable_bytes()
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
        out.print(_where_lines(result.run_dir))
        return
    _print_fit_summary(result, settings.time_budget, out)
    try:  # the log keeps the summary too: the terminal's scrollback is gone tomorrow
        with open(result.run_dir / "fit.log", "a") as log_file:
            _print_fit_summary(result, settings.time_budget, Console(file=log_file, width=160, no_color=True))
    except OSError as error:
        err.print(f"note: the summary could not be added to fit.log ({escape(str(error))})")
    _print_cache_growth(cached_before, settings.out / "fit.log")


def _print_cache_growth(before: int, log_file: Path) -> None:
    """What the run added to the cache, in the summary and at the end of fit.log; then the size limit."""
    from autotransfer.data.cache_index import enforce_limit, evictable_bytes, format_bytes
    from autotransfer.settings import cache_dir

    added = evictable_bytes() - before
    line = (f"cache: {'+' if added >= 0 else '-'}{format_bytes(abs(added))} of decoded images and features in "
            f"{cache_dir()} (`autotransfer cache` lists them, `autotransfer cache clear` removes them)")  # fmt: skip
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


def _where_lines(run_dir: Path) -> str:
    return (
        f"pipeline: {escape(str(run_dir / 'pipeline'))}\nreport:   {escape(str(run_dir / 'report.html'))}\n"
        f"predict:  autotransfer predict {escape(str(run_dir))} IMAGES..."
    )


def _print_fit_summary(result, budget: float, console: Console | None = None) -> None:
    """Where everything is first (so that it is seen whatever follows), then the chosen pipeline and
    the leaderboard's top rows of trials that ran."""
    console = out if console is None else console  # the terminal, or fit.log's console
    from rich import box

    from autotransfer.budget import format_duration
    from autotransfer.report.outputs import trial_counts
    from autotransfer.report.terminal import cell_text, is_missing

    run_dir = result.run_dir
    metrics = result.pipeline.spec.get("metrics", {})
    counts = trial_counts(result.leaderboard)
    console.print(
        f"[bold green]Done[/] in {format_duration(result.seconds)} of the {format_duration(budget)} budget "
        f"({counts['text']}): {escape(result.pipeline.describe())}"
    )
    _print_scores(metrics, console)
    _print_search_choices(result.profile, result.records, console)
    from autotransfer.cpu_threads import load_note

    if load_note(result.profile.get("machine_load")):
        console.print(f"[yellow]note:[/] {escape(load_note(result.profile['machine_load']))}")
    console.print(_where_lines(run_dir))
    board = result.leaderboard
    if "status" in board:
        board = board[board["status"].isin(("complete", "pruned"))]
    # Narrow enough for an 80-column terminal: the strategy names the stage; seconds to 0.1.
    columns = {"chosen": "", "strategy": "strategy", "backbone": "backbone", "resolution": "px", "tap": "tap"}
    metric = metrics.get("metric", "accuracy")
    columns |= {"val_score": metric.replace("balanced_accuracy", "bal. acc"), "seconds": "s", "status": "status"}
    table = Table(
        title="leaderboard (top 8 of the trials that ran; all in leaderboard.csv)", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for name, header in columns.items():
        table.add_column(
            header, no_wrap=True, justify="right" if name in ("resolution", "val_score", "seconds") else "left"
        )
    for row in board.head(8).to_dict("records"):
        seconds = "" if is_missing(row.get("seconds")) else f"{float(row['seconds']):.1f}"
        status = {"complete": "done"}.get(str(row.get("status")), cell_text(row.get("status")))
        chosen = "★" if not is_missing(row.get("chosen")) and bool(row["chosen"]) else ""
        cells = {k: cell_text(row.get(k)) for k in columns} | {"seconds": seconds, "status": status, "chosen": chosen}
        table.add_row(*(escape(cells[k]) for k in columns))
    console.print(table)
    skipped = result.profile.get("skipped", [])
    if skipped:
        console.print(
            f"[yellow]{len(skipped)} file(s) skipped[/] (each with its reason in "
            f"{escape(str(run_dir / 'skipped.csv'))}): "
            + escape(", ".join(f"{Path(s['path']).name} ({s['reason']})" for s in skipped[:5]))
            + (", ..." if len(skipped) > 5 else "")
        )


def _print_scores(metrics: dict, console: Console | None = None) -> None:
    """The metric and why, the search score (val split or CV mean), the held-out and test figures."""
    from autotransfer.report.terminal import recall_summary

    console = out if console is None else console  # the terminal, or fit.log's console
    from autotransfer.transfer.metrics import PROBABILITY_METRICS

    metric = metrics.get("metric", "accuracy")
    if metrics.get("metric_reason"):
        console.print(f"metric: {escape(metrics['metric_reason'])}")
    if "val_score" in metrics:  # what the search compared: on the val split, or a CV mean on small data
        cross_validated = metrics.get("val_score_from") == "cross-validation"
        how = "mean over cross-validation folds of train+val" if cross_validated else "validation split"
        refit = "" if metrics.get("refit_on_train_val", True) else "; not refit on train+val: the budget left no room"
        score = f"{metric} {metrics['val_score']:.4f}"
        if metric == "log_loss":  # searched as "higher is better" (metrics.py): say the loss itself
            score = f"log_loss {-metrics['val_score']:.4f} (lower is better; maximised as its negative)"
        console.print(f"search score: {score} ({how}){refit}")
    if metrics.get("selection"):
        console.print(f"choice: {escape(metrics['selection'])}")
    # the val split chose the configuration unless probes were chosen by cross-validation: then it is not held out
    chose_on_val = metrics.get("val_score_from") == "validation split"
    val_name = ("validation split (the one the search chose on: optimistic)" if chose_on_val
                else "held-out validation (the chosen configuration trained on train only)")  # fmt: skip
    for split, name in (("val", val_name), ("test", "test")):
        summary = metrics.get(split) if isinstance(metrics.get(split), dict) else {}
        if summary:
            console.print(
                f"{name}: accuracy {summary['accuracy']:.4f}, balanced accuracy {summary['balanced_accuracy']:.4f}, "
                f"macro F1 {summary['f1_macro']:.4f}"
                + "".join(f", {name} {summary[name]:.4f}" for name in PROBABILITY_METRICS if name in summary)
                + "; "
                + escape(recall_summary(summary["per_class"]))
            )
            chance = 1.0 / max(1, len(summary["per_class"]))  # balanced accuracy of a constant or random guess
            if summary["balanced_accuracy"] <= chance + 0.02:
                console.print(
                    f"[yellow]warning:[/] {split} balanced accuracy {summary['balanced_accuracy']:.4f} is at chance "
                    f"level (1/{len(summary['per_class'])} = {chance:.4f}): the pipeline does not tell these classes "
                    "apart. Check that each class folder holds its own images, or raise --time-budget."
                )


def _print_search_choices(profile: dict, records: list[TrialRecord], console: Console | None = None) -> None:
    """Both placements (a priori and measured by the probes) and what `auto` chose, with reasons, and which
    (backbone, size) pairs the budget let the probes reach (``records``: the search's, search/records.py)."""
    console = out if console is None else console  # the terminal, or fit.log's console
    if profile.get("measured_skipped"):
        console.print(f"placement: not measured by the probes ({escape(profile['measured_skipped'])})")
    placement = profile.get("measured")
    if placement:
        verdict = "differs from" if placement.get("differs") else "agrees with"
        console.print(
            f"placement: a priori {placement.get('a_priori')}, measured by the probes {placement['quadrant']} "
            f"({verdict} the profile): {escape(placement.get('rationale', ''))}"
        )
    auto = profile.get("auto")
    if auto:
        from autotransfer.report.search_choices import describe_auto

        probed = [(r.backbone, r.resolution) for r in records if r.stage == "probe" and r.status == "complete"]
        console.print(f"auto: {escape(describe_auto(auto, probed))}")


def _check_space_backbones(search_space: str, backbones) -> None:
    """An unknown backbone in a search-space file is named with the file and key it came from."""
    from autotransfer.models.zoo import check_backbone_names
    from autotransfer.search.space import SPACES_DIR

    path = Path(search_space)
    if not path.suffix and (SPACES_DIR / f"{path}.yaml").is_file():
        path = SPACES_DIR / f"{path}.yaml"
    where = f"{path}, key backbones"
    check_backbone_names(list(backbones), where=where)


def _prepare_output(path: Path, option: str, directory: bool = False) -> None:
    """Check before any work that ``path`` (a file, or a folder with ``directory``) can be written:
    the folder above it is created; a file in its way or a read-only place is one clear error."""
    import os

    if not directory and path.is_dir():
        raise AutoTransferError(f"{option} {path} is a folder; a file name is needed.", fix="give a file path.")
    if directory and path.exists() and not path.is_dir():
        raise AutoTransferError(f"{option} {path} is a file; a folder is needed.", fix="give a folder path.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _output_error(path, option, error) from error
    if not os.access(path.parent, os.W_OK):
        raise _output_error(path, option, PermissionError(13, "Permission denied", str(path.parent)))


def _output_error(path: Path, option: str, error: OSError, note: str = "") -> AutoTransferError:
    """An OSError met while writing an output, as one message naming the path and the way out."""
    blocking = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None and blocking != path:
        what = f"Cannot write {option} {path}: {blocking} is a file, not a folder."
    else:
        what = f"Cannot write {option} {path}: {error.strerror or error}."
    return AutoTransferError(what + note, fix="choose a path in a folder you can write to.")


def _latest_run(data: Path) -> Path:
    runs = sorted(
        (
            p.parent
            for p in Path("runs").glob("*/run.json")
            if json.loads(p.read_text()).get("data") == str(data.resolve())
        ),
        key=lambda p: p.name,
    )
    if not runs:
        raise AutoTransferError(f"--resume: no earlier run of {data} in runs/.", fix="start one without --resume.")
    return runs[-1]


def _reflow_help(*typer_apps: typer.Typer) -> None:
    """typer's rich help keeps a docstring's line breaks and then wraps the lines again, so a paragraph
    breaks mid-phrase at any terminal width: each command's paragraphs are joined into one line first."""
    import inspect

    for typer_app in typer_apps:
        callbacks = [command.callback for command in typer_app.registered_commands]
        if typer_app.registered_callback is not None:
            callbacks.append(typer_app.registered_callback.callback)
        for callback in filter(None, callbacks):
            paragraphs = inspect.cleandoc(callback.__doc__ or "").split("\n\n")
            callback.__doc__ = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def _check_checkpoint_path(path: Path) -> None:
    """A checkpoint path that does not exist, answered before torch is imported (seconds); every other
    check of a checkpoint (a run without a pipeline, a damaged file) is Pipeline.load's."""
    if not path.exists():
        raise AutoTransferError(
            f"No pipeline checkpoint at {path}: the path does not exist.",
            where=str(path),
            fix="pass a run directory of `autotransfer fit` or a checkpoint directory.",
        )


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., metavar="RUN", help="run directory of `fit`, or a checkpoint directory"),
    inputs: list[Path] = typer.Argument(
        ..., metavar="IMAGES", help="image files and folders (recursive; links followed, loops once)"
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines on stdout, one object per image"),
    csv_file: Path | None = typer.Option(None, "--csv", metavar="FILE", help="also write the rows to this CSV"),
    top_k: int = typer.Option(1, "--top-k", min=1, metavar="K", help="classes listed per image (clamped to all)"),
    size: str = typer.Option("native", metavar="SIZE", help="native | original | N (shorter side in px)"),
    reduce: str = typer.Option("mean", metavar="mean|max", help="how a large image's score map is reduced"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="images decoded at a time"),
    device: str | None = typer.Option(None, metavar="DEVICE", help="cpu or cuda (default: cuda when present)"),
) -> None:
    """Classify images with a trained pipeline; unreadable files are reported and skipped.

    Images are decoded, classified and written in batches: memory does not grow with their number,
    large JPEGs are decoded near the size the network needs, --json lines and --csv rows appear as
    each batch is done (with the --top-k columns), and a progress bar shows on a terminal. Folders
    are walked as `fit` walks them: symbolic links are followed, a link loop is visited once.

    Exit status: 0 when at least one image was classified, 2 when none was (or the CSV could not
    be written; the rows before the failure are kept).
    """
    _check_checkpoint_path(checkpoint)
    from rich.progress import Progress

    from autotransfer.deploy.pipeline import Pipeline
    from autotransfer.deploy.predict_inputs import list_inputs
    from autotransfer.deploy.predict_rows import CsvRows, clamp_top_k, json_line, prediction_row
    from autotransfer.deploy.predict_stream import stream_predictions

    if csv_file is not None:
        _prepare_output(csv_file, "--csv")
    pipeline = Pipeline.load(checkpoint, device=device)
    sources = list_inputs([str(p) for p in inputs])
    k = clamp_top_k(top_k, len(pipeline.classes_))
    if k < top_k:
        err.print(f"note: --top-k {top_k} is more than the pipeline's {k} classes: listing all {k}.")
    stream = stream_predictions(pipeline, sources.items, size=size, reduce=reduce, batch_size=batch_size)
    table_rows, failed, n_classified = [], [], 0  # with --json nothing is kept for a table
    csv_handle = None
    try:
        if csv_file is not None:
            csv_handle = open(csv_file, "w", newline="")  # noqa: SIM115 (closed below; rows flushed per batch)
            writer = CsvRows(csv_handle, k)
        show = err.is_terminal and not (as_json and out.is_terminal)
        with Progress(console=err, transient=True, disable=not show) as progress:
            task = progress.add_task("Classifying", total=len(sources.items))
            for number, result in enumerate(stream, 1):
                row = prediction_row(result, pipeline.classes_, k)
                if row.error:
                    failed.append(row)
                else:
                    n_classified += 1
                    if not as_json:
                        table_rows.append(row)
                if as_json:
                    print(json_line(row), flush=number % batch_size == 0)
                if csv_handle is not None:
                    writer.write(row)
                    if number % batch_size == 0:
                        writer.flush()
                progress.advance(task)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(error, csv_file or Path.cwd()) from error
        raise _output_error(csv_file, "--csv", error, " The rows before the failure are kept.") from error
    finally:
        sys.stdout.flush()
        if csv_handle is not None:
            csv_handle.close()
    if not as_json:
        _print_prediction_table(pipeline, table_rows, k)
        for row in failed:
            err.print(f"[yellow]skipped[/] {escape(row.path)}: {escape(row.error)}", highlight=False)
    if not n_classified:
        raise AutoTransferError(
            f"No image was classified: {len(failed)} input(s), none readable as an image.",
            where=", ".join(str(p) for p in inputs[:3]) + (", ..." if len(inputs) > 3 else ""),
            fix="give image files (JPEG, PNG, ...) or folders holding them.",
        )
    if failed:
        err.print(f"{len(failed)} input(s) could not be read and were skipped.")
    if size != "native":
        err.print(
            f"note: --size {escape(str(size))} classifies each image at its own aspect ratio and scale, not as in "
            f"training ({pipeline.spec['preprocess']['size']} px, {pipeline.spec['preprocess']['resize_mode']}): "
            "answers can differ from the default --size native's; check them on labelled images first.",
            highlight=False,
        )
    ignored = sources.not_images
    if ignored:
        names = ", ".join(str(p) for p in ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        err.print(f"note: {len(ignored)} file(s) in the folders given are not images by name and were not read: "
                  f"{escape(names)}", highlight=False)  # fmt: skip


def _print_prediction_table(pipeline, rows: list, k: int) -> None:
    if not rows:
        return
    table = Table(title=f"{len(rows)} image(s) classified by {escape(pipeline.describe())}")
    for column in ("path", "label", "probability" if k == 1 else f"top {k}"):
        table.add_column(column, overflow="fold")
    for row in rows:
        detail = ", ".join(f"{name} {p:.3f}" for name, p in row.top_k) if k > 1 else f"{row.probability:.3f}"
        table.add_row(escape(row.path), escape(row.label), escape(detail))
    out.print(table)


cache_app = typer.Typer(
    context_settings=HELP_OPTIONS,
    help="What the cache holds (decoded images and features per dataset folder and size) and clearing it.",
)
app.add_typer(cache_app, name="cache")


@cache_app.callback(invoke_without_command=True)
def _cache_default(
    context: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="`cache --json`: as `cache list --json`"),
) -> None:
    """`autotransfer cache` alone lists, as `cache list` does."""
    if context.invoked_subcommand is None:
        cache_list(as_json=as_json)


@cache_app.command("list")
def cache_list(as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table")) -> None:
    """List the cache: per dataset folder and size, its decoded images and features, their size and
    last use (least recent first), and what is never evicted (weights, downloaded wheels).

    With AUTOTRANSFER_CACHE_LIMIT (e.g. 50GB) set, `fit` evicts the least recently used entries beyond
    it; an entry a running process uses is never removed."""
    from dataclasses import asdict

    from autotransfer.data.cache_index import cache_limit, format_bytes, list_cache

    listing = list_cache()
    if as_json:
        rows = [asdict(e) | {"bytes": e.bytes} for e in listing.entries]
        print(json.dumps({"root": str(listing.root), "entries": rows, "never_evicted": listing.other}, indent=2))
        return
    table = Table(title=f"autotransfer cache at {escape(str(listing.root))}")
    for column in ("dataset folder", "size", "images", "decoded", "features", "last use", "in use"):
        table.add_column(
            column, overflow="fold", justify="right" if column in ("images", "decoded", "features") else "left"
        )
    for e in listing.entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)) if e.last_used else "?"
        table.add_row(escape(e.dataset or "(not recorded)"), e.recipe, str(e.images), format_bytes(e.decoded_bytes),
                      format_bytes(e.feature_bytes), used, "yes" if e.in_use else "")  # fmt: skip
    out.print(table if listing.entries else "No decoded images or features are cached.")
    limit = cache_limit()
    out.print(
        f"decoded images and features: {format_bytes(listing.evictable_bytes)}"
        + (f" (limit {format_bytes(limit)}, AUTOTRANSFER_CACHE_LIMIT)" if limit else " (no limit set)")
        + "; never evicted: "
        + (", ".join(f"{escape(name)} {format_bytes(size)}" for name, size in listing.other.items()) or "nothing")
    )


@cache_app.command("clear")
def cache_clear(
    older_than: str | None = typer.Option(
        None, "--older-than", metavar="AGE", help="only entries last used longer ago, e.g. 30d, 12h, 2w"
    ),
) -> None:
    """Remove cached decoded images and features (all, or those unused for --older-than). Entries in use
    by a running process are kept; weights are never removed here."""
    from autotransfer.data.cache_index import clear, format_bytes, parse_age

    removal = clear(older_than=parse_age(older_than) if older_than else None)
    out.print(f"removed {len(removal.removed)} entr{'y' if len(removal.removed) == 1 else 'ies'}, "
              f"freed {format_bytes(removal.freed)}")  # fmt: skip
    if removal.kept_in_use:
        out.print(f"kept {len(removal.kept_in_use)} in use by a running process: "
                  + ", ".join(escape(e.dataset or e.name) for e in removal.kept_in_use[:5]))  # fmt: skip


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="run directory of `fit`, or a checkpoint directory"),
    fmt: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
    out_file: Path = typer.Option(..., "--out", help="file to write (a .json with classes goes next to it)"),
) -> None:
    """Export a pipeline, preprocessing included (uint8 images of any size in, logits out)."""
    _check_checkpoint_path(checkpoint)
    _prepare_output(out_file, "--out")
    from autotransfer.deploy.export import export as export_pipeline
    from autotransfer.deploy.pipeline import Pipeline

    try:
        path = export_pipeline(Pipeline.load(checkpoint, device="cpu"), fmt, out_file)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(error, out_file) from error
        raise _output_error(out_file, "--out", error) from error
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path}.json")


@app.command()
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
    from autotransfer.bench.suite import load_suite
    from autotransfer.machine import describe_machine

    check_bench_metric(metric)
    if out_dir is not None:
        _prepare_output(out_dir, "--out", directory=True)
    suite = load_suite(suite_name)
    only = None
    if contenders:
        only = tuple(c.strip() for c in contenders.split(",") if c.strip())
        unknown = [c for c in only if c not in suite.contenders]
        if unknown:
            raise AutoTransferError(
                f"--contenders: {', '.join(unknown)} not in suite {suite.name}.",
                fix=f"choose from {', '.join(suite.contenders)}.",
            )
    if seeds:
        try:
            chosen = tuple(int(seed) for seed in seeds.split(",") if seed.strip())
        except ValueError:
            chosen = ()
        if not chosen or any(seed not in suite.seeds for seed in chosen):
            raise AutoTransferError(
                f"--seeds {seeds!r}: expected some of suite {suite.name}'s seeds.",
                fix=f"choose from {', '.join(map(str, suite.seeds))}, comma-separated.",
            )
        suite = replace(suite, seeds=chosen)
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
        raise AutoTransferError("No cell of the suite has finished, so there is no leaderboard.")
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


def _configure_logging() -> None:
    # Our own messages at INFO; libraries (onnxscript's optimiser, Ray...) only when they warn.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, markup=False)],
    )
    logging.getLogger("autotransfer").setLevel(logging.INFO)


def main() -> None:
    _configure_logging()
    try:
        app()
    except AutoTransferError as error:
        err.print("[bold red]Error:[/]", escape(str(error)), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("Interrupted; nothing already cached was lost.")
        sys.exit(130)
    except Exception as error:
        if not is_disk_full(error):
            raise
        err.print("[bold red]Error:[/]", escape(str(disk_full_error(error, Path.cwd()))), highlight=False)
        sys.exit(2)


_reflow_help(app, zoo_app, cache_app)

if __name__ == "__main__":
    main()
