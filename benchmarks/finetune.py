"""The fine-tuning engine, measured on a real offline dataset with an offline backbone.

    python -m benchmarks.finetune prefix       # epoch time, cached frozen prefix vs full forward
    python -m benchmarks.finetune precision    # bf16 + channels_last vs fp32: speed and accuracy
    python -m benchmarks.finetune strategies   # head-only, LP-FT, top half, full fine-tuning

Animal-MNIST (autotransfer/offline_datasets.py), mobilenetv2_100 with its offline ImageNet weights.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from autotransfer.data.datasets import load_dataset
from autotransfer.data.offline_datasets import build
from autotransfer.machine import describe_machine
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import tune_allocator
from autotransfer.transfer.finetune import FinetuneConfig, finetune
from autotransfer.transfer.prefix_cache import prefix_units, skipped_prefix
from benchmarks.features import WORK

BACKBONE = "mobilenetv2_100"


def _flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def frozen_flop_share(backbone, size: int) -> dict[int, float]:
    """Share of the forward FLOPs inside the frozen prefix, for every freeze depth."""
    x = torch.zeros(1, 3, size, size)
    total = _flops(backbone.model, x)
    shares = {}
    for k in range(1, len(backbone.depth_groups) + 1):
        units = prefix_units(backbone, k, "head")
        last = backbone.model.get_submodule(units[-1]) if units else None
        if last is None:
            continue
        captured = []
        handle = last.register_forward_hook(lambda _m, _i, o: captured.append(o))
        with torch.no_grad():
            backbone.model(x)
        handle.remove()
        with skipped_prefix(backbone.model, units):
            rest = _flops(backbone.model, captured[0])
        shares[k] = 1 - rest / total
    return shares


def _data(per_class: int, size: int):
    return load_dataset(
        build("animal-mnist", WORK / "datasets", per_class=per_class), image_size=size, show_progress=False
    )


def prefix(args: argparse.Namespace) -> None:
    print(describe_machine())
    print(
        f"{BACKBONE}, Animal-MNIST {args.per_class}/class, fp32, batch 64, {args.epochs} epochs; "
        "epoch time = mean over epochs (the one-off prefix pass is reported apart)"
    )
    print(
        "| px | freeze groups | frozen FLOPs | full forward: s/epoch | cached prefix: s/epoch | prefix pass (s) "
        "| speed-up per epoch | speed-up incl. prefix pass | same losses |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        data = _data(args.per_class, size)
        shares = frozen_flop_share(create_backbone(BACKBONE), size)
        for target in (0.5, 0.9):
            k = min(shares, key=lambda g: abs(shares[g] - target))
            runs = {}
            for cache in (False, True):
                config = FinetuneConfig(
                    freeze_groups=k,
                    epochs=args.epochs,
                    bf16=False,
                    cache_prefix=cache,
                    warmup_epochs=0,
                    patience=args.epochs,
                )
                runs[cache] = finetune(data, create_backbone(BACKBONE), config)
            naive = np.mean([h.seconds for h in runs[False].history])
            cached = np.mean([h.seconds for h in runs[True].history])
            setup = runs[True].seconds - sum(h.seconds for h in runs[True].history)
            setup_naive = runs[False].seconds - sum(h.seconds for h in runs[False].history)
            same = np.allclose(
                [h.train_loss for h in runs[True].history], [h.train_loss for h in runs[False].history], rtol=1e-3
            )
            print(
                f"| {size} | {k} | {shares[k]:.0%} | {naive:.2f} | {cached:.2f} | {setup - setup_naive:.2f} | "
                f"{naive / cached:.1f}x | {runs[False].seconds / runs[True].seconds:.1f}x | {same} |"
            )


def precision(args: argparse.Namespace) -> None:
    print(describe_machine())
    data = _data(args.per_class, args.sizes[0])
    print(
        f"{BACKBONE}, full fine-tuning, Animal-MNIST {args.per_class}/class at {args.sizes[0]}px, "
        f"{args.epochs} epochs, no cached prefix"
    )
    print("| precision | s/epoch | best val accuracy |\n|---|---|---|")
    rows = {}
    for bf16 in (False, True):
        config = FinetuneConfig(
            freeze_groups=0,
            epochs=args.epochs,
            bf16=bf16,
            cache_prefix=False,
            patience=args.epochs,
            head_lr=3e-3,
            backbone_lr_ratio=0.1,
        )
        result = finetune(data, create_backbone(BACKBONE), config)
        rows[bf16] = np.mean([h.seconds for h in result.history])
        print(
            f"| {'bf16 + channels_last' if bf16 else 'fp32 + channels_last'} | {rows[bf16]:.2f} | "
            f"{result.best_val_accuracy:.3f} |"
        )
    print(f"\nbf16 training speed-up: {rows[False] / rows[True]:.2f}x")


def strategies(args: argparse.Namespace) -> None:
    print(describe_machine())
    data = _data(args.per_class, args.sizes[0])
    n = len(create_backbone(BACKBONE, pretrained=False, device="meta").depth_groups)
    plans = {
        "head only (CNN codes + linear)": FinetuneConfig(strategy="linear_probe", head_lr=1e-2),
        "LP-FT (probe, then top half)": FinetuneConfig(strategy="lp_ft", freeze_groups=n // 2, backbone_lr_ratio=0.1),
        "fine-tune top half": FinetuneConfig(freeze_groups=n // 2, head_lr=3e-3, backbone_lr_ratio=0.1),
        "fine-tune all, small backbone LR": FinetuneConfig(freeze_groups=0, head_lr=3e-3, backbone_lr_ratio=0.1),
        "fine-tune all, one large LR": FinetuneConfig(freeze_groups=0, head_lr=3e-3, backbone_lr_ratio=1.0),
    }
    print(
        f"{BACKBONE}, Animal-MNIST {args.per_class}/class (80/20 train/val) at {args.sizes[0]}px, "
        f"up to {args.epochs} epochs, default precision, early stopping patience 3"
    )
    print("| strategy | best val accuracy | epoch | cached prefix | seconds |\n|---|---|---|---|---|")
    for name, config in plans.items():
        config = FinetuneConfig(**{**config.__dict__, "epochs": args.epochs})
        result = finetune(data, create_backbone(BACKBONE), config)
        print(
            f"| {name} | {result.best_val_accuracy:.3f} | {result.best_epoch} | {result.used_cached_prefix} | "
            f"{result.seconds:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["prefix", "precision", "strategies"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[96, 128])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    tune_allocator()
    {"prefix": prefix, "precision": precision, "strategies": strategies}[args.part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
