"""`cache list`'s table rows from the cache's entries (data/cache_index.py): one row per dataset folder and
size, and one summary row for every entry whose folder was never recorded.

An entry is a folder's files at one size, keyed by the files' fingerprint; a folder whose files changed
between runs has one entry per version, which would be rows that read the same. Entries written before
headers named their folder cannot be told apart, so listing them one by one says nothing: a user at a
shared cache saw 36 "(not recorded)" rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from autotransfer.data.cache_index import CacheEntry


@dataclass(frozen=True, kw_only=True)
class CacheRow:
    """One row of the table: ``entries`` cache entries of one dataset folder at one size (``folder`` and
    ``recipe`` set), or every entry whose folder is not recorded (both None)."""

    folder: str | None
    recipe: str | None
    entries: int
    images: int
    decoded_bytes: int
    feature_bytes: int
    last_used: float  # the latest use among the entries
    in_use: bool

    @property
    def label(self) -> str:
        """The dataset-folder cell: the folder (and how many versions of its files are cached), or what the
        summary row holds."""
        if self.folder is None:
            return f"(folder not recorded: {self.entries} entr{'y' if self.entries == 1 else 'ies'})"
        return self.folder + (f" ({self.entries} versions of its files)" if self.entries > 1 else "")


def cache_rows(entries: Iterable[CacheEntry]) -> list[CacheRow]:
    """The rows of ``entries``: one per (dataset folder, size), least recently used first as the listing is,
    then the entries without a recorded folder in one row."""
    groups: dict[tuple[str, str] | None, list[CacheEntry]] = {}
    for entry in entries:
        groups.setdefault((entry.dataset, entry.recipe) if entry.dataset else None, []).append(entry)
    rows = [_row(key, members) for key, members in groups.items() if key is not None]
    rows.sort(key=lambda row: row.last_used)
    return rows + ([_row(None, groups[None])] if None in groups else [])


def _row(key: tuple[str, str] | None, members: list[CacheEntry]) -> CacheRow:
    folder, recipe = key if key is not None else (None, None)
    return CacheRow(
        folder=folder,
        recipe=recipe,
        entries=len(members),
        images=sum(e.images for e in members),
        decoded_bytes=sum(e.decoded_bytes for e in members),
        feature_bytes=sum(e.feature_bytes for e in members),
        last_used=max(e.last_used for e in members),
        in_use=any(e.in_use for e in members),
    )
