"""What the cache holds, and keeping it in bounds: list, clear, and evict least-recently-used entries.

One *entry* is a decode-cache folder (``decoded/<files fingerprint>-<recipe>-v1``: one dataset folder at
one resolution) together with the features computed from it (``features/<the same name>/``). Its last
use is the modification time of its ``last-used`` file, touched each time a process opens the entry
(data/decode_cache.py); the same file carries a shared ``flock`` for as long as that process lives, so
an entry in use is never removed: removal takes the exclusive lock without waiting, or skips the entry.
Weights and downloaded wheels are listed but never evicted nor cleared here: offline, they cannot
always be fetched again.

The size limit (``AUTOTRANSFER_CACHE_LIMIT=50GB``) counts decoded images and features only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from autotransfer.errors import AutoTransferError
from autotransfer.settings import CACHE_LIMIT_ENV, cache_dir

LAST_USED = "last-used"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_LEASES: dict[str, int] = {}  # entry folder -> open descriptor holding a shared lock, for the process's life


@dataclass(frozen=True)
class CacheEntry:
    """One dataset folder at one resolution: its decoded images and the features computed from them."""

    name: str  # the decode-cache folder's name (also the features folder's)
    dataset: str  # the folder its images came from ("" when the entry predates this record)
    recipe: str  # "224px-crop-bicubic"
    images: int
    decoded_bytes: int
    feature_bytes: int
    last_used: float  # seconds since the epoch
    in_use: bool

    @property
    def bytes(self) -> int:
        return self.decoded_bytes + self.feature_bytes


@dataclass(frozen=True)
class CacheListing:
    root: Path
    entries: list[CacheEntry]  # least recently used first
    other: dict[str, int]  # bytes of what is never evicted: "weights", "wheel-assets", ...

    @property
    def evictable_bytes(self) -> int:
        return sum(e.bytes for e in self.entries)


def parse_size(text: str, where: str = CACHE_LIMIT_ENV) -> int:
    """Bytes of "50GB", "500 MiB", "1.5TB" or a plain number of bytes."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text or "")
    if not found or found.group(2).lower() not in _UNITS:
        raise AutoTransferError(
            f"Cannot read the size {text!r}.", where=where, fix="write it like 50GB, 500MB or 2TiB."
        )
    return int(float(found.group(1)) * _UNITS[found.group(2).lower()])


def parse_age(text: str) -> float:
    """Seconds of "30d", "12h", "90m", "2w"."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*", text or "")
    if not found:
        raise AutoTransferError(
            f"Cannot read the age {text!r}.", where="{option}", fix="write it like 30d, 12h or 2w.", option="older_than"
        )
    return float(found.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[found.group(2)]


def format_bytes(count: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _folder_bytes(folder: Path) -> int:
    total = 0
    for current, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(current, name)).st_size
    return total


# ---------------------------------------------------------------------------------------------- use
def lease(entry: Path) -> bool:
    """Mark ``entry`` as used now and in use by this process (until it exits). False when the entry was
    removed meanwhile (the caller then rebuilds it)."""
    key = str(entry)
    if key in _LEASES:
        with contextlib.suppress(OSError):
            os.utime(entry / LAST_USED)
        return (entry / LAST_USED).exists()
    try:
        descriptor = os.open(entry / LAST_USED, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:  # a cache this user cannot write (shared, read-only): used as it is, a lock still taken
            descriptor = os.open(entry / LAST_USED, os.O_RDONLY)
        except OSError:
            return entry.is_dir()
    fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits only while a removal of this very entry is under way
    try:
        same = os.path.samestat(os.fstat(descriptor), os.stat(entry / LAST_USED))
    except OSError:
        same = False
    if not same:  # removed while we waited: the lock is on a file that is gone
        os.close(descriptor)
        return False
    with contextlib.suppress(OSError):
        os.utime(descriptor)
    _LEASES[key] = descriptor
    return True


def _try_exclusive(entry: Path, create: bool = True) -> int | None:
    """A descriptor holding the exclusive lock of ``entry`` (nobody uses it), or None (in use; or, without
    ``create``, an entry that no process of this version has opened)."""
    marker = entry / LAST_USED
    try:
        if not marker.exists() and not create:
            return None
        if not marker.exists():  # an entry written before last use was recorded: its write time stands in
            written = (entry / "records.json").stat().st_mtime
            marker.touch()
            os.utime(marker, (written, written))
        descriptor = os.open(marker, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


# ---------------------------------------------------------------------------------------------- listing
def _entry(folder: Path, features: Path) -> CacheEntry:
    try:
        header = json.loads((folder / "records.json").read_text())
    except (OSError, ValueError):
        header = {}
    marker = folder / LAST_USED if (folder / LAST_USED).exists() else folder / "records.json"
    try:
        last_used = marker.stat().st_mtime
    except OSError:
        last_used = 0.0
    free = _try_exclusive(folder, create=False)  # listing writes nothing
    if free is not None:
        os.close(free)
    recipe = folder.name.split("-", 1)[1].rsplit("-v", 1)[0] if "-" in folder.name else folder.name
    return CacheEntry(
        name=folder.name,
        dataset=str(header.get("source", "")),
        recipe=recipe,
        images=sum(r.get("reason") is None for r in header.get("records", [])),
        decoded_bytes=_folder_bytes(folder),
        feature_bytes=_folder_bytes(features / folder.name) if (features / folder.name).is_dir() else 0,
        last_used=last_used,
        in_use=(free is None and (folder / LAST_USED).exists()) or str(folder) in _LEASES,
    )


def _with_known_folders(entries: list[CacheEntry]) -> list[CacheEntry]:
    """An entry whose header names no dataset folder (written before headers did) takes the folder of an
    entry of the same files at another size: their names start with the same files fingerprint."""
    folders = {e.name.split("-", 1)[0]: e.dataset for e in entries if e.dataset}
    return [e if e.dataset else replace(e, dataset=folders.get(e.name.split("-", 1)[0], "")) for e in entries]


def record_source(entry: Path, header: dict, folder: str) -> None:
    """Name the dataset ``folder`` in the header of ``entry`` (an entry written before headers did, used
    again); a cache this user cannot write keeps its header as it is."""
    if not folder:
        return
    staging = entry / f".records.{os.getpid()}.json"
    try:
        staging.write_text(json.dumps({**header, "source": folder}))
        os.replace(staging, entry / "records.json")  # atomic: readers see the old header or the new one
    except OSError:
        with contextlib.suppress(OSError):
            staging.unlink()


def list_cache(root: Path | None = None) -> CacheListing:
    root = root or cache_dir()
    decoded, features = root / "decoded", root / "features"
    folders = (
        sorted(p for p in decoded.iterdir() if p.is_dir() and not p.name.startswith(".")) if decoded.is_dir() else []
    )
    entries = _with_known_folders(sorted((_entry(f, features) for f in folders), key=lambda e: (e.last_used, e.name)))
    known = {f.name for f in folders}
    orphans = [p for p in features.iterdir() if p.is_dir() and p.name not in known] if features.is_dir() else []
    kept = (
        sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("decoded", "features"))
        if root.is_dir()
        else []
    )
    other = {p.name: _folder_bytes(p) for p in kept}
    if orphans:  # features whose decoded images were deleted by hand: cleared with everything else
        other["features without decoded images"] = sum(_folder_bytes(p) for p in orphans)
    return CacheListing(root, entries, other)


# ---------------------------------------------------------------------------------------------- removal
def remove_entry(entry: CacheEntry, root: Path | None = None) -> bool:
    """Remove an entry's decoded images and features unless a process uses it; True when removed."""
    root = root or cache_dir()
    folder = root / "decoded" / entry.name
    if str(folder) in _LEASES:
        return False
    descriptor = _try_exclusive(folder)
    if descriptor is None:
        return False
    try:
        trash = Path(tempfile.mkdtemp(prefix=".removing-", dir=folder.parent))
        os.rename(folder, trash / "entry")  # atomic: a reader either finds the whole entry or none
        if (root / "features" / entry.name).is_dir():
            os.rename(root / "features" / entry.name, trash / "features")
    finally:
        os.close(descriptor)
    shutil.rmtree(trash, ignore_errors=True)
    return True


