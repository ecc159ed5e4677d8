"""Compute threads (torch's, and the OpenMP and BLAS pools scikit-learn's probes use): as many as the
CPUs other processes leave free.

Why: torch, OpenMP and OpenBLAS run one thread per core by default, and two processes that both do so
oversubscribe the cores; their threads then spin waiting on each other at every parallel op. Measured on
2 cores (`python -m benchmarks.threads`): `auto`'s timing forward (16 images at 96 px) is 4.8x slower
than on a quiet machine beside a second process running 2 threads, 2.4x (about its fair share) with one
thread; beside a process without our allocator tuning the 2-thread forward was about 40x slower. A run
that keeps every core's thread beside another heavy process overruns every estimate made in a quiet moment.

psutil measures CPU time, torch and threadpoolctl set thread counts; nothing connects them, hence this
module. ``AUTOTRANSFER_THREADS`` (or ``OMP_NUM_THREADS``) pins the count and turns the adjustment off.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import psutil
import torch
from threadpoolctl import threadpool_limits

from autotransfer.errors import AutoTransferError

log = logging.getLogger(__name__)

FIRST_WINDOW_SECONDS = 0.25  # how long the first call watches the machine when nothing was sampled before
PINNING_VARIABLES = ("AUTOTRANSFER_THREADS", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds at ``wall`` (time.monotonic): ``busy`` of the whole machine (all CPUs),
    ``own`` of this process (all its threads)."""

    wall: float
    busy: float
    own: float


def take_sample() -> CpuSample:
    machine = psutil.cpu_times()
    # Linux counts guest time inside user time already; idle and iowait are not busy
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    busy -= getattr(machine, "guest", 0.0) + getattr(machine, "guest_nice", 0.0)
    own = psutil.Process().cpu_times()
    return CpuSample(time.monotonic(), busy, own.user + own.system)


def others_cpus(before: CpuSample, after: CpuSample) -> float:
    """CPUs (0 to the machine's count) that other processes kept busy between two samples."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / wall)


def free_threads(others: float, cpus: int, most: int) -> int:
    """Compute threads when other processes use ``others`` of ``cpus`` CPUs: the CPUs they leave,
    rounded, at least 1 and at most ``most`` (torch's default: the physical cores)."""
    return max(1, min(most, round(cpus - others)))


def set_threads(threads: int) -> None:
    """Use ``threads`` in torch and in every OpenMP and BLAS pool loaded (scikit-learn's, NumPy's, SciPy's)."""
    threadpool_limits(limits=threads)
    torch.set_num_threads(threads)


def pinned_count(value: str) -> int:
    """``AUTOTRANSFER_THREADS``'s value as a thread count; raises AutoTransferError unless a positive integer."""
    if not value.strip().isdigit() or int(value) < 1:
        raise AutoTransferError(f"AUTOTRANSFER_THREADS={value!r} is not a positive whole number of threads.",
                                where="the environment variable AUTOTRANSFER_THREADS",
                                fix="set it to e.g. 2, or unset it to follow the machine's load.")  # fmt: skip
    return int(value)


class CpuThreads:
    """Sets the compute threads (set_threads) from the load measured since the previous call."""

    def __init__(self) -> None:
        self.most = torch.get_num_threads()
        self.cpus = psutil.cpu_count() or 1
        self.last: CpuSample | None = None
        self.busiest = 0.0  # the most CPUs other processes kept busy over one measured window

    @staticmethod
    def pinned() -> str | None:
        """The environment variable that pins the thread count, if one is set."""
        return next((name for name in PINNING_VARIABLES if os.environ.get(name)), None)

    def adjust(self) -> int:
        """Set and return the compute thread count (unchanged by the load when pinned)."""
        pinned = self.pinned()
        if pinned == "AUTOTRANSFER_THREADS":
            set_threads(pinned_count(os.environ[pinned]))
        if pinned:
            return torch.get_num_threads()
        if self.last is None:
            self.last = take_sample()
            time.sleep(FIRST_WINDOW_SECONDS)
        now = take_sample()
        others = others_cpus(self.last, now)
        self.last = now
        self.busiest = max(self.busiest, others)
        threads = free_threads(others, self.cpus, self.most)
        if threads != torch.get_num_threads():
            log.info("compute threads: %d (other processes kept %.1f of %d CPUs busy)", threads, others, self.cpus)
            set_threads(threads)
        return threads


_threads: CpuThreads | None = None


def busiest_load() -> dict | None:
    """``{"others_busy": CPUs, "cpus": N}``: the most CPUs other processes kept busy over one window
    since this process first measured (None before any measurement, or when threads are pinned)."""
    if _threads is None or _threads.last is None:
        return None
    return {"others_busy": round(_threads.busiest, 1), "cpus": _threads.cpus}


def load_note(load: dict | None) -> str:
    """What a busy machine did to the search, for the summary and the report ("" when it stayed quiet:
    other processes never kept half a CPU busy)."""
    if not load or load["others_busy"] < 0.5:
        return ""
    return (
        f"other processes kept up to {load['others_busy']:.1f} of {load['cpus']} CPUs busy during this run: "
        "compute threads followed them, so the budget bought fewer candidates and trials than on a quiet machine"
    )


def use_free_cpus() -> int:
    """Give torch the CPUs that other processes left free since the last call (see the module's
    docstring); call it before each heavy step. Returns the thread count now in use."""
    global _threads
    if _threads is None:
        _threads = CpuThreads()
    return _threads.adjust()
