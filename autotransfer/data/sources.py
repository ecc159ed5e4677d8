"""Image sources: find the labelled images a user points us to, and split them deterministically.

Three layouts are accepted:
- an ImageFolder: ``DATA/<class>/<image>`` (sub-folders inside a class are walked too);
- split folders: ``DATA/train/<class>/...`` and optionally ``val/`` (or ``valid``/``validation``)
  and ``test/``;
- a CSV with ``path,label`` columns (paths relative to the CSV; an optional ``split`` column).

Indexing only lists files; decoding (and finding which files are corrupt) is the decode cache's
job. Files that are not images, or cannot be used, become ``SkippedFile`` entries with a reason.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autotransfer.data.images import IMAGE_EXTENSIONS
from autotransfer.errors import AutoTransferError

log = logging.getLogger(__name__)

SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class DatasetIndex:
    """The files of a dataset with their labels and given splits (None where no split was given)."""

    root: Path
    layout: str  # "imagefolder" | "split-folders" | "csv"
    paths: list[Path]
    labels: list[str]
    given_splits: list[str | None]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.paths)


def walk_images(folder: Path, skipped: list[SkippedFile]) -> list[Path]:
    """Every image file below ``folder``, in a stable order; follows symbolic links (to folders and files)
    but visits a folder reached twice (a link loop) once. Every command lists folders with this walk."""
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for current, dirs, files in os.walk(
        folder,
        followlinks=True,
        onerror=lambda e: skipped.append(SkippedFile(str(e.filename), f"unreadable folder ({e.strerror})")),
    ):
        real = os.path.realpath(current)
        if real in seen_dirs:  # a symlink loop, or the same folder linked twice
            skipped.append(SkippedFile(current, "folder already visited (symlink loop)"))
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(current) / name
            if name in _IGNORED_NAMES or name.startswith("."):  # hidden files are never meant as data
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(SkippedFile(str(path), f"not an image file (extension {path.suffix or 'none'!r})"))
            elif not path.exists():
                skipped.append(SkippedFile(str(path), "broken symlink"))
            elif not path.is_file():
                skipped.append(SkippedFile(str(path), "not a regular file (a pipe, socket or device)"))
            else:
                found.append(path)
    return found


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _index_imagefolder(folder: Path, split: str | None, index: DatasetIndex) -> None:
    classes = _class_dirs(folder)
    for loose in sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in _IGNORED_NAMES
    ):
        index.skipped.append(SkippedFile(str(loose), "file outside any class folder"))
    for class_dir in classes:
        images = walk_images(class_dir, index.skipped)
        if not images:
            raise AutoTransferError(
                f"Class {class_dir.name!r} has no image files.",
                where=str(class_dir),
                fix="add images to it, or remove the folder if it is not a class.",
            )
        index.paths += images
        index.labels += [class_dir.name] * len(images)
        index.given_splits += [split] * len(images)


def _split_layout(root: Path) -> dict[str, Path] | None:
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    if "train" not in subdirs or not set(subdirs) <= set(SPLIT_DIRS):
        return None
    return {SPLIT_DIRS[name]: path for name, path in subdirs.items()}


def _index_csv(csv_path: Path, index: DatasetIndex) -> None:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise AutoTransferError(
            f"Cannot read the CSV: {error}",
            where=str(csv_path),
            fix="give a UTF-8 CSV file with a header line 'path,label'.",
        ) from error
    missing = {"path", "label"} - set(columns)
    if missing:
        raise AutoTransferError(
            f"The CSV lacks the column(s) {sorted(missing)} (it has {columns}).",
            where=str(csv_path),
            fix="add a header line with 'path,label' (and optionally 'split').",
        )
    unknown = sorted(set(columns) - {"path", "label", "split"})
    if unknown:
        log.warning("Ignoring unknown CSV column(s) %s in %s", unknown, csv_path)
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}:{line}"
        if not row.get("path") or not row.get("label"):
            index.skipped.append(SkippedFile(where, "CSV row without a path or label"))
            continue
        path = csv_path.parent / row["path"]
        split = SPLIT_DIRS.get(row.get("split", "").lower()) if row.get("split") else None
        if row.get("split") and split is None:
            raise AutoTransferError(
                f"Unknown split {row['split']!r}.",
                where=where,
                fix="use train, val or test in the 'split' column, or leave it empty.",
            )
        key = os.path.realpath(path)
        if key in seen:
            previous = seen[key]
            if index.labels[previous] != row["label"]:
                raise AutoTransferError(
                    f"{row['path']} is listed twice with different labels "
                    f"({index.labels[previous]!r} and {row['label']!r}).",
                    where=where,
                    fix="keep one row per image.",
                )
            index.skipped.append(SkippedFile(where, f"duplicate row for {row['path']}"))
            continue
        if not path.is_file():
            index.skipped.append(SkippedFile(where, f"missing file {row['path']}"))
            continue
        seen[key] = len(index.paths)
        index.paths.append(path)
        index.labels.append(row["label"])
        index.given_splits.append(split)


def check_data_path(source: str | os.PathLike) -> Path:
    """``source`` as a path, or one clear error when it does not exist (cheap: `fit` asks before any import)."""
    root = Path(source).expanduser()
    if not root.exists():
        raise AutoTransferError(
            f"The dataset path does not exist: {root}",
            where=str(root),
            fix="give a folder of class sub-folders, or a CSV with path,label columns.",
        )
    return root


def index_dataset(source: str | os.PathLike) -> DatasetIndex:
    """List the images and labels of ``source`` (folder or CSV); raise a clear error if unusable."""
    root = check_data_path(source)
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise AutoTransferError(
                f"{root.name} is a file but not a CSV.",
                where=str(root),
                fix="give a folder of class sub-folders, or a .csv with path,label columns.",
            )
        index = DatasetIndex(root, "csv", [], [], [])
        _index_csv(root, index)
    else:
        splits = _split_layout(root)
        index = DatasetIndex(root, "split-folders" if splits else "imagefolder", [], [], [])
        if splits:
            for split, folder in sorted(splits.items()):
                _index_imagefolder(folder, split, index)
        else:
            _index_imagefolder(root, None, index)
    check_classes(index.labels, str(root))
    return index


def check_classes(labels: list[str], where: str) -> None:
    """At least two classes, each with at least one image, or a clear error."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no labelled images"
        raise AutoTransferError(
            f"Need at least 2 classes of images, found {found}.",
            where=where,
            fix="put each class's images in its own sub-folder (DATA/<class>/<image>), "
            "or give a CSV with path,label columns.",
        )


