"""The ``autotransfer`` command. Every user mistake ends in one clear message, never a traceback."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from .errors import AutoTransferError
from .files import disk_full_error, is_disk_full

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Find the best way to transfer an ImageNet-pretrained network to your images.")
zoo_app = typer.Typer(no_args_is_help=True, help="The backbones: list, describe, fetch and verify weights.")
app.add_typer(zoo_app, name="zoo")

# Piped output (CI logs, `| less`) gets a width that fits the tables instead of rich's default 80.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

OFFLINE_BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
MIN_TOP1 = 15  # of 20 foolbox ImageNet images; correctly mapped weights get 17-18


@zoo_app.command("list")
def zoo_list(as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table")) -> None:
    """One row per known backbone: source, offline weights, native resolution, taps, depth groups."""
    from .zoo import describe_known, known_backbones

    rows = [describe_known(name) for name in known_backbones()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Known backbones (any other timm name works too)")
    table.add_column("name", no_wrap=True)
    for column in ("source", "weights offline", "native px", "taps", "depth groups"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["source"], "[green]yes[/]" if row["weights_available"] else "no",
                      str(row["native_resolution"]), str(len(row["taps"])), str(row["depth_groups"]))
    out.print(table)
    if not all(r["weights_available"] for r in rows if r["source"] == "offline zoo"):
        out.print("Run [bold]autotransfer zoo fetch[/] to install the offline zoo's ImageNet weights.")


@zoo_app.command("show")
def zoo_show(name: str, weights: Optional[Path] = typer.Option(None, help="weights file or directory"),
             pretrained: bool = typer.Option(True, help="resolve pretrained weights (off: architecture only)"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Taps, depth groups, preprocessing and weight source of one backbone."""
    from .zoo import create_backbone

    backbone = create_backbone(name, pretrained=pretrained, weights=weights,
                               device="cpu" if pretrained else "meta")
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
def zoo_fetch(names: Optional[list[str]] = typer.Argument(None, help="default: the whole offline zoo")) -> None:
    """Download, verify (SHA-256) and convert the offline zoo's ImageNet weights into the cache."""
    from .weights import OFFLINE_ZOO
    from .zoo import create_backbone

    for name in names or list(OFFLINE_ZOO):
        if name not in OFFLINE_ZOO:
            raise AutoTransferError(f"{name} is not in the offline zoo.", fix=f"choose from {', '.join(OFFLINE_ZOO)}.")
        backbone = create_backbone(name, pretrained=True)
        out.print(f"{name}: {backbone.weights.describe()}")


@zoo_app.command("verify")
def zoo_verify(names: Optional[list[str]] = typer.Argument(None, help="default: the whole offline zoo"),
               weights: Optional[Path] = typer.Option(None, help="weights file or directory to check")) -> None:
    """ImageNet top-1 on 20 real ImageNet images: proves the weights are loaded and mapped correctly."""
    from .imagenet_check import imagenet_top1
    from .weights import OFFLINE_ZOO

    failed = []
    for name in names or list(OFFLINE_ZOO):
        result = imagenet_top1(name, weights=weights)
        ok = result.correct >= MIN_TOP1
        failed += [] if ok else [name]
        out.print(f"{name}: top-1 {result.correct}/{result.total} " + ("[green]ok[/]" if ok else "[red]FAILED[/]")
                  + f"  (weights: {result.weights.split(' (')[0]})")
    if failed:
        raise AutoTransferError(f"Weights of {', '.join(failed)} score below {MIN_TOP1}/20 on real ImageNet images.",
                                fix="the file is not ImageNet-1k weights for this architecture, or is mapped wrongly.")


