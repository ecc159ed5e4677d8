"""`autotransfer inspect`, `rank` and `profile`: what a dataset holds and how far it is from ImageNet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from autotransfer.cli.common import DEFAULTS, check_weights_path, out, output_error, prepare_output
from autotransfer.data.image_size import check_image_size
from autotransfer.models.backbone_names import check_backbone_name

OFFLINE_BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")


def inspect(
    data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
    size: int = typer.Option(128, help="working resolution (pixels) of the decode cache"),
    val_fraction: float = typer.Option(DEFAULTS["val_fraction"], help="share of each class held out for validation"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Index and decode a dataset once (cached), and summarise classes, splits and skipped files."""
    check_image_size(size, option="size")  # before the data layer (numpy, PIL) is imported
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
    # The table is as narrow as its columns: the folder, a long path, goes on its own line above it.
    out.print(f"{escape(str(dataset.root))} ({dataset.layout})", soft_wrap=True, highlight=False)
    table = Table(title=f"{len(dataset)} images, {len(dataset.classes)} classes")
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


def rank(
    data: Path = typer.Argument(..., help="ImageFolder, split folders, or CSV of path,label"),
    backbones: str = typer.Option(",".join(OFFLINE_BACKBONES), help="comma-separated backbone names"),
    size: int = typer.Option(96, help="input resolution (pixels)"),
    probe: bool = typer.Option(True, help="also train a linear probe per candidate (slower)"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score every (backbone, tap) with zero-cost proxies and linear probes: the engine's cheap stage."""
    check_image_size(size, option="size")  # before torch and timm are imported
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    for name in names:
        check_backbone_name(name, where="--backbones")
    from autotransfer.data.datasets import load_dataset
    from autotransfer.report.terminal import frame_table
    from autotransfer.transfer.ranking import RankingConfig, proxy_agreement, rank_candidates

    dataset = load_dataset(data, image_size=size, seed=seed, show_progress=not as_json)
    config = RankingConfig(probe=probe, seed=seed)
    table = rank_candidates(dataset, names, config, show_progress=not as_json)
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
    if size is not None:
        check_image_size(size, option="size")  # these three before torch and timm are imported
    check_weights_path(weights)
    if out_file is not None:
        prepare_output(out_file, "--out")
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
            raise output_error(out_file, "--out", error) from error
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        render_profile(out, document)
