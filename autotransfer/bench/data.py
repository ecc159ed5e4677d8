"""Per-seed train/test folders for a suite's datasets.

The test split is drawn first from each class (seeded), so for one seed every regime and every
contender is scored on the same held-out images, and no contender's search ever sees them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import numpy as np

from autotransfer.bench.suite import DatasetSpec
from autotransfer.data.offline_datasets import build
from autotransfer.data.sources import index_dataset
from autotransfer.errors import AutoTransferError


def split_folders(spec: DatasetSpec, per_class: int, seed: int, root: Path) -> tuple[Path, Path]:
    """``(train_dir, test_dir)``: ImageFolders with ``per_class`` and ``spec.test_per_class`` images per class."""
    if spec.path is None:
        folder = build(spec.name, root, per_class=per_class, test_per_class=spec.test_per_class, seed=seed)
    else:
        folder = _link_subset(spec, per_class, seed, root)
    return folder / "train", folder / "test"


def _link_subset(spec: DatasetSpec, per_class: int, seed: int, root: Path) -> Path:
    """A user's dataset (any layout ``fit`` reads) subsampled by symbolic links: no image is copied."""
    target = root / f"{spec.name}-{per_class}-test{spec.test_per_class}-s{seed}"
    if (target / ".complete").exists():
        return target
    index = index_dataset(spec.path)
    labels = np.asarray(index.labels)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    for name in index.classes:
        members = rng.permutation(np.flatnonzero(labels == name))
        if len(members) < spec.test_per_class + 2:
            shutil.rmtree(staging)
            raise AutoTransferError(
                f"Class {name!r} of {spec.name} has {len(members)} images: fewer than test_per_class "
                f"({spec.test_per_class}) + 2 for training.",
                where=str(spec.path),
                fix="lower test_per_class in the suite, or drop the class.",
            )
        for split, rows in (
            ("test", members[: spec.test_per_class]),
            ("train", members[spec.test_per_class : spec.test_per_class + per_class]),
        ):
            folder = staging / split / _folder_name(name)
            folder.mkdir(parents=True, exist_ok=True)
            for row in rows:
                source = Path(index.paths[row]).resolve()
                os.symlink(source, folder / f"{row:06d}-{source.name}")
    (staging / ".complete").write_text(f"{spec.path} per_class={per_class} seed={seed}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _folder_name(label: str) -> str:
    """A CSV label as one folder name that stays inside its parent ('../x' and '..' cannot climb out)."""
    name = quote(label, safe=" ()[]{}+,;=@&-_~")
    return name if name not in (".", "..") and not name.startswith(".") else "%2E" + name[1:]