@app.command()
def inspect(data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
            size: int = typer.Option(128, help="working resolution (pixels) of the decode cache"),
            val_fraction: float = typer.Option(0.2, help="share of each class held out for validation"),
            seed: int = typer.Option(0), as_json: bool = typer.Option(False, "--json")) -> None:
    """Index and decode a dataset once (cached), and summarise classes, splits and skipped files."""
    from .dataset import load_dataset

    start = time.perf_counter()
    dataset = load_dataset(data, image_size=size, val_fraction=val_fraction, seed=seed, show_progress=not as_json)
    seconds = time.perf_counter() - start
    summary = {
        "root": str(dataset.root), "layout": dataset.layout, "n_images": len(dataset), "n_classes": len(dataset.classes),
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
    out.print(f"decoded at {size}px in {seconds:.2f}s ({'cache hit' if dataset.cache_hit else 'decoded and cached'}); "
              f"{len(dataset.skipped)} file(s) skipped")


@app.command()
def rank(data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
         backbones: str = typer.Option(",".join(OFFLINE_BACKBONES), help="comma-separated backbone names"),
         size: int = typer.Option(96, help="input resolution (pixels)"),
         probe: bool = typer.Option(True, help="also train a linear probe per candidate (slower)"),
         seed: int = typer.Option(0), as_json: bool = typer.Option(False, "--json")) -> None:
    """Score every (backbone, tap) with zero-cost proxies and linear probes: the engine's cheap stage."""
    from .dataset import load_dataset
    from .ranking import RankingConfig, proxy_agreement, rank_candidates

    dataset = load_dataset(data, image_size=size, seed=seed, show_progress=not as_json)
    config = RankingConfig(probe=probe, seed=seed)
    table = rank_candidates(dataset, [b.strip() for b in backbones.split(",") if b.strip()], config,
                            show_progress=not as_json)
    agreement = proxy_agreement(table) if probe else None
    if as_json:
        print(json.dumps({"candidates": table.to_dict("records"),
                          "agreement": None if agreement is None else agreement.to_dict("records")}, indent=2))
        return
    columns = ["backbone", "tap", "channels", "logme", "knn", "hscore"] + (["probe_accuracy", "probe_head"] if probe else [])
    out.print(_frame_table(table[columns], f"{len(table)} candidates on {data} at {size}px (best LogME first)"))
    if agreement is not None:
        out.print(_frame_table(agreement, "rank agreement of each zero-cost score with the probe accuracy"))


@app.command()
def profile(data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
            backbone: str = typer.Option("mobilenetv2_100", help="a BatchNorm backbone to measure with"),
            weights: Optional[Path] = typer.Option(None, help="weights file or directory for the backbone"),
            size: int = typer.Option(128, help="resolution the images are measured at (pixels)"),
            sample: int = typer.Option(256, help="images sampled (seeded) for the per-layer statistics"),
            seed: int = typer.Option(0), as_json: bool = typer.Option(False, "--json"),
            out_file: Optional[Path] = typer.Option(None, "--out", help="also write the JSON to this file")) -> None:
    """Size, quality, per-layer distance to ImageNet, and the strategy the engine will start from."""
    from .profile import profile_dataset
    from .report_text import render_profile

    result = profile_dataset(data, backbone=backbone, weights=weights, image_size=size, sample_size=sample,
                             seed=seed, show_progress=not as_json)
    document = result.to_json()
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(document, indent=2))
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        render_profile(out, document)


