"""The linear probe at scale: what each solver costs per pass against rows and classes, and the probe stage
(fit_probe with the search's heads and C grid) at 6k / 24k / 60k images and 1,000 classes.

    python -m benchmarks.probe_scale solvers     # seconds per pass; the fitted constants of probe_cost.py
    python -m benchmarks.probe_scale stage       # fit_probe seconds, solver, accuracy vs N and C
    PYTHONPATH=/path/to/other/checkout python benchmarks/probe_scale.py stage   # another version's fit_probe

Features are generated (not extracted): 1,280 post-ReLU dimensions (a mobilenetv2 / efficientnet-lite
head tap), class means plus noise, seeded; the probe's cost depends only on N x D x C. One thread
(torch and BLAS), as `fit` gives the probe stage on a loaded 2-core machine (cpu_threads.use_free_cpus).
Results: benchmarks/results/probe-scale-cpu.md.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from autotransfer.budget import Deadline
from autotransfer.machine import describe_machine
from autotransfer.transfer import probes

DIMS = 1280


def features(n: int, classes: int, seed: int = 0, d: int = DIMS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` generated codes of ``classes`` classes (float32, non-negative), and their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    means = rng.normal(size=(classes, d)).astype(np.float32) * 0.35
    x = means[y]
    x += rng.standard_normal(size=(n, d), dtype=np.float32)
    np.maximum(x, 0, out=x)
    return x, y


def _per_pass(n: int, c: int) -> dict:
    from autotransfer.transfer.torch_heads import MinibatchSoftmaxHead

    x, y = features(n, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        tic = time.perf_counter()
        model = LogisticRegression(max_iter=5, tol=0.0).fit(x, y)
        lbfgs = (time.perf_counter() - tic) / max(int(model.n_iter_[0]), 1)
        saga = float("nan")
        if c <= 100:
            tic = time.perf_counter()
            LogisticRegression(solver="saga", max_iter=1, tol=0.0).fit(x, y)
            saga = time.perf_counter() - tic
    tic = time.perf_counter()
    MinibatchSoftmaxHead(epochs=1, device=torch.device("cpu")).fit(x, y)
    epoch = time.perf_counter() - tic
    return {"n": n, "c": c, "lbfgs": lbfgs, "saga": saga, "epoch": epoch}


def _fit_constants(rows: list[dict], key: str) -> tuple[float, float]:
    """(per_class, per_row) of seconds = n * d * (per_class * c + per_row), least squares on relative error."""
    a = np.array([[r["c"], 1.0] for r in rows]) / np.array([[r[key] / (r["n"] * DIMS)] * 2 for r in rows])
    (per_class, per_row), *_ = np.linalg.lstsq(a, np.ones(len(rows)), rcond=None)
    return float(per_class), float(per_row)


def solvers(args: argparse.Namespace) -> None:
    _per_pass(200, 10)  # warm-up: the first torch and BLAS calls of a process are slow
    rows = [_per_pass(n, c) for n in args.rows for c in args.classes]
    print("\n| rows | classes | lbfgs s / iteration | saga s / epoch | minibatch s / epoch |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['c']:,} | {r['lbfgs']:.3f} | {r['saga']:.2f} | {r['epoch']:.3f} |")
    for key, name in (("lbfgs", "LBFGS"), ("epoch", "EPOCH")):
        per_class, per_row = _fit_constants(rows, key)
        print(f"\n{name}_PER_CLASS, {name}_PER_ROW = {per_class:.2g}, {per_row:.2g}")


def _probe(x_train, y_train, x_val, y_val, deadline: Deadline | None):
    if hasattr(probes, "ProbeOptions"):
        return probes.fit_probe(x_train, y_train, x_val, y_val, probes.ProbeOptions(), deadline=deadline)
    return probes.fit_probe(x_train, y_train, x_val, y_val, deadline=deadline)  # before ProbeOptions


def stage(args: argparse.Namespace) -> None:
    print(f"\nautotransfer from {probes.__file__}; deadline {args.deadline or 'none'} s")
    print("\n| images | classes | probe s (wall) | CPU s | (head, C) tried | selection rows | solvers | chosen "
          "| val acc | test acc |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---|---|---:|---:|")
    for n, c in [(n, args.many_classes_c if n == 0 else 10) for n in args.images]:
        n = n or 4 * c  # 0: the 1,000-class folder, 4 images per class
        x, y = features(int(n * 1.1), c, seed=1)
        test = np.arange(n, len(y))
        cut = int(n * 0.8)  # the train / val split of the run
        deadline = Deadline(args.deadline) if args.deadline else None
        tic, cpu = time.perf_counter(), time.process_time()
        result = _probe(x[:cut], y[:cut], x[cut:n], y[cut:n], deadline)
        seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
        used = sorted({t.get("solver", "full") for t in result.tried})
        test_acc = float((result.model.predict(x[test]) == y[test]).mean())
        print(f"| {n:,} | {c:,} | {seconds:.1f} | {cpu:.1f} | {len(result.tried)} | {result.tried[0]['rows']:,} | "
              f"{', '.join(used)} | {result.head} C={result.C:g} | {result.val_accuracy:.3f} | {test_acc:.3f} |",
              flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("solvers")
    one.add_argument("--rows", nargs="+", type=int, default=[4800, 19200])
    one.add_argument("--classes", nargs="+", type=int, default=[10, 100, 1000])
    two = sub.add_parser("stage")
    two.add_argument("--images", nargs="+", type=int, default=[6000, 24000, 60000, 0], help="0: 1,000 classes x 4")
    two.add_argument("--many-classes-c", type=int, default=1000)
    two.add_argument("--deadline", type=float, default=0.0, help="seconds (0: none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(describe_machine())
    with threadpool_limits(1):
        (solvers if args.command == "solvers" else stage)(args)


if __name__ == "__main__":
    main()
