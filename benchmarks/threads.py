"""Why compute threads follow the load (autotransfer/cpu_threads.py): backbone forwards, quiet and
beside a second process that runs forwards with torch's default threads (as a second `fit` does).

    python -m benchmarks.threads [--seconds 8]

Prints the median forward time (mobilenetv2_100) of this process per setting, for `auto`'s timing
batch (16 images at 96 px) and an extraction batch (32 images at 128 px), and its ratio to quiet.
With one extra process on 2 cores, the fair share is 2x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from autotransfer.cpu_threads import set_threads, use_free_cpus
from autotransfer.machine import describe_machine
from autotransfer.models.zoo import create_backbone
from autotransfer.runtime import tune_allocator

WORKLOADS = {"auto's timing: 16 images, 96 px": (16, 96), "extraction: 32 images, 128 px": (32, 128)}


def forward_seconds(images: int, size: int, seconds: float) -> float:
    """Median seconds of one forward of ``images`` at ``size`` px, over ``seconds`` after a warm-up."""
    tune_allocator()
    model = create_backbone("mobilenetv2_100", device="cpu").model.eval()
    batch = torch.randn(images, 3, size, size)
    times: list[float] = []
    with torch.inference_mode():
        model(batch)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            tic = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


def beside(seconds: float) -> subprocess.Popen:
    """A second process running extraction forwards with torch's default threads for ``seconds``."""
    code = f"import autotransfer; from benchmarks.threads import forward_seconds; forward_seconds(32, 128, {seconds})"
    process = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(8)  # imported and running
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="forwards timed per setting and workload")
    args = parser.parse_args()
    default = torch.get_num_threads()
    settings = (("quiet", default), ("beside", default), ("beside", 1), ("beside, use_free_cpus()", None))
    rows = []
    for label, threads in settings:
        process = beside(3 * args.seconds + 10) if label.startswith("beside") else None
        try:
            threads = use_free_cpus() if threads is None else threads
            set_threads(threads)
            rows.append((label, threads, [forward_seconds(*shape, args.seconds) for shape in WORKLOADS.values()]))
        finally:
            if process:
                process.kill()
                process.wait()
        set_threads(default)
    print(f"Machine: {describe_machine()}\n")
    print("Median forward seconds of mobilenetv2_100 (ratio to quiet); 'beside': a second process runs "
          f"forwards with {default} threads the whole time.\n")  # fmt: skip
    print("| setting | threads | " + " | ".join(WORKLOADS) + " |\n|---|---|" + "---|" * len(WORKLOADS))
    quiet = rows[0][2]
    for label, threads, seconds in rows:
        cells = " | ".join(f"{s:.3f} ({s / q:.1f}x)" for s, q in zip(seconds, quiet))
        print(f"| {label} | {threads} | {cells} |")


if __name__ == "__main__":
    main()
