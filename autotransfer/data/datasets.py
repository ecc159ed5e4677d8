"""The dataset the engine works on: indexed, decoded once at a resolution, and split."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autotransfer.data.conflicts import LabelConflict, describe_conflicts, label_conflicts
from autotransfer.data.decode_cache import decode_all
from autotransfer.data.image_size import check_image_size
from autotransfer.data.images import ResizeRecipe
from autotransfer.data.sources import (
    DatasetIndex,
    SkippedFile,
    check_classes,
    describe_skipped,
    index_dataset,
    split_indices,
)
from autotransfer.errors import AutoTransferError

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Decoded images (uint8, N x S x S x 3, memory-mapped), integer labels and a split per image."""

    root: Path
    layout: str
    classes: list[str]
    paths: list[Path]
    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    records: list[dict]
    skipped: list[SkippedFile]
    recipe: ResizeRecipe
    cache_hit: bool
    fingerprint: str  # of the files and the resize recipe: keys every cache built on this dataset
    conflicts: list[LabelConflict] = field(default_factory=list)  # same bytes in two classes (data/conflicts.py)

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def counts(self, split: str | None = None) -> dict[str, int]:
        mask = np.ones(len(self), bool) if split is None else self.splits == split
        return {c: int(((self.labels == i) & mask).sum()) for i, c in enumerate(self.classes)}


def load_dataset(  # noqa: PLR0913 (a public function: every option keyword-only, as in timm.create_model)
    source: str | os.PathLike | DatasetIndex,
    *,
    image_size: int = 128,
    resize_mode: str = "crop",
    interpolation: str = "bicubic",
    val_fraction: float = 0.2,
    seed: int = 0,
    cache_root: Path | None = None,
    show_progress: bool = True,
    fingerprint: str | None = None,
    warn: bool = True,
) -> Dataset:
    """Index ``source``, decode it (through the decode cache) and split it; warn about skipped files and
    label conflicts (``warn=False``: a caller that loads the same files again at another size, once said).

    ``fingerprint``: the files' fingerprint (decode_cache.files_fingerprint) of an index given as
    ``source``, when the caller has it: a run indexes and fingerprints its folder once."""
    check_image_size(image_size)
    if resize_mode not in ("crop", "squash"):
        raise AutoTransferError(f"resize_mode must be 'crop' or 'squash', got {resize_mode!r}.")
    index = source if isinstance(source, DatasetIndex) else index_dataset(source)
    recipe = ResizeRecipe(image_size, resize_mode, interpolation)
    decoded = decode_all(
        index.paths, recipe, cache_root=cache_root, show_progress=show_progress, fingerprint=fingerprint
    )
    ok = decoded.ok
    skipped = list(index.skipped) + [
        SkippedFile(str(p), r["reason"]) for p, r in zip(index.paths, decoded.records) if r.get("reason")
    ]
    if skipped and warn:
        log.warning(describe_skipped(skipped))
    labels = [label for label, good in zip(index.labels, ok) if good]
    check_classes(labels, str(index.root))
    emptied = sorted(set(index.labels) - set(labels))
    if emptied:
        raise AutoTransferError(
            f"No readable image left in class(es) {emptied}: every file there was skipped (see the list above).",
            where=str(index.root),
            fix="replace the unreadable files, or remove the class.",
        )
    classes = sorted(set(labels))
    label_ids = np.array([classes.index(label) for label in labels], dtype=np.int64)
    keep = np.flatnonzero(ok)
    given = [index.given_splits[i] for i in keep]
    records = [decoded.records[i] for i in keep]
    paths = [index.paths[i] for i in keep]
    conflicts = label_conflicts(paths, labels, records)
    if conflicts and warn:
        log.warning(describe_conflicts(conflicts))
    return Dataset(
        root=index.root,
        layout=index.layout,
        classes=classes,
        paths=paths,
        images=decoded.pixels,
        labels=label_ids,
        splits=split_indices(label_ids, given, val_fraction=val_fraction, seed=seed),
        records=records,
        skipped=skipped,
        recipe=recipe,
        cache_hit=decoded.cache_hit,
        fingerprint=decoded.location.name,
        conflicts=conflicts,
    )
