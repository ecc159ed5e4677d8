"""Does progressive resizing pay here? The recipe's first trial (LP-FT, crops + flips) at the full size
for E epochs, against E/2 epochs at a smaller size followed by E/2 at the full size from those weights
(fastai's progressive resizing: fine-tune small, then fine-tune again at the larger size). Prints
seconds and validation accuracy of each, and the machine.

    python -m benchmarks.progressive DATA [--size 128] [--small 96] [--epochs 4]
"""

from __future__ import annotations

import argparse
import time

from autotransfer.data.datasets import load_dataset
from autotransfer.machine import describe_machine
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import tune_allocator
from autotransfer.search.trials import CROP_SCALE
from autotransfer.transfer.finetune import FinetuneConfig, finetune

BACKBONE = "mobilenetv2_100"


def _config(epochs: int) -> FinetuneConfig:
    return FinetuneConfig(strategy="lp_ft", freeze_groups=1, head_lr=1e-3, backbone_lr_ratio=0.1, layer_decay=0.7,
                          epochs=epochs, warmup_epochs=1, batch_size=32, flip=True, crop_scale=CROP_SCALE,
                          patience=epochs, bf16=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--small", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    tune_allocator()
    full = load_dataset(args.data, image_size=args.size, show_progress=False)
    small = load_dataset(args.data, image_size=args.small, show_progress=False)
    rows = []
    tic = time.perf_counter()
    plain = finetune(full, create_backbone(BACKBONE), _config(args.epochs))
    rows.append((f"{args.epochs} epochs at {args.size} px", time.perf_counter() - tic, plain.best_val_accuracy))
    tic = time.perf_counter()
    backbone = create_backbone(BACKBONE)
    half = max(1, args.epochs // 2)
    finetune(small, backbone, _config(half))  # trains backbone.model in place
    grown = finetune(full, backbone, _config(args.epochs - half))
    rows.append(
        (f"{half} at {args.small} px, then {args.epochs - half} at {args.size} px", time.perf_counter() - tic,
         grown.best_val_accuracy)
    )  # fmt: skip
    print(describe_machine())
    print(f"\n{BACKBONE}, LP-FT with crops + flips, {len(full.indices('train'))} training images, {args.data}\n")
    print("| schedule | seconds | val accuracy |\n|---|---|---|")
    for name, seconds, accuracy in rows:
        print(f"| {name} | {seconds:.0f} | {accuracy:.3f} |")


if __name__ == "__main__":
    main()