@dataclass(frozen=True)
class Removal:
    removed: list[CacheEntry]
    kept_in_use: list[CacheEntry]

    @property
    def freed(self) -> int:
        return sum(e.bytes for e in self.removed)


def clear(root: Path | None = None, older_than: float | None = None) -> Removal:
    """Remove every entry (last used more than ``older_than`` seconds ago, when given) not in use."""
    root = root or cache_dir()
    now = time.time()
    removed, busy = [], []
    for entry in list_cache(root).entries:
        if older_than is not None and now - entry.last_used < older_than:
            continue
        (removed if remove_entry(entry, root) else busy).append(entry)
    if older_than is None and (root / "features").is_dir():
        known = {p.name for p in (root / "decoded").iterdir()} if (root / "decoded").is_dir() else set()
        for orphan in (p for p in (root / "features").iterdir() if p.name not in known):
            shutil.rmtree(orphan, ignore_errors=True)
    return Removal(removed, busy)


def cache_limit() -> int | None:
    value = os.environ.get(CACHE_LIMIT_ENV, "").strip()
    return parse_size(value) if value else None


def enforce_limit(root: Path | None = None, limit: int | None = None) -> Removal:
    """Evict least-recently-used entries not in use until decoded images and features fit ``limit``
    (default: ``AUTOTRANSFER_CACHE_LIMIT``; nothing happens without one)."""
    limit = cache_limit() if limit is None else limit
    if limit is None:
        return Removal([], [])
    listing = list_cache(root)
    total = listing.evictable_bytes
    removed, busy = [], []
    for entry in listing.entries:  # least recently used first
        if total <= limit:
            break
        if remove_entry(entry, listing.root):
            removed.append(entry)
            total -= entry.bytes
        else:
            busy.append(entry)
    return Removal(removed, busy)


def entry_bytes(root: Path | None = None) -> dict[str, int]:
    """Bytes of each entry (decoded images and their features) by entry name."""
    root = root or cache_dir()
    decoded, features = root / "decoded", root / "features"
    folders = [p for p in decoded.iterdir() if p.is_dir() and not p.name.startswith(".")] if decoded.is_dir() else []
    return {f.name: _folder_bytes(f) + _folder_bytes(features / f.name) for f in folders}


def own_growth(before: dict[str, int], root: Path | None = None) -> int:
    """What the entries this process opened (its leases) grew by since ``before`` (``entry_bytes``), a new
    entry counted whole: other processes' entries in a shared cache do not count (`fit`'s summary line)."""
    root = root or cache_dir()
    after = entry_bytes(root)
    own = {Path(folder).name for folder in _LEASES if Path(folder).parent == root / "decoded"}
    return sum(after[name] - before.get(name, 0) for name in own if name in after)
