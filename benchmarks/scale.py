"""Memory and time against the number of images (issue 27), each measurement in its own process.

    python -m benchmarks.scale trial DIR [DIR ...] [--code OLD_PACKAGE_PARENT] [--ram-cap-gib 3]
        peak RSS of one fine-tuning trial with the cached frozen prefix (tf_efficientnet_lite0,
        finetune_top with 2 frozen groups, 128 px, no augmentation, 1 epoch; ``--steps K``: the
        prefix cache built whole, then K training and K validation batches of 64)
    python -m benchmarks.scale stages DIR [DIR ...]
        seconds of each O(N) stage (index, fingerprint, decode, feature extraction, probe) and the
        extraction's peak RSS
    python -m benchmarks.scale loader DIR
        images/s of the streaming loader with 0 and 1 worker processes (batches of 64, 128 px)

DIR: a folder of labelled images, e.g. ``python -m autotransfer.data.offline_datasets fashion-mnist
--per-class 600 --out /work/data-scale/fm600``. ``--code`` runs another version of the package (a
folder holding an ``autotransfer/`` package, e.g. ``git archive <commit> autotransfer | tar -x``) for
before/after tables. Peak RSS is the child's ``ru_maxrss`` (it counts the pages of memory-mapped files
it read, which the kernel can drop) and the peak of ``RssAnon`` (the memory only swap could free),
sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

GIB = 2**30
BACKBONE = "tf_efficientnet_lite0"


class AnonPeak:
    """Samples this process's RssAnon (bytes) in a thread; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _child(kind: str, data: str, options: dict, code: str | None) -> dict:
    """Run ``kind`` in a fresh interpreter; its JSON result plus the child's ru_maxrss."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = os.pathsep.join([code, str(Path(__file__).resolve().parents[1])])
    args = [sys.executable, "-m", "benchmarks.scale", f"_{kind}", data, json.dumps(options)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, cwd=Path(__file__).resolve().parents[1])
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{kind} on {data} failed (status {status})")
    return {**json.loads(out.decode().strip().splitlines()[-1]), "max_rss": usage.ru_maxrss * 1024}


def run_trial(data: str, options: dict) -> dict:
    import numpy as np

    from autotransfer.data.datasets import load_dataset
    from autotransfer.models.zoo import create_backbone
    from autotransfer.runtime import tune_allocator
    from autotransfer.transfer.finetune import FinetuneConfig, finetune

    tune_allocator()
    dataset = load_dataset(data, image_size=128, show_progress=False)
    try:
        import autotransfer.transfer.prefix_cache as prefix_cache

        cap = options.get("ram_cap_gib")
        if cap:  # this shared machine: keep the in-RAM cache below a cap
            prefix_cache.RAM_FRACTION = min(prefix_cache.RAM_FRACTION, cap * GIB / prefix_cache.available_memory())
    except ImportError:  # the version before prefix_cache.py
        pass
    steps = options.get("steps")
    if steps:  # the prefix cache is built whole; training and validation stop after `steps` batches
        import autotransfer.transfer.finetune as ft

        if hasattr(ft, "_train_epoch"):  # the version before transfer/train_loop.py
            for name in ("_train_epoch", "_evaluate"):
                setattr(ft, name, _limited(getattr(ft, name), steps * 64))
        else:
            from autotransfer.transfer.train_loop import Trainer

            epoch = Trainer.train_epoch
            Trainer.train_epoch = lambda self, model, batches, *rest: epoch(
                self, model, _First(batches, steps * 64), *rest
            )
            ft.evaluate = _limited(ft.evaluate, steps * 64)
    peak = AnonPeak()
    tic = time.perf_counter()
    config = FinetuneConfig(strategy="finetune_top", freeze_groups=2, epochs=1, bf16=False, warmup_epochs=0)
    result = finetune(dataset, create_backbone(BACKBONE), config, device="cpu")
    seconds = time.perf_counter() - tic
    return {
        "images": len(dataset),
        "seconds": seconds,
        "anon_peak": peak.stop(),
        "cached_prefix": result.used_cached_prefix,
        "val_accuracy": float(np.round(result.best_val_accuracy, 4)),
    }


class _First:
    """The first ``limit`` images of a split's batches (any version's batch class)."""

    def __init__(self, batches, limit: int) -> None:
        self._batches, self._limit = batches, limit

    def __len__(self) -> int:
        return min(len(self._batches), self._limit)

    def __getattr__(self, name: str):
        return getattr(self._batches, name)


def _limited(function, limit: int):
    def call(model, batches, *args, **kwargs):
        return function(model, _First(batches, limit), *args, **kwargs)

    return call


def run_stages(data: str, options: dict) -> dict:
    from autotransfer.data.datasets import load_dataset
    from autotransfer.data.decode_cache import files_fingerprint
    from autotransfer.data.sources import index_dataset
    from autotransfer.models.features import extract_features
    from autotransfer.models.zoo import create_backbone
    from autotransfer.runtime import tune_allocator
    from autotransfer.transfer.probes import ProbeOptions, fit_probe

    tune_allocator()
    times = {}
    tic = time.perf_counter()
    index = index_dataset(data)
    times["index"] = time.perf_counter() - tic
    tic = time.perf_counter()
    files_fingerprint(index.paths)
    times["fingerprint"] = time.perf_counter() - tic
    tic = time.perf_counter()
    dataset = load_dataset(index, image_size=options.get("size", 64), show_progress=False)
    times["decode"] = time.perf_counter() - tic  # a cache hit when the folder was decoded before
    if options.get("no_model"):
        return {"images": len(dataset), "cache_hit": dataset.cache_hit, "extract_anon_peak": float("nan"),
                "extract": float("nan"), "probe": float("nan"), **times}  # fmt: skip
    peak = AnonPeak()
    tic = time.perf_counter()
    features = extract_features(dataset, create_backbone(BACKBONE), ["head"], bf16=False, device="cpu",
                                use_cache=False, show_progress=False)["head"]  # fmt: skip
    times["extract"] = time.perf_counter() - tic
    extract_peak = peak.stop()
    train, val = dataset.indices("train"), dataset.indices("val")
    tic = time.perf_counter()
    fit_probe(
        features[train],
        dataset.labels[train],
        features[val],
        dataset.labels[val],
        ProbeOptions(heads=("softmax",), c_grid=(1.0,)),
    )
    times["probe"] = time.perf_counter() - tic
    return {"images": len(dataset), "cache_hit": dataset.cache_hit, "extract_anon_peak": extract_peak, **times}


def run_loader(data: str, options: dict) -> dict:
    import numpy as np
    import torch

    from autotransfer.data.datasets import load_dataset
    from autotransfer.transfer.batches import Batches, ImageRows, image_input

    dataset = load_dataset(data, image_size=128, show_progress=False)
    rows = dataset.indices("train")[:6000]
    order = np.random.default_rng(0).permutation(len(rows))
    rates = {}
    for workers in (0, 1):
        batches = Batches(ImageRows(dataset.images, rows), image_input(torch.zeros(3, 1, 1), torch.ones(3, 1, 1)),
                          torch.device("cpu"), workers=workers)  # fmt: skip
        tic = time.perf_counter()
        for _ in batches.iterate(order, 64):
            pass
        rates[f"workers_{workers}"] = len(rows) / (time.perf_counter() - tic)
    return {"images": len(rows), **rates}


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        kind, data, options = sys.argv[1][1:], sys.argv[2], json.loads(sys.argv[3])
        result = {"trial": run_trial, "stages": run_stages, "loader": run_loader}[kind](data, options)
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["trial", "stages", "loader"])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--code", help="a folder holding another version of the autotransfer package")
    parser.add_argument("--ram-cap-gib", type=float, help="trial: cap of the in-RAM prefix cache")
    parser.add_argument("--steps", type=int, help="trial: train and validate on this many batches only")
    parser.add_argument("--size", type=int, default=64, help="stages: the decode resolution")
    parser.add_argument("--no-model", action="store_true", help="stages: index, fingerprint and decode only")
    args = parser.parse_args()
    from autotransfer.machine import describe_machine

    print(describe_machine())
    label = args.code or "this checkout"
    if args.what == "trial":
        print("\n| code | images | peak RSS GiB | peak anon GiB | seconds | cached prefix | val acc |")
        print("|---|---:|---:|---:|---:|---|---:|")
    elif args.what == "stages":
        print(f"\n| images | index s | fingerprint s | decode s ({args.size} px) | extract s | probe s "
              "| extract peak anon GiB | peak RSS GiB |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print("\n| images | 0 workers img/s | 1 worker img/s |")
        print("|---:|---:|---:|")
    for data in args.data:
        r = _child(
            args.what,
            data,
            {"ram_cap_gib": args.ram_cap_gib, "size": args.size, "steps": args.steps, "no_model": args.no_model},
            args.code,
        )
        if args.what == "trial":
            print(f"| {label} | {r['images']} | {_gib(r['max_rss'])} | {_gib(r['anon_peak'])} | {r['seconds']:.0f} "
                  f"| {r['cached_prefix']} | {r['val_accuracy']} |", flush=True)  # fmt: skip
        elif args.what == "stages":
            print(f"| {r['images']} | {r['index']:.2f} | {r['fingerprint']:.2f} | {r['decode']:.1f} "
                  f"| {r['extract']:.1f} | {r['probe']:.1f} | {_gib(r['extract_anon_peak'])} | {_gib(r['max_rss'])} |",
                  flush=True)  # fmt: skip
        else:
            print(f"| {r['images']} | {r['workers_0']:.0f} | {r['workers_1']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