@app.command()
def fit(data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
        time_budget: str = typer.Option("10m", "--time-budget", help="hard wall-clock bound, e.g. 90s, 10m, 2h"),
        search_space: str = typer.Option("default", "--search-space", help="fast | default | thorough | a YAML file"),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<timestamp>)"),
        resume: bool = typer.Option(False, "--resume", help="continue the latest run in runs/ of this data"),
        storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by workers (default: SQLite "
                                              "in the run directory)"),
        backend: str = typer.Option("optuna", help="optuna (this process) | ray (Ray Tune trials)"),
        ray_address: Optional[str] = typer.Option(None, help="existing Ray cluster (default: a local Ray)"),
        cpus_per_trial: float = typer.Option(1.0, help="Ray: CPUs per trial"),
        gpus_per_trial: float = typer.Option(0.0, help="Ray: GPUs per trial (fractions allowed)"),
        profile_backbone: str = typer.Option("mobilenetv2_100", help="the BatchNorm backbone the profiler measures with"),
        seed: int = typer.Option(0), device: Optional[str] = typer.Option(None, help="cpu or cuda")) -> None:
    """Find the best way to transfer an ImageNet network to DATA, within the time budget."""
    start = time.monotonic()
    from .api import AutoTransfer
    from .budget import format_duration
    from .search import Search

    if out_dir is None and resume:
        out_dir = _latest_run(data)
    estimator = AutoTransfer(time_budget=time_budget, search_space=search_space, backend=backend, out=out_dir,
                             storage=storage, seed=seed, device=device, ray_address=ray_address,
                             cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                             profile_backbone=profile_backbone)
    settings = estimator.settings(start)
    err.print(f"fit {escape(str(data))}: search space [bold]{settings.space.name}[/], budget "
              f"{format_duration(settings.time_budget)}, run directory {escape(str(settings.out))}")
    try:
        result = Search(data, settings).run()
    except KeyboardInterrupt:
        err.print(f"Interrupted. Finished trials are saved in {settings.out}; run the same command with "
                  f"--out {settings.out} (or --resume) to continue.")
        sys.exit(130)
    metrics = result.pipeline.spec["metrics"]
    out.print(f"[bold green]Done[/] in {format_duration(result.seconds)} "
              f"({len(result.leaderboard)} trials): {escape(result.pipeline.describe())}")
    out.print(f"validation accuracy {metrics['val_accuracy']:.4f}"
              + (f", test accuracy {metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else "")
              + ("" if metrics.get("refit_on_train_val") else " (not refit: the budget left no room)"))
    top = result.leaderboard.head(8)[["stage", "strategy", "backbone", "resolution", "tap", "val_accuracy", "seconds",
                                      "status"]]
    out.print(_frame_table(top, "leaderboard (top 8; all in leaderboard.csv)"))
    skipped = result.profile.get("skipped", [])
    if skipped:
        out.print(f"[yellow]{len(skipped)} file(s) skipped[/] (each with its reason in "
                  f"{escape(str(result.run_dir / 'skipped.csv'))}): "
                  + escape(", ".join(f"{Path(s['path']).name} ({s['reason']})" for s in skipped[:5]))
                  + (", ..." if len(skipped) > 5 else ""))
    out.print(f"pipeline: {escape(str(result.run_dir / 'pipeline'))}\nreport:   "
              f"{escape(str(result.run_dir / 'report.html'))}\npredict:  autotransfer predict "
              f"{escape(str(result.run_dir))} IMAGES...")


def _latest_run(data: Path) -> Path:
    runs = sorted((p.parent for p in Path("runs").glob("*/run.json")
                   if json.loads(p.read_text()).get("data") == str(data.resolve())), key=lambda p: p.name)
    if not runs:
        raise AutoTransferError(f"--resume: no earlier run of {data} in runs/.", fix="start one without --resume.")
    return runs[-1]


@app.command()
def predict(checkpoint: Path = typer.Argument(..., help="run directory of `fit`, or a checkpoint directory"),
            inputs: list[Path] = typer.Argument(..., help="image files and/or directories"),
            as_json: bool = typer.Option(False, "--json", help="one JSON object per image on stdout"),
            csv_file: Optional[Path] = typer.Option(None, "--csv", help="also write the predictions to this CSV"),
            top_k: int = typer.Option(1, "--top-k", min=1, help="how many classes to list per image"),
            size: str = typer.Option("native", help="native (training resize) | original | N (shorter side, px)"),
            reduce: str = typer.Option("mean", help="how the class-score map of a large image is reduced: mean|max"),
            device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when present)")) -> None:
    """Classify images with a trained pipeline; unreadable files are reported and skipped."""
    import csv

    from .pipeline import Pipeline

    pipeline = Pipeline.load(checkpoint, device=device)
    results = pipeline.predictions([str(p) for p in inputs], size=size,
                                   reduce=reduce)
    rows = []
    for result in results:
        row: dict = {"path": result.name}
        if result.error:
            row["error"] = result.error
        else:
            order = np.argsort(-result.probabilities)[:top_k]
            row.update(label=str(pipeline.classes_[order[0]]), probability=round(float(result.probabilities[order[0]]), 6))
            if top_k > 1:
                row["top_k"] = [{"label": str(pipeline.classes_[i]), "probability": round(float(result.probabilities[i]), 6)}
                                for i in order]
        rows.append(row)
    if csv_file is not None:
        csv_file.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_file, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "label", "probability", "error"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    failed = [r for r in rows if "error" in r]
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        table = Table(title=f"{len(rows) - len(failed)} image(s) classified by {escape(pipeline.describe())}")
        for column in ("path", "label", "probability"):
            table.add_column(column, overflow="fold")
        for row in rows:
            label = escape(row.get("label", "")) if "error" not in row else f"[red]{escape(row['error'])}[/]"
            detail = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in row.get("top_k", [])) or (
                f"{row['probability']:.3f}" if "probability" in row else "")
            table.add_row(escape(row["path"]), label, escape(detail))
        out.print(table)
    if failed:
        err.print(f"{len(failed)} input(s) could not be read and were skipped.")


