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

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from autotransfer import __version__
from autotransfer.errors import AutoTransferError
from autotransfer.files import disk_full_error, is_disk_full
from autotransfer.options import DEFAULTS as RUN_DEFAULTS

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
    from autotransfer.models.zoo import describe_known, known_backbones

    rows = [describe_known(name) for name in known_backbones()]
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
    out_dir: Path | None = typer.Option(None, "--out", help="run directory (default runs/<timestamp>)"),
    resume: bool = typer.Option(
        False, "--resume/--no-resume", help="continue the latest run in runs/ of this data (with no --out)"
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no live progress, only the summary"),
) -> None:
    """Find the best way to transfer an ImageNet network to DATA, within the time budget."""
    start = time.monotonic()
    if not data.expanduser().exists():  # before the engine's imports: a typo is answered at once
        raise AutoTransferError(
            f"The dataset path does not exist: {data}",
            where=str(data),
            fix="pass an ImageFolder, split folders or a CSV.",
        )
    from autotransfer.budget import format_duration
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
    _print_fit_summary(result, settings.time_budget)


def _print_fit_summary(result, budget: float) -> None:
    """Where everything is first (so that it is seen whatever follows), then the chosen pipeline and
    the leaderboard's top rows of trials that ran."""
    from rich import box

    from autotransfer.budget import format_duration
    from autotransfer.report.outputs import trial_counts
    from autotransfer.report.terminal import cell_text, is_missing

    run_dir = result.run_dir
    metrics = result.pipeline.spec.get("metrics", {})
    counts = trial_counts(result.leaderboard)
    out.print(
        f"[bold green]Done[/] in {format_duration(result.seconds)} of the {format_duration(budget)} budget "
        f"({counts['text']}): {escape(result.pipeline.describe())}"
    )
    _print_scores(metrics)
    _print_search_choices(result.profile, result.records)
    from autotransfer.cpu_threads import load_note

    if load_note(result.profile.get("machine_load")):
        out.print(f"[yellow]note:[/] {escape(load_note(result.profile['machine_load']))}")
    out.print(
        f"pipeline: {escape(str(run_dir / 'pipeline'))}\nreport:   {escape(str(run_dir / 'report.html'))}\n"
        f"predict:  autotransfer predict {escape(str(run_dir))} IMAGES..."
    )
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
    out.print(table)
    skipped = result.profile.get("skipped", [])
    if skipped:
        out.print(
            f"[yellow]{len(skipped)} file(s) skipped[/] (each with its reason in "
            f"{escape(str(run_dir / 'skipped.csv'))}): "
            + escape(", ".join(f"{Path(s['path']).name} ({s['reason']})" for s in skipped[:5]))
            + (", ..." if len(skipped) > 5 else "")
        )


def _print_scores(metrics: dict) -> None:
    """The metric and why, the search score (val split or CV mean), the held-out and test figures."""
    from autotransfer.transfer.metrics import PROBABILITY_METRICS

    metric = metrics.get("metric", "accuracy")
    if metrics.get("metric_reason"):
        out.print(f"metric: {escape(metrics['metric_reason'])}")
    if "val_score" in metrics:  # what the search compared: on the val split, or a CV mean on small data
        cross_validated = metrics.get("val_score_from") == "cross-validation"
        how = "mean over cross-validation folds of train+val" if cross_validated else "validation split"
        refit = "" if metrics.get("refit_on_train_val", True) else "; not refit on train+val: the budget left no room"
        score = f"{metric} {metrics['val_score']:.4f}"
        if metric == "log_loss":  # searched as "higher is better" (metrics.py): say the loss itself
            score = f"log_loss {-metrics['val_score']:.4f} (lower is better; maximised as its negative)"
        out.print(f"search score: {score} ({how}){refit}")
    if metrics.get("selection"):
        out.print(f"choice: {escape(metrics['selection'])}")
    # the val split chose the configuration unless probes were chosen by cross-validation: then it is not held out
    chose_on_val = metrics.get("val_score_from") == "validation split"
    val_name = ("validation split (the one the search chose on: optimistic)" if chose_on_val
                else "held-out validation (the chosen configuration trained on train only)")  # fmt: skip
    for split, name in (("val", val_name), ("test", "test")):
        summary = metrics.get(split) if isinstance(metrics.get(split), dict) else {}
        if summary:
            out.print(
                f"{name}: accuracy {summary['accuracy']:.4f}, balanced accuracy {summary['balanced_accuracy']:.4f}, "
                f"macro F1 {summary['f1_macro']:.4f}"
                + "".join(f", {name} {summary[name]:.4f}" for name in PROBABILITY_METRICS if name in summary)
                + "; recall per class "
                + ", ".join(f"{escape(str(c))} {row['recall']:.2f}" for c, row in summary["per_class"].items())
            )
            chance = 1.0 / max(1, len(summary["per_class"]))  # balanced accuracy of a constant or random guess
            if summary["balanced_accuracy"] <= chance + 0.02:
                out.print(
                    f"[yellow]warning:[/] {split} balanced accuracy {summary['balanced_accuracy']:.4f} is at chance "
                    f"level (1/{len(summary['per_class'])} = {chance:.4f}): the pipeline does not tell these classes "
                    "apart. Check that each class folder holds its own images, or raise --time-budget."
                )


