"""Device, precision and allocator choices, made once and the same way everywhere."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from contextlib import nullcontext

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_allocator_tuned = False


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checked_device(name: str | torch.device | None) -> str | torch.device | None:
    """``name`` (``cpu``, ``cuda``, ``cuda:1``; None: the default) if this machine has it; raises
    AutoTransferError otherwise, before any work starts (run settings and ``Pipeline.load`` call it)."""
    from autotransfer.errors import AutoTransferError

    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AutoTransferError(
            f"Unknown device {name!r}.",
            where="{option}",
            fix="use cpu or cuda (cuda:N for another GPU).",
            option="device",
        ) from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise AutoTransferError(
            f"Device {name!r} is not available: this machine's torch sees {torch.cuda.device_count()} CUDA GPU(s).",
            where="{option}",
            fix="leave {option} out (CUDA when present, else the CPU), or use {option:cpu}.",
            option="device",
        )
    if device.type not in ("cpu", "cuda"):
        raise AutoTransferError(
            f"Device {name!r} is not supported.", where="{option}", fix="use cpu or cuda.", option="device"
        )
    return name


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on GPUs with bf16 and on CPUs with native bf16 (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` (and supported), else a no-op context."""
    if not enabled or not bf16_supported(device):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def tune_allocator() -> bool:
    """Stop glibc malloc from mmap/munmap-ing every large activation (1.4-2.9x slower CPU inference).

    Same effect as starting Python with MALLOC_MMAP_MAX_=0 and a high MALLOC_TRIM_THRESHOLD_, but
    applied at run time. Freed memory is kept for reuse instead of being returned to the OS.
    Disabled with AUTOTRANSFER_MALLOC_TUNING=0; does nothing where glibc is absent.
    """
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("AUTOTRANSFER_MALLOC_TUNING", "1") == "0":
        return _allocator_tuned
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok
