"""Peak memory of one fine-tuning trial against its batch size, and what the process keeps after it.

    python -m benchmarks.finetune_memory DATA [--size 224] [--backbone tf_efficientnet_lite1]
        [--batch-sizes 8,16,32,64] [--epochs 1]

Each batch size runs in a child process (a fresh allocator): the decode-cached dataset at ``--size``,
then ``finetune_all`` of the whole network (every group trained, the most memory a trial of the default
space asks for), with the allocator tuning `fit` applies (runtime.tune_allocator). Printed per batch
size: VmRSS before training, the peak (VmHWM), VmRSS after the trial's objects are freed, and after
glibc's ``malloc_trim(0)`` hands the freed heap back; the peak minus the first is what one batch's
forward and backward hold (the activations autograd saves), divided by the batch for a per-image figure.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
from pathlib import Path

GIB = 2**30


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def child(data: str, size: int, backbone_name: str, batch: int, epochs: int) -> None:
    from autotransfer.data.datasets import load_dataset
    from autotransfer.models.zoo import create_backbone
    from autotransfer.runtime import tune_allocator
    from autotransfer.transfer.finetune import FinetuneConfig, finetune

    tune_allocator()
    dataset = load_dataset(data, image_size=size, seed=0, show_progress=False)
    backbone = create_backbone(backbone_name, pretrained=True)
    before = _status()["VmRSS"]
    config = FinetuneConfig(strategy="finetune_all", tap="head", epochs=epochs, batch_size=batch, crop_scale=0.35)
    result = finetune(dataset, backbone, config, device="cpu")
    n_train = len(dataset.indices("train"))
    del result, backbone
    gc.collect()
    after = _status()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = _status()["VmRSS"]
    print(json.dumps({"batch": min(batch, n_train), "before": before, "peak": after["VmHWM"], "after": after["VmRSS"],
                      "trimmed": trimmed}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbone", default="tf_efficientnet_lite1")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.data, args.size, args.backbone, args.child, args.epochs)
        return
    from autotransfer.machine import describe_machine

    print(describe_machine())
    print(f"\nfinetune_all {args.backbone} at {args.size} px on {args.data}, {args.epochs} epoch(s); GiB\n")
    print("| batch (images) | VmRSS before | peak VmHWM | peak - before | per image | VmRSS after | after trim |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch in map(int, args.batch_sizes.split(",")):
        done = subprocess.run([sys.executable, "-m", "benchmarks.finetune_memory", args.data, "--size", str(args.size),
                               "--backbone", args.backbone, "--epochs", str(args.epochs), "--child", str(batch)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        row = json.loads(done.stdout.strip().splitlines()[-1])
        grown = row["peak"] - row["before"]
        print(f"| {row['batch']} | {row['before'] / GIB:.2f} | {row['peak'] / GIB:.2f} | {grown / GIB:.2f} | "
              f"{grown / row['batch'] / 2**20:.0f} MiB | {row['after'] / GIB:.2f} | {row['trimmed'] / GIB:.2f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
