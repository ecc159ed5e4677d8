"""The output of a frozen prefix, computed once per training run, in bounded memory.

The prefix: the model's top-level units (Sequential containers opened one level) in call order, up
to the last one holding frozen parameters (prefix_units); during training they are swapped for
``nn.Identity`` (skipped_prefix) and the cached output is the model's input, once prefix_matches has
checked that this reproduces the full forward.

When the lowest groups are frozen and there is no augmentation, their output does not change during
training: it is computed once and training runs only the layers above. That output is large (with
two frozen groups of MobileNet/EfficientNet about 5x the decoded image), so its size is planned
before anything is computed, from one image's forward pass: it goes into a preallocated array in RAM
when it fits a share of the available memory, into a memory-mapped file on disk when it fits the
free disk space instead, and is not built at all (training runs the whole network, which the log
says) when neither holds. It is written batch by batch: no list of batches, no concatenation.
Activations computed in bf16 are stored in bf16 (as uint16 bits: NumPy has no bfloat16).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import nn

from autotransfer.files import is_disk_full
from autotransfer.models.features import outputs_until, to_input
from autotransfer.models.zoo import Backbone
from autotransfer.runtime import autocast
from autotransfer.transfer.batches import Batches

log = logging.getLogger(__name__)

RAM_FRACTION = 0.4  # of the memory available when training starts: the rest is for the model, batches, others
DISK_FRACTION = 0.8  # of the free space of the folder the memory map goes to
GIB = 2**30


def available_memory() -> int:
    """Bytes this process may still use: the system's available memory, within a cgroup's limit."""
    available = psutil.virtual_memory().available
    try:  # a container's limit (cgroup v2) is not in /proc/meminfo
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


@dataclass(frozen=True)
class PrefixPlan:
    """Where the cached prefix goes: "ram", "disk" (a memory map in ``folder``) or None (not cached)."""

    place: str | None
    bytes_needed: int
    shape: tuple[int, ...]  # of one image's activations
    dtype: torch.dtype
    folder: Path
    reason: str  # said in the log


def plan_prefix_cache(model, unit: str, sample: torch.Tensor, n_images: int, folder: Path, use_bf16: bool):
    """Size the cache of ``n_images`` from one image's forward pass (``sample``: its model input)."""
    with torch.inference_mode(), autocast(sample.device, use_bf16):
        out = outputs_until(model.backbone, sample, [unit])[unit]
    dtype = torch.bfloat16 if out.dtype == torch.bfloat16 else torch.float32
    shape = tuple(out.shape[1:])
    needed = n_images * int(np.prod(shape)) * (2 if dtype == torch.bfloat16 else 4)
    ram = int(RAM_FRACTION * available_memory())
    folder.mkdir(parents=True, exist_ok=True)
    disk = int(DISK_FRACTION * shutil.disk_usage(folder).free)
    sizes = f"{needed / GIB:.2f} GiB for {n_images} images; RAM budget {ram / GIB:.2f} GiB, disk {disk / GIB:.2f} GiB"
    if needed <= ram:
        return PrefixPlan("ram", needed, shape, dtype, folder, f"in RAM ({sizes})")
    if needed <= disk:
        return PrefixPlan("disk", needed, shape, dtype, folder, f"memory-mapped in {folder} ({sizes})")
    return PrefixPlan(None, needed, shape, dtype, folder, f"skipped: it would not fit ({sizes})")


