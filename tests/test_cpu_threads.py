"""Torch threads follow the CPUs other processes leave free (autotransfer/cpu_threads.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from autotransfer import cpu_threads
from autotransfer.cpu_threads import CpuSample, CpuThreads, free_threads, others_cpus
from autotransfer.errors import AutoTransferError


@pytest.fixture(autouse=True)
def _keep_torch_threads(monkeypatch):
    before, pools = torch.get_num_threads(), threadpool_limits(limits=None)  # records the pools' counts
    for name in cpu_threads.PINNING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)
    pools.restore_original_limits()


def test_others_are_the_machines_busy_time_less_this_processs():
    before, after = CpuSample(wall=10.0, busy=100.0, own=40.0), CpuSample(wall=12.0, busy=104.0, own=42.0)
    assert others_cpus(before, after) == pytest.approx(1.0)  # 4 CPU-s in 2 s, 2 of them ours
    assert others_cpus(after, after) == 0.0


@pytest.mark.parametrize(
    ("others", "cpus", "most", "threads"),
    [(0.0, 2, 2, 2), (1.0, 2, 2, 1), (0.3, 2, 2, 2), (1.7, 2, 2, 1), (5.0, 2, 2, 1), (0.5, 16, 8, 8), (12.2, 16, 8, 4)],
)
def test_threads_are_the_free_cpus_rounded_between_one_and_torchs_default(others, cpus, most, threads):
    assert free_threads(others, cpus, most) == threads


def test_a_second_process_halves_the_threads_and_its_end_restores_them(monkeypatch):
    samples = iter([CpuSample(0.0, 0.0, 0.0), CpuSample(1.0, 2.0, 1.0), CpuSample(2.0, 3.0, 2.0)])
    monkeypatch.setattr(cpu_threads, "take_sample", lambda: next(samples))
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda seconds: None)
    threads = CpuThreads()
    threads.most, threads.cpus = 2, 2
    assert threads.adjust() == 1 and torch.get_num_threads() == 1  # others kept 1 of 2 CPUs busy
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())  # scikit-learn's BLAS and OpenMP too
    assert threads.adjust() == 2 and torch.get_num_threads() == 2  # then none
    assert threads.busiest == pytest.approx(1.0)  # the busiest window is kept for the summary
    monkeypatch.setattr(cpu_threads, "_threads", threads)
    load = cpu_threads.busiest_load()
    assert load == {"others_busy": 1.0, "cpus": 2}
    assert cpu_threads.load_note(load).startswith("other processes kept up to 1.0 of 2 CPUs busy during this run")
    assert cpu_threads.load_note({"others_busy": 0.3, "cpus": 2}) == "" and cpu_threads.load_note(None) == ""


def test_the_environment_pins_the_count(monkeypatch):
    monkeypatch.setattr(cpu_threads, "take_sample", lambda: pytest.fail("a pinned count measures nothing"))
    monkeypatch.setenv("AUTOTRANSFER_THREADS", "1")
    assert CpuThreads().adjust() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("AUTOTRANSFER_THREADS", "two")
    with pytest.raises(AutoTransferError, match="AUTOTRANSFER_THREADS='two'"):
        CpuThreads().adjust()


def test_a_busy_process_beside_is_measured():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # started
        before = cpu_threads.take_sample()
        time.sleep(1.0)
        assert others_cpus(before, cpu_threads.take_sample()) > 0.5  # it has a CPU to itself at least half the time
    finally:
        spinner.kill()
        spinner.wait()
