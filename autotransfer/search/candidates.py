"""A candidate of the search: a backbone, cut at a tap, fed images of one resolution.

Stored in the Optuna study as its ``key`` (``"backbone@resolution/tap"``), so studies written by
earlier versions stay readable; code works with the typed value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Candidate:
    backbone: str
    resolution: int
    tap: str

    @property
    def key(self) -> str:
        """The string stored in a study's parameters and attributes."""
        return f"{self.backbone}@{self.resolution}/{self.tap}"

    @property
    def pair(self) -> str:
        """The (backbone, resolution) it shares features with: one forward pass serves all its taps."""
        return f"{self.backbone}@{self.resolution}"

    @classmethod
    def parse(cls, key: str) -> Candidate:
        """The inverse of ``key``; raises ValueError for a string that is not one."""
        backbone, rest = key.rsplit("@", 1)
        resolution, tap = rest.split("/", 1)
        return cls(backbone, int(resolution), tap)
