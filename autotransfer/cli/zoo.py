"""`autotransfer zoo`: list, describe, fetch and verify the backbones' weights."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from autotransfer.cli.common import HELP_OPTIONS, check_weights_path, out
from autotransfer.errors import AutoTransferError

MIN_TOP1 = 15  # of 20 foolbox ImageNet images; correctly mapped weights get 17-18

zoo_app = typer.Typer(
    no_args_is_help=True, context_settings=HELP_OPTIONS, help="The backbones: list, describe, fetch and verify weights."
)


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
    from autotransfer.models.backbone_names import check_backbone_name

    check_backbone_name(name, where=f"autotransfer zoo show {name}")  # these before torch and timm are imported
    check_weights_path(weights)
    if pretrained:
        from autotransfer.models.weights import check_weights_reachable

        check_weights_reachable(name, weights)
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
            raise AutoTransferError(
                f"{name} is not in the offline zoo.", where=f"zoo fetch {name}",
                fix=f"choose from {', '.join(OFFLINE_ZOO)}.",
            )  # fmt: skip
        backbone = create_backbone(name, pretrained=True)
        out.print(f"{name}: {backbone.weights.describe()}")


@zoo_app.command("verify")
def zoo_verify(
    names: list[str] | None = typer.Argument(None, help="default: the whole offline zoo"),
    weights: Path | None = typer.Option(None, help="weights file or directory to check"),
) -> None:
    """ImageNet top-1 on 20 real ImageNet images: proves the weights are loaded and mapped correctly."""
    check_weights_path(weights)  # before torch and timm are imported
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
            where=str(weights) if weights else "the offline zoo's weights in the cache (`autotransfer zoo list`)",
            fix="the file is not ImageNet-1k weights for this architecture, or is mapped wrongly.",
        )