def split_indices(
    labels: np.ndarray, given: list[str | None], *, val_fraction: float = 0.2, seed: int = 0
) -> np.ndarray:
    """A split name per sample: given splits are kept; the rest is split train/val per class.

    Written here rather than with scikit-learn's stratified splitters because those refuse classes
    with a single image, which real folders have; here such an image simply stays in train.
    Given test samples are never moved. If a val split is given, no other sample becomes val.
    """
    if not 0.0 < val_fraction < 1.0:
        raise AutoTransferError(
            f"{{option}} must be between 0 and 1, got {val_fraction}.", where="{option}",
            fix="give a share such as 0.2.", option="val_fraction",
        )  # fmt: skip
    splits = np.array([s or "train" for s in given], dtype=object)
    if any(s == "val" for s in given):
        return splits
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero((labels == label) & (splits == "train"))
        if len(members) < 2:
            continue
        n_val = min(len(members) - 1, max(1, int(round(val_fraction * len(members)))))
        splits[rng.permutation(members)[:n_val]] = "val"
    return splits


def describe_skipped(skipped: list[SkippedFile], limit: int = 10) -> str:
    """A warning text that lists skipped files (the first ``limit``) and counts them by reason."""
    by_reason = Counter(s.reason.split(" (")[0] for s in skipped)
    lines = [f"Skipped {len(skipped)} file(s): " + ", ".join(f"{n} {r}" for r, n in by_reason.most_common())]
    lines += [f"  {s.path}: {s.reason}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)
