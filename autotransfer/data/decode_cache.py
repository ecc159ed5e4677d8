"""Decode every image once, at a given resize recipe, into an on-disk uint8 array.

Trials read pixels from a memory-mapped ``images.npy`` instead of decoding JPEGs again. The cache
entry is keyed by a fingerprint of the files (resolved path, size, modification time) and by the
recipe, so a changed, added or removed file, or another resolution, gives a new entry. Decoding
failures are stored too, so corrupt files are reported again without being re-read. Entries are
written to a temporary folder and renamed into place: a crash or a concurrent run never leaves a
half-written entry. Opening an entry marks its last use and holds it in use for the process's life
(data/cache_index.py: `autotransfer cache` lists, clears and evicts entries). The whole cache is safe
to delete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from autotransfer.data.cache_index import LAST_USED, enforce_limit, lease, record_source
from autotransfer.data.images import DecodedImage, ResizeRecipe, decode_file
from autotransfer.errors import AutoTransferError
from autotransfer.files import is_disk_full
from autotransfer.settings import CACHE_ENV, cache_dir

FORMAT_VERSION = 1


@dataclass
class DecodedImages:
    """Pixels of the decodable files, in file order (files that failed have a reason and no row)."""

    pixels: np.ndarray  # (n_ok_files, size, size, 3) uint8, memory-mapped
    records: list[dict]  # per file: content_hash, width, height, mode; or reason if it failed
    location: Path
    cache_hit: bool

    @property
    def ok(self) -> np.ndarray:
        return np.array([r.get("reason") is None for r in self.records], dtype=bool)


def files_fingerprint(paths: list[Path]) -> str:
    """Changes when any file is added, removed, renamed, rewritten or touched."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _source_folder(paths: list[Path]) -> str:
    """The folder the files came from (their deepest common folder), for `autotransfer cache`'s listing."""
    try:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else ""
    except ValueError:  # paths on different drives
        return ""


def _entry_dir(paths: list[Path], recipe: ResizeRecipe, root: Path | None, fingerprint: str | None = None) -> Path:
    base = (root or cache_dir()) / "decoded"
    return base / f"{(fingerprint or files_fingerprint(paths))[:24]}-{recipe.key()}-v{FORMAT_VERSION}"


def is_cached(paths: list[Path], recipe: ResizeRecipe, *, fingerprint: str | None = None) -> bool:
    """Whether ``decode_all`` would read ``paths`` at ``recipe`` from the cache (not decode them)."""
    return (_entry_dir(paths, recipe, None, fingerprint) / "records.json").exists()


def _load(entry: Path, paths: list[Path]) -> DecodedImages | None:
    if not lease(entry):  # marks the last use; removed meanwhile (cache clear): rebuild
        return None
    try:
        header = json.loads((entry / "records.json").read_text())
        records = header["records"]
        pixels = np.load(entry / "images.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError):
        return None  # incomplete or damaged: rebuild
    if len(records) != len(paths) or pixels.shape[0] != sum(r.get("reason") is None for r in records):
        return None
    if not header.get("source"):  # written before headers named the folder: `autotransfer cache` names it now
        record_source(entry, header, _source_folder(paths))
    return DecodedImages(pixels, records, entry, cache_hit=True)


def _record(result: DecodedImage | str) -> dict:
    if isinstance(result, str):
        return {"reason": result}
    return {"content_hash": result.content_hash, "width": result.width, "height": result.height, "mode": result.mode}


def _drop_failed_rows(staging: Path, pixels: np.ndarray, ok: list[bool]) -> None:
    """Rewrite images.npy with the decodable files only, so that row i is the i-th good file."""
    if all(ok):
        return
    keep = np.flatnonzero(ok)
    compact = np.lib.format.open_memmap(
        staging / "images.tmp.npy", mode="w+", dtype=np.uint8, shape=(len(keep),) + pixels.shape[1:]
    )
    for start in range(0, len(keep), 1024):  # in chunks: the dataset may not fit in memory
        compact[start : start + 1024] = pixels[keep[start : start + 1024]]
    compact.flush()
    os.replace(staging / "images.tmp.npy", staging / "images.npy")


def decode_all(
    paths: list[Path],
    recipe: ResizeRecipe,
    *,
    cache_root: Path | None = None,
    workers: int | None = None,
    show_progress: bool = True,
    fingerprint: str | None = None,
) -> DecodedImages:
    """Pixels for ``paths`` at ``recipe``: from the cache when it is there, else decoded now and cached.

    ``fingerprint``: ``files_fingerprint(paths)`` when the caller computed it already (one stat per file)."""
    entry = _entry_dir(paths, recipe, cache_root, fingerprint)
    cached = _load(entry, paths) if entry.exists() else None
    if cached is not None:
        return cached
    entry.parent.mkdir(parents=True, exist_ok=True)
    if entry.exists():  # damaged (e.g. a file deleted by hand): move it aside, then rebuild
        stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=entry.parent))
        with contextlib.suppress(OSError):  # another process moved it first
            os.rename(entry, stale / "entry")
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        shape = (len(paths), recipe.size, recipe.size, 3)
        pixels = np.lib.format.open_memmap(staging / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        records: list[dict] = []
        # PIL releases the GIL while decoding and resizing, so threads use every core.
        with (
            ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool,
            Progress(transient=True, disable=not show_progress) as progress,
        ):
            task = progress.add_task(f"Decoding {len(paths)} images at {recipe.size}px", total=len(paths))
            for row, result in enumerate(pool.map(lambda p: decode_file(p, recipe), paths, chunksize=16)):
                if isinstance(result, DecodedImage):
                    pixels[row] = result.pixels
                records.append(_record(result))
                progress.advance(task)
        pixels.flush()
        _drop_failed_rows(staging, pixels, [r.get("reason") is None for r in records])
        del pixels
        header = {"recipe": recipe.key(), "source": _source_folder(paths), "records": records}
        (staging / "records.json").write_text(json.dumps(header))
        (staging / LAST_USED).touch()
        try:
            os.rename(staging, entry)  # atomic; fails if a concurrent run finished first
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(error):
            raise AutoTransferError(
                "The disk is full: the decode cache could not be written.",
                where=str(entry.parent),
                fix=f"free some space, or point {CACHE_ENV} to a larger disk.",
            ) from error
        raise
    loaded = _load(entry, paths)
    if loaded is None:
        raise RuntimeError(f"decode cache entry {entry} could not be read back")
    loaded.cache_hit = False
    enforce_limit()  # AUTOTRANSFER_CACHE_LIMIT: least recently used entries go, never one in use (this one)
    return loaded
