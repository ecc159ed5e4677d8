"""Label conflicts: the same image (the same bytes) filed under two or more classes.

A plain duplicate only weighs an image twice; a conflict teaches the model two answers for one
input and caps the accuracy any model can reach, so it is reported as a warning by every command
that loads data (`fit`, `inspect`, `profile`), naming the files and their classes. The decode
cache already stores a content hash per file (docs/design.md), so finding them costs nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabelConflict:
    """Files with the same bytes (``paths``) under different classes (``labels``, one per path)."""

    content_hash: str
    paths: tuple[str, ...]
    labels: tuple[str, ...]

    def describe(self) -> str:
        return " = ".join(f"{path} ({label})" for path, label in zip(self.paths, self.labels))

    def to_json(self) -> dict:
        return {"paths": list(self.paths), "labels": list(self.labels)}


def label_conflicts(paths: list[Path], labels: list[str], records: list[dict]) -> list[LabelConflict]:
    """Groups of identical files (``records[i]["content_hash"]``) whose labels differ, in file order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        if record.get("content_hash"):
            groups[record["content_hash"]].append(i)
    return [
        LabelConflict(digest, tuple(str(paths[i]) for i in members), tuple(str(labels[i]) for i in members))
        for digest, members in groups.items()
        if len({labels[i] for i in members}) > 1
    ]


def describe_conflicts(conflicts: list[LabelConflict], limit: int = 5) -> str:
    """The warning text: how many, the first ``limit`` with their files and classes, and what to do."""
    lines = [
        f"{len(conflicts)} label conflict(s): the same image (same bytes) is in more than one class; a model "
        "cannot get both right. Keep each image in its one class:"
    ]
    lines += [f"  {conflict.describe()}" for conflict in conflicts[:limit]]
    if len(conflicts) > limit:
        lines.append(f"  ... and {len(conflicts) - limit} more")
    return "\n".join(lines)