@app.command()
def export(checkpoint: Path = typer.Argument(..., help="run directory of `fit`, or a checkpoint directory"),
           fmt: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
           out_file: Path = typer.Option(..., "--out", help="file to write (a .json with classes goes next to it)")) -> None:
    """Export a pipeline, preprocessing included (uint8 images of any size in, logits out)."""
    from .export import export as export_pipeline
    from .pipeline import Pipeline

    path = export_pipeline(Pipeline.load(checkpoint, device="cpu"), fmt, out_file)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.name}.json")


@app.command()
def bench(suite_name: str = typer.Option(..., "--suite", help="smoke, cpu-small (benchmarks/suites) or a YAML file"),
          out_dir: Optional[Path] = typer.Option(None, "--out", help="results folder (default runs/bench-<suite>)"),
          contenders: Optional[str] = typer.Option(None, help="comma-separated subset of the suite's contenders")) -> None:
    """Run a benchmark suite: fit against the fixed strategies and baselines; resumable."""
    from .bench.leaderboard import write_leaderboard
    from .bench.runner import run_suite
    from .bench.suite import load_suite
    from .machine import describe_machine

    suite = load_suite(suite_name)
    only = None
    if contenders:
        only = tuple(c.strip() for c in contenders.split(",") if c.strip())
        unknown = [c for c in only if c not in suite.contenders]
        if unknown:
            raise AutoTransferError(f"--contenders: {', '.join(unknown)} not in suite {suite.name}.",
                                    fix=f"choose from {', '.join(suite.contenders)}.")
    out_dir = out_dir or Path("runs") / f"bench-{suite.name}"
    try:
        records = run_suite(suite, out_dir, only)
    except KeyboardInterrupt:
        err.print(f"Interrupted. Finished cells are saved in {escape(str(out_dir))}; run the same command to go on.")
        sys.exit(130)
    if not records:
        raise AutoTransferError("No cell of the suite has finished, so there is no leaderboard.")
    frame = write_leaderboard(records, suite, out_dir, describe_machine())
    out.print((out_dir / "leaderboard.md").read_text())
    failed, missing = int((frame["status"] == "failed").sum()), int((frame["status"] == "not installed").sum())
    out.print(f"{len(frame)} cells ({failed} failed" + (f", {missing} not installed: make peers" if missing else "") +
              f"): {escape(str(out_dir / 'leaderboard.md'))}, leaderboard.csv, report.html")


def _frame_table(frame, title: str) -> Table:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), no_wrap=column in ("backbone", "tap"))
    for row in frame.itertuples(index=False):
        table.add_row(*("" if v is None or v != v or v is pd.NA else f"{v:.3f}" if isinstance(v, float) else str(v)
                        for v in row))
    return table


def _configure_logging() -> None:
    # Our own messages at INFO; libraries (onnxscript's optimiser, Ray...) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=err, show_path=False, markup=False)])
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
