"""`predict` at scale: peak memory and images/s on many large photos, next to the bare decode rate.

    python -m benchmarks.scale_predict generate --out /work/data-stream/photos --count 1000
    python -m benchmarks.scale_predict checkpoint --out /work/runs-stream/mobilenetv2-224
    python -m benchmarks.scale_predict run --photos /work/data-stream/photos --run /work/runs-stream/mobilenetv2-224

``generate`` writes random smooth colour images (4000x3000, JPEG quality 90); ``checkpoint`` saves a
pipeline of the offline mobilenetv2_100 at 224 px with an untrained 10-class head (its speed is what
is measured, not its answers). ``run`` times, in
child processes measured by ``/usr/bin/time -v`` (peak RSS): the bare decode of the first 100 files at
full resolution (PIL, one at a time, nothing kept), their draft-mode decode (the scale predict asks
for), and ``autotransfer predict RUN PHOTOS --csv --json`` on the first 100 and on all of them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from autotransfer.machine import describe_machine

WIDTH, HEIGHT = 4000, 3000


def generate(out: Path, count: int, seed: int = 0) -> None:
    """Smooth random colour photos: a small random grid upsampled bicubically (JPEG compresses it like a photo)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = out / f"photo-{i:05d}.jpg"
        if path.exists():
            continue
        grid = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        Image.fromarray(grid).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC).save(path, quality=90)


def checkpoint(out: Path) -> None:
    import torch

    from autotransfer import Pipeline
    from autotransfer.data.images import ResizeRecipe
    from autotransfer.models.zoo import create_backbone
    from autotransfer.transfer.transfer_model import TransferModel

    torch.manual_seed(0)
    backbone = create_backbone("mobilenetv2_100")
    model = TransferModel(backbone, "head", 10).eval()
    classes = [f"class{i}" for i in range(10)]
    pipeline = Pipeline.from_model(
        backbone, model, classes=classes, recipe=ResizeRecipe(224), frozen_groups=0, head_type="linear",
        strategy="fixed", hyperparameters={}, metrics={},
    )  # fmt: skip
    print(pipeline.save(out))


def _decode_files(folder: Path, draft: int | None) -> None:
    """Child process: decode every file (full size, or JPEG draft near ``draft`` px), keep nothing."""
    files = sorted(folder.glob("*.jpg"))
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (2 * draft, 2 * draft))
            image.convert("RGB").load()
    print(f"RESULT {len(files)} {time.perf_counter() - start:.3f}")


def _measured(command: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS GiB, stdout) of ``command`` under /usr/bin/time -v."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return seconds, peak_kb / 2**20, done.stdout


def run(photos: Path, run_dir: Path, first: int) -> None:
    files = sorted(photos.glob("*.jpg"))
    subset = photos.parent / f"{photos.name}-first{first}"
    subset.mkdir(exist_ok=True)
    for path in files[:first]:
        link = subset / path.name
        if not link.exists():
            link.symlink_to(path)
    rows = []
    for label, draft in (
        ("bare decode, full resolution (PIL, 1 thread)", None),
        ("bare decode, JPEG draft to >= 448 px (PIL, 1 thread)", 224),
    ):
        _, peak, stdout = _measured([sys.executable, "-m", "benchmarks.scale_predict", "decode", str(subset)]
                                    + (["--draft", str(draft)] if draft else []))  # fmt: skip
        n, seconds = stdout.split("RESULT ")[1].split()
        rows.append((label, int(n), float(seconds), peak))
    cli = [sys.executable, "-m", "autotransfer.cli", "predict", str(run_dir)]
    for folder in (subset, photos):
        n = len(list(folder.glob("*.jpg")))
        csv = Path(os.environ.get("TMPDIR", "/tmp")) / "scale_predict.csv"
        seconds, peak, _ = _measured([*cli, str(folder), "--csv", str(csv), "--json"])
        rows.append((f"`autotransfer predict --csv --json` ({n} photos, incl. start-up)", n, seconds, peak))
    print(f"# `python -m benchmarks.scale_predict run`\n\n{describe_machine()}\n")
    print(f"{len(files)} generated {WIDTH}x{HEIGHT} JPEGs (quality 90), pipeline {run_dir}\n")
    print("| what | images | seconds | images/s | peak RSS (GiB) |\n|---|---|---|---|---|")
    for label, n, seconds, peak in rows:
        print(f"| {label} | {n} | {seconds:.1f} | {n / seconds:.1f} | {peak:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--count", type=int, default=1000)
    decode = commands.add_parser("decode")
    decode.add_argument("folder", type=Path)
    decode.add_argument("--draft", type=int)
    commands.add_parser("checkpoint").add_argument("--out", type=Path, required=True)
    measure = commands.add_parser("run")
    measure.add_argument("--photos", type=Path, required=True)
    measure.add_argument("--run", type=Path, required=True, help="a run or checkpoint directory")
    measure.add_argument("--first", type=int, default=100)
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.out, args.count)
    elif args.command == "checkpoint":
        checkpoint(args.out)
    elif args.command == "decode":
        _decode_files(args.folder, args.draft)
    else:
        run(args.photos, args.run, args.first)


if __name__ == "__main__":
    main()