class PrefixCache(torch.utils.data.Dataset):
    """Activations of one split, row i for the split's i-th image; read by batches like ``ImageRows``."""

    def __init__(self, plan: PrefixPlan, n: int) -> None:
        self.bf16 = plan.dtype == torch.bfloat16
        dtype = np.uint16 if self.bf16 else np.float32
        shape = (n, *plan.shape)
        if plan.place == "disk":  # an unlinked temporary file (the map keeps it): nothing is left after a crash
            with tempfile.TemporaryFile(dir=plan.folder) as handle:
                # blocks reserved first: a full disk raises ENOSPC here, not SIGBUS in a write to the map
                os.posix_fallocate(handle.fileno(), 0, int(np.prod(shape)) * np.dtype(dtype).itemsize)
                self.array = np.memmap(handle, dtype=dtype, mode="w+", shape=shape)
        else:
            self.array = np.empty(shape, dtype)

    def __len__(self) -> int:
        return len(self.array)

    def _tensor(self, values: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(values)
        return tensor.view(torch.bfloat16) if self.bf16 else tensor

    def __getitems__(self, positions: list[int]) -> torch.Tensor:
        return self._tensor(np.asarray(self.array[np.asarray(positions)]))

    def write(self, start: int, values: torch.Tensor) -> None:
        out = values.detach().to("cpu", torch.bfloat16 if self.bf16 else torch.float32)
        self.array[start : start + len(out)] = (out.view(torch.uint16) if self.bf16 else out).numpy()

    def fill(self, model, unit: str, images: Batches, batch_size: int, use_bf16: bool) -> PrefixCache:
        """Compute the prefix's output for every image of ``images`` (no grad; the caller sets eval mode)."""
        with torch.inference_mode(), autocast(images.device, use_bf16):
            for positions, x in images.iterate(np.arange(len(images)), batch_size):
                self.write(int(positions[0]), outputs_until(model.backbone, x, [unit])[unit])
        if isinstance(self.array, np.memmap):
            self.array.flush()
        return self


def prefix_input(batch: torch.Tensor) -> torch.Tensor:
    """A cached batch on the device -> the input of the layers above the prefix."""
    return batch.float().contiguous(memory_format=torch.channels_last)


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level modules, with Sequential containers opened one level: the candidates to skip."""
    units = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            units += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            units.append((name, child))
    return units


@contextmanager
def skipped_prefix(model: nn.Module, names: list[str]):
    """Temporarily replace the named units by Identity, so the model takes their output as input."""
    saved = {name: model.get_submodule(name) for name in names}
    for name in names:
        model.set_submodule(name, nn.Identity())
    try:
        yield
    finally:
        for name, module in saved.items():
            model.set_submodule(name, module)


def prefix_units(backbone: Backbone, freeze_groups: int, tap: str) -> list[str]:
    """The units called, in forward order, up to the last one holding frozen parameters.

    The unit holding the tap (for a combined tap, its shallowest part) is never part of it: its hook
    must still fire.
    """
    frozen = {p.rsplit(".", 1)[0] for g in range(freeze_groups) for p in backbone.depth_groups[g].params}
    units = _units(backbone.model)
    called: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _i, n=n: called.append(n)) for n, m in units]
    size = backbone.preprocess.input_size
    try:
        with torch.no_grad():
            backbone.model(torch.zeros(1, 3, size, size, device=next(backbone.model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    holding = [i for i, n in enumerate(called) if any(f == n or f.startswith(n + ".") for f in frozen)]
    modules = [part.module for part in backbone.tap_parts(tap)]
    tap_unit = [i for i, n in enumerate(called) if any(m == n or m.startswith(n + ".") for m in modules)]
    end = holding[-1] + 1 if holding else 0
    return called[: min(end, tap_unit[0]) if tap_unit else end]


def prefix_matches(
    model, units: list[str], images: np.ndarray, cached: torch.Tensor, mean, std, device, use_bf16: bool
) -> bool:
    """Whether skipping the prefix and feeding its cached output gives the full model's logits.

    Run under the same precision as training; bf16 rounds the cached activations once more, hence
    the looser tolerance there.
    """
    model.eval()
    tolerance = 5e-2 if use_bf16 else 1e-4
    with torch.inference_mode(), autocast(device, use_bf16):
        full = model(to_input(images, mean, std, device)).float()
        with skipped_prefix(model.backbone, units):
            short = model(prefix_input(cached.to(device))).float()
    return bool(torch.allclose(full, short, rtol=tolerance, atol=tolerance))


def build_prefix_caches(
    model, units: list[str], sources: list[Batches], *, batch_size: int, use_bf16: bool, folder: Path
) -> list[PrefixCache] | None:
    """One cache per split (``sources``: its batches of images, normalised on the model's device), or None
    when they would not fit."""
    was_training = model.training
    model.eval()  # frozen BatchNorm layers use their running statistics, and do not update them
    try:
        first = next(sources[0].iterate(np.arange(1), 1))[1]
        plan = plan_prefix_cache(model, units[-1], first, sum(len(s) for s in sources), folder, use_bf16)
        log.info("frozen-prefix cache %s", plan.reason)
        if plan.place is None:
            return None
        try:
            caches = [PrefixCache(plan, len(s)) for s in sources]
        except OSError as error:  # the disk filled up since it was measured
            if not is_disk_full(error):
                raise
            log.info("frozen-prefix cache skipped: %s (%s)", error, plan.folder)
            return None
        return [cache.fill(model, units[-1], s, batch_size, use_bf16) for cache, s in zip(caches, sources)]
    finally:
        model.train(was_training)