def _print_search_choices(profile: dict, records: list[dict]) -> None:
    """Both placements (a priori and measured by the probes) and what `auto` chose, with reasons, and which
    (backbone, size) pairs the budget let the probes reach (``records``: the search's, search/records.py)."""
    if profile.get("measured_skipped"):
        out.print(f"placement: not measured by the probes ({escape(profile['measured_skipped'])})")
    placement = profile.get("measured")
    if placement:
        verdict = "differs from" if placement.get("differs") else "agrees with"
        out.print(
            f"placement: a priori {placement.get('a_priori')}, measured by the probes {placement['quadrant']} "
            f"({verdict} the profile): {escape(placement.get('rationale', ''))}"
        )
    auto = profile.get("auto")
    if auto:
        from autotransfer.report.search_choices import describe_auto

        probed = [(r["backbone"], r["resolution"]) for r in records
                  if r.get("stage") == "probe" and r.get("status") == "complete"]  # fmt: skip
        out.print(f"auto: {escape(describe_auto(auto, probed))}")


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


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="run directory of `fit`, or a checkpoint directory"),
    inputs: list[Path] = typer.Argument(..., help="image files and/or directories"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per image on stdout"),
    csv_file: Path | None = typer.Option(None, "--csv", help="also write the predictions to this CSV"),
    top_k: int = typer.Option(1, "--top-k", min=1, help="how many classes to list per image"),
    size: str = typer.Option("native", help="native (training resize) | original | N (shorter side, px)"),
    reduce: str = typer.Option("mean", help="how the class-score map of a large image is reduced: mean|max"),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when present)"),
) -> None:
    """Classify images with a trained pipeline; unreadable files are reported and skipped.

    Exit status: 0 when at least one image was classified, 2 when none was (or the CSV could not
    be written; the predictions are printed first).
    """
    import numpy as np

    from autotransfer.deploy.pipeline import Pipeline
    from autotransfer.deploy.predict_inputs import non_image_files

    pipeline = Pipeline.load(checkpoint, device=device)
    results = pipeline.predictions([str(p) for p in inputs], size=size, reduce=reduce)
    rows = []
    for result in results:
        row: dict = {"path": result.name}
        if result.error:
            row["error"] = result.error
        else:
            order = np.argsort(-result.probabilities)[:top_k]
            row.update(
                label=str(pipeline.classes_[order[0]]), probability=round(float(result.probabilities[order[0]]), 6)
            )
            if top_k > 1:
                row["top_k"] = [
                    {"label": str(pipeline.classes_[i]), "probability": round(float(result.probabilities[i]), 6)}
                    for i in order
                ]
        rows.append(row)
    failed = [r for r in rows if "error" in r]
    classified = [r for r in rows if "error" not in r]
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        if classified:
            table = Table(title=f"{len(classified)} image(s) classified by {escape(pipeline.describe())}")
            for column in ("path", "label", "probability" if top_k == 1 else f"top {top_k}"):
                table.add_column(column, overflow="fold")
            for row in classified:
                detail = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in row.get("top_k", []))
                table.add_row(escape(row["path"]), escape(row["label"]), detail or f"{row['probability']:.3f}")
            out.print(table)
        for row in failed:
            err.print(f"[yellow]skipped[/] {escape(row['path'])}: {escape(row['error'])}", highlight=False)
    if csv_file is not None:
        _write_predictions_csv(csv_file, rows)
    if not classified:
        raise AutoTransferError(
            f"No image was classified: {len(failed)} input(s), none readable as an image.",
            where=", ".join(str(p) for p in inputs[:3]) + (", ..." if len(inputs) > 3 else ""),
            fix="give image files (JPEG, PNG, ...) or folders holding them.",
        )
    if failed:
        err.print(f"{len(failed)} input(s) could not be read and were skipped.")
    if size != "native" and classified:
        err.print(
            f"note: --size {escape(str(size))} classifies each image at its own aspect ratio and scale, not as in "
            f"training ({pipeline.spec['preprocess']['size']} px, {pipeline.spec['preprocess']['resize_mode']}): "
            "answers can differ from the default --size native's; check them on labelled images first.",
            highlight=False,
        )
    ignored = non_image_files(inputs)
    if ignored:
        names = ", ".join(str(p) for p in ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        err.print(f"note: {len(ignored)} file(s) in the folders given are not images by name and were not read: "
                  f"{escape(names)}", highlight=False)  # fmt: skip


def _write_predictions_csv(path: Path, rows: list[dict]) -> None:
    import csv

    from autotransfer.files import replacing

    try:
        with replacing(path) as partial, open(partial, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "label", "probability", "error"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(error, path) from error
        note = " The predictions are printed above; nothing else was lost."
        raise _output_error(path, "--csv", error, note) from error


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="run directory of `fit`, or a checkpoint directory"),
    fmt: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
    out_file: Path = typer.Option(..., "--out", help="file to write (a .json with classes goes next to it)"),
) -> None:
    """Export a pipeline, preprocessing included (uint8 images of any size in, logits out)."""
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
    suite_name: str = typer.Option(
        ..., "--suite", help="smoke, cpu-small, cpu-peers, real-cpu (autotransfer/bench/suites) or a YAML file"
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="results folder (default runs/bench-<suite>)"),
    contenders: str | None = typer.Option(None, help="comma-separated subset of the suite's contenders"),
    seeds: str | None = typer.Option(None, help="comma-separated subset of the suite's seeds, e.g. 0"),
    metric: str = typer.Option(
        "accuracy",
        help="what the leaderboard ranks by: accuracy | balanced_accuracy | f1_macro (every cell records all three)",
    ),
) -> None:
    """Run a benchmark suite: fit against the fixed strategies and baselines; resumable. The leaderboard
    covers the contenders and seeds asked for: with all of them finished, it is only written again."""
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
    out.print(
        f"{len(frame)} cells ({failed} failed"
        + (f", {missing} not installed: make peers" if missing else "")
        + f"): {escape(str(out_dir / 'leaderboard.md'))}, leaderboard.csv, report.html"
    )


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


if __name__ == "__main__":
    main()
