"""Training and evaluation batches read by index from the memory-mapped decode cache.

A split is never copied whole: a ``torch.utils.data`` Dataset reads the rows of one batch from the
decode cache's ``images.npy`` (a memory map), a DataLoader groups them (worker processes and pinned
memory on a GPU), and the batch is normalised on the device. Peak memory is a few batches, whatever
the number of images.

Per-sample augmentation is a ``Transform``: a callable taking one uint8 CHW tensor and returning a
CHW tensor of the same size, uint8 (0..255) or float (0..1). It runs in ``__getitem__``, hence in
the loader's workers where there are any.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

Transform = Callable[[torch.Tensor], torch.Tensor]


class RowSource(Protocol):
    """What a loader reads: ``__getitems__`` gives one CPU batch for a list of positions."""

    def __len__(self) -> int: ...

    def __getitems__(self, positions: list[int]) -> torch.Tensor | list[torch.Tensor]: ...


class ImageRows(torch.utils.data.Dataset):
    """The uint8 images of ``rows`` (positions into ``images``, N x S x S x 3), as CHW tensors."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, transform: Transform | None = None) -> None:
        self.images, self.rows, self.transform = images, np.asarray(rows), transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> torch.Tensor:
        image = torch.from_numpy(np.array(self.images[self.rows[position]])).permute(2, 0, 1)
        return image if self.transform is None else self.transform(image)

    def __getitems__(self, positions: list[int]) -> torch.Tensor | list[torch.Tensor]:
        """A whole batch in one read of the memory map when there is no per-image transform."""
        if self.transform is not None:
            return [self[p] for p in positions]
        # NHWC -> NCHW view: channels_last memory, as the models run
        return torch.from_numpy(np.asarray(self.images[self.rows[np.asarray(positions)]])).permute(0, 3, 1, 2)


def _collate(batch: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return batch if isinstance(batch, torch.Tensor) else torch.stack(batch)


class EpochOrder(Sampler[int]):
    """The order of one epoch, set by the trainer before it iterates (its own seeded generator draws
    it, so a run's batches do not depend on how the loader is built)."""

    def __init__(self, n: int) -> None:
        self.order = np.arange(n)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())


def _seed_worker(_worker: int) -> None:
    """timm's PIL augmentations draw from ``random`` / ``np.random``: seed them per worker from torch's seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def loader_workers(device: torch.device) -> int:
    """Worker processes for a device: decoding and augmenting beside a GPU; none on a CPU, where the
    workers would take the cores the model computes on (benchmarks/scale.py measures it)."""
    return min(8, max(1, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0


class Batches:
    """Batches of one split on ``device``: images normalised there, or a prefix cache's activations.

    ``prepare`` turns a CPU batch into the model's input (normalisation, dtype, memory format)."""

    def __init__(
        self,
        source: RowSource,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        *,
        seed: int = 0,
        workers: int | None = None,
    ) -> None:
        self.source, self.prepare, self.device = source, prepare, device
        self.workers = loader_workers(device) if workers is None else workers
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def iterate(self, order: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(positions, input on the device) for consecutive batches of ``order``."""
        sampler = EpochOrder(len(self.source))
        sampler.order = np.asarray(order)
        generator = torch.Generator().manual_seed(self.seed)
        loader = DataLoader(
            self.source,  # type: ignore[arg-type]  # a map-style dataset with __getitems__
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_collate,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker if self.workers else None,
            generator=generator,
        )
        for start, batch in zip(range(0, len(order), batch_size), loader):
            yield order[start : start + batch_size], self.prepare(batch.to(self.device, non_blocking=True))


def image_input(mean: torch.Tensor, std: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (0..255) or float (0..1) NCHW on the device -> the normalised float input, channels_last."""

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
        return x.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)

    return prepare
