"""Pooled features at several tap points from one forward pass, cached on disk per tap.

One pass over the dataset gives every requested tap (forward hooks on the tap modules); the pass
stops right after the deepest requested tap, so mid-layer features cost only the layers below
them. Inputs come straight from the decode cache (uint8, NHWC, which is already channels_last
memory once permuted to NCHW). bf16 autocast is used where the hardware has native bf16.

The cache key covers the dataset (decode-cache fingerprint: files + resize recipe), the backbone
and a hash of its actual weights, the normalisation, the tap, the pooling and the precision.
Files are written to a temporary name and renamed: concurrent runs never see a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from autotransfer.data.datasets import Dataset
from autotransfer.errors import AutoTransferError
from autotransfer.files import replacing, write_text_atomic
from autotransfer.models.zoo import COMBINED_TAP, Backbone
from autotransfer.runtime import autocast, bf16_supported, default_device
from autotransfer.settings import cache_dir

POOLINGS = ("avg", "max", "avgmax")
Allocate = Callable[[str, tuple[int, int]], np.ndarray]  # (tap, (N, D)) -> a float32 array to fill


class _StopForward(Exception):
    """Raised by the last needed hook: nothing above the deepest tap is computed."""


def outputs_until(model: nn.Module, x: torch.Tensor, modules: list[str]) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` only until each named module has produced its output; return those outputs.

    The one place where a forward is cut short: feature taps, a head on an intermediate tap, and the
    frozen prefix of fine-tuning all use it, for timm and torchvision models alike.
    """
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def capture(_module, _inputs, output):
            captured[name] = output
            if len(captured) == len(modules):
                raise _StopForward

        return capture

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in modules]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def normalisation(backbone: Backbone, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The pretrained weights' mean and std, shaped to normalise NCHW batches on ``device``."""
    mean = torch.tensor(backbone.preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.preprocess.std, device=device).view(1, 3, 1, 1)
    return mean, std


def model_fingerprint(model: nn.Module) -> str:
    """A hash of every tensor of the model: features depend on the weights, not on their file name."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pool(output: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, H, W) maps and (B, N, C) tokens to (B, C) [or (B, 2C) for avgmax]; vectors pass through."""
    if output.ndim == 2:
        return output
    dims = (2, 3) if output.ndim == 4 else (1,)
    if pooling == "avg":
        return output.mean(dim=dims)
    if pooling == "max":
        return output.amax(dim=dims)
    return torch.cat([output.mean(dim=dims), output.amax(dim=dims)], dim=1)


def to_input(batch: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW in channels_last memory (no copy of the layout)."""
    tensor = torch.from_numpy(np.array(batch)).to(device, non_blocking=True)  # copy: memmaps are read-only
    return tensor.permute(0, 3, 1, 2).float().div_(255.0).sub_(mean).div_(std)


@dataclass
class FeatureExtractor:
    """Runs a backbone over uint8 images and returns pooled features for each requested tap."""

    backbone: Backbone
    device: torch.device
    batch_size: int = 64
    bf16: bool = True

    def __post_init__(self) -> None:
        self.model = self.backbone.model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.mean, self.std = normalisation(self.backbone, self.device)
        self.use_bf16 = self.bf16 and bf16_supported(self.device)

    def batch(self, images: np.ndarray, taps: list[str], pooling: str = "avg") -> dict[str, torch.Tensor]:
        modules = {self.backbone.tap(name).module: name for name in taps}
        with torch.inference_mode(), autocast(self.device, self.use_bf16):
            outputs = outputs_until(self.model, to_input(images, self.mean, self.std, self.device), list(modules))
            # pooled inside autocast's scope; reductions accumulate in fp32
            return {modules[m]: pool(out, pooling).float() for m, out in outputs.items()}

    def run(
        self,
        images: np.ndarray,
        taps: list[str],
        pooling: str = "avg",
        show_progress: bool = False,
        allocate: Allocate | None = None,
    ) -> dict[str, np.ndarray]:
        """Pooled features per tap, each batch written into an array allocated after the first batch
        (``allocate(tap, shape)``: in RAM by default, a memory-mapped file where the caller wants one)."""
        allocate = allocate or (lambda _tap, shape: np.empty(shape, np.float32))
        outputs: dict[str, np.ndarray] = {}
        with Progress(transient=True, disable=not show_progress) as progress:
            task = progress.add_task(f"{self.backbone.name}: features of {len(images)} images", total=len(images))
            for start in range(0, len(images), self.batch_size):
                for tap, values in self.batch(images[start : start + self.batch_size], taps, pooling).items():
                    if tap not in outputs:
                        outputs[tap] = allocate(tap, (len(images), values.shape[1]))
                    outputs[tap][start : start + len(values)] = values.cpu().numpy()
                progress.advance(task, min(self.batch_size, len(images) - start))
        return {t: outputs[t] if t in outputs else np.empty((0, 0), np.float32) for t in taps}


def _cache_folder(dataset: Dataset, backbone: Backbone, root: Path | None) -> Path:
    pre = backbone.preprocess
    norm = hashlib.blake2b(repr((pre.mean, pre.std)).encode(), digest_size=4).hexdigest()
    safe = backbone.name.replace(":", "_").replace("/", "_")
    return (
        (root or cache_dir()) / "features" / dataset.fingerprint / f"{safe}-{model_fingerprint(backbone.model)}-{norm}"
    )


def _cache_files(
    dataset: Dataset, backbone: Backbone, taps: list[str], pooling: str, use_bf16: bool, root: Path | None
) -> dict[str, Path]:
    folder = _cache_folder(dataset, backbone, root)
    return {t: folder / f"{t}-{pooling}-{'bf16' if use_bf16 else 'fp32'}.npy" for t in taps}


def features_cached(
    dataset: Dataset,
    backbone: Backbone,
    *,
    pooling: str = "avg",
    bf16: bool = True,
    device: torch.device | str | None = None,
    cache_root: Path | None = None,
) -> bool:
    """Whether every tap of ``backbone`` is in the feature cache: `extract_features` would then only
    read them (its time says nothing of the forward pass's)."""
    device = torch.device(device) if device is not None else default_device()
    use_bf16 = bf16 and bf16_supported(device)
    taps = [t.name for t in backbone.taps]
    return all(path.exists() for path in _cache_files(dataset, backbone, taps, pooling, use_bf16, cache_root).values())


def _forward_record(dataset: Dataset, backbone: Backbone, use_bf16: bool, root: Path | None) -> Path:
    """Where the seconds of the forward pass that computed a backbone's cached features are kept."""
    return _cache_folder(dataset, backbone, root) / f"forward-{'bf16' if use_bf16 else 'fp32'}.json"


def recorded_forward_seconds(
    dataset: Dataset,
    backbone: Backbone,
    *,
    bf16: bool = True,
    device: torch.device | str | None = None,
    cache_root: Path | None = None,
) -> float | None:
    """Seconds the forward pass that filled ``backbone``'s feature cache for ``dataset`` took (every image,
    at that run's load), or None when not recorded: what a run reading the cache would have spent, for
    its time estimates (search/context.py), since a cache read times no forward pass."""
    device = torch.device(device) if device is not None else default_device()
    path = _forward_record(dataset, backbone, bf16 and bf16_supported(device), cache_root)
    try:
        return float(json.loads(path.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _feature_file(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A float32 ``.npy`` memory map at ``path``, its disk blocks reserved first: a full disk raises
    ENOSPC here rather than killing the process (SIGBUS) on a write into the map."""
    array = np.lib.format.open_memmap(path, "w+", np.float32, shape)
    with open(path, "r+b") as handle:
        os.posix_fallocate(handle.fileno(), 0, os.path.getsize(path))
    return array


def extract_features(  # noqa: PLR0913 (a public function: every option keyword-only)
    dataset: Dataset,
    backbone: Backbone,
    taps: list[str] | None = None,
    *,
    pooling: str = "avg",
    batch_size: int = 64,
    bf16: bool = True,
    device: torch.device | str | None = None,
    cache_root: Path | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> dict[str, np.ndarray]:
    """Pooled features (N x C float32, dataset order) for each tap; cached taps are read, not computed.

    A combined tap (``"a+b"``, ``Backbone.tap_parts``) gives its parts' features side by side
    (N x (C_a + C_b)); only the parts are computed and cached."""
    if pooling not in POOLINGS:
        raise AutoTransferError(f"Unknown pooling {pooling!r}.", fix=f"use one of {', '.join(POOLINGS)}.")
    taps = taps or [t.name for t in backbone.taps]
    combined = {t: [p.name for p in backbone.tap_parts(t)] for t in taps if COMBINED_TAP in t}
    if combined:
        single = [t for t in taps if t not in combined]
        parts = list(dict.fromkeys(single + [p for names in combined.values() for p in names]))
        kwargs = dict(pooling=pooling, batch_size=batch_size, bf16=bf16, device=device, cache_root=cache_root)
        found = extract_features(dataset, backbone, parts, **kwargs, use_cache=use_cache, show_progress=show_progress)
        return {t: np.hstack([found[p] for p in combined[t]]) if t in combined else found[t] for t in taps}
    device = torch.device(device) if device is not None else default_device()
    extractor = FeatureExtractor(backbone, device, batch_size, bf16)
    files = _cache_files(dataset, backbone, taps, pooling, extractor.use_bf16, cache_root)
    features: dict[str, np.ndarray] = {}
    if use_cache:
        for tap, path in files.items():
            try:
                features[tap] = np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                continue  # missing or damaged: computed below
    missing = [t for t in taps if t not in features]
    if missing and use_cache:  # written straight into the cache files (memory maps), renamed when complete
        tic = time.perf_counter()
        with ExitStack() as partials:
            paths = {t: partials.enter_context(replacing(files[t])) for t in missing}
            allocate = lambda tap, shape: _feature_file(paths[tap], shape)  # noqa: E731
            for values in extractor.run(dataset.images, missing, pooling, show_progress, allocate).values():
                if isinstance(values, np.memmap):
                    values.flush()
        features.update({t: np.load(files[t], mmap_mode="r") for t in missing})
        seconds = json.dumps({"seconds": time.perf_counter() - tic, "images": len(dataset.images)})
        write_text_atomic(_forward_record(dataset, backbone, extractor.use_bf16, cache_root), seconds)
    elif missing:
        features.update(extractor.run(dataset.images, missing, pooling, show_progress))
    return {t: features[t] for t in taps}
