"""Rows of cached features read on demand: a split of one tap's memory-mapped (N x C) features, or of
several taps side by side (a combined tap), without copying the split or stacking the taps in RAM.

The probes select on a subsample and train minibatch heads batch by batch (transfer/probes.py,
torch_heads.py): with the split given as ``FeatureRows`` only those rows are ever read. numpy has no
lazy row-and-column view over several memory maps (fancy indexing copies, ``np.hstack`` copies every
row), hence this small class; ``np.asarray`` on it reads every row (for full-batch solvers, whose rows
fit_probe bounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from autotransfer.data.datasets import Dataset
    from autotransfer.models.zoo import Backbone

READ_ROWS = 8192  # rows read at a time by `chunks` (a predict or a statistic over every row)


@dataclass(frozen=True)
class FeatureRows:
    """Rows ``index`` of the column blocks ``parts`` (each N x C_i, e.g. memory maps), seen as one
    (len(index) x sum C_i) float32 matrix: indexing it (an int array or a slice of positions) reads
    those rows of every part and puts them side by side."""

    parts: tuple[np.ndarray, ...]
    index: np.ndarray

    @classmethod
    def of(cls, parts: np.ndarray | Sequence[np.ndarray], index: np.ndarray | None = None) -> FeatureRows:
        """``index`` (default: every row) of one array or of several side by side."""
        parts = (parts,) if isinstance(parts, np.ndarray) else tuple(parts)
        return cls(parts, np.arange(len(parts[0])) if index is None else np.asarray(index))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), sum(p.shape[1] for p in self.parts)

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows) -> np.ndarray:
        """The rows at positions ``rows`` (an int array, a boolean mask or a slice), read into RAM."""
        wanted = self.index[rows]
        order = np.argsort(wanted, kind="stable")  # a memory map is read forwards
        read = [np.asarray(p[wanted[order]], dtype=np.float32) for p in self.parts]
        values = read[0] if len(read) == 1 else np.hstack(read)
        out = np.empty_like(values)
        out[order] = values
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype, copy=False)

    def take(self, rows: np.ndarray) -> FeatureRows:
        """The rows at positions ``rows``, still unread."""
        return FeatureRows(self.parts, self.index[rows])

    def concat(self, other: FeatureRows) -> FeatureRows:
        """These rows, then ``other``'s (the same parts), still unread."""
        return FeatureRows(self.parts, np.concatenate([self.index, other.index]))


def chunks(x: np.ndarray | FeatureRows):
    """``x`` read ``READ_ROWS`` rows at a time (float32 arrays): a pass over every row in bounded memory."""
    rows = READ_ROWS
    for start in range(0, len(x), rows):
        yield np.asarray(x[start : start + rows], dtype=np.float32)


def concat_rows(a: np.ndarray | FeatureRows, b: np.ndarray | FeatureRows) -> np.ndarray | FeatureRows:
    """``a``'s rows then ``b``'s: unread when both are FeatureRows of the same parts, else in RAM."""
    same = isinstance(a, FeatureRows) and isinstance(b, FeatureRows) and len(a.parts) == len(b.parts)
    if same and all(p is q for p, q in zip(a.parts, b.parts)):
        return a.concat(b)
    return np.concatenate([np.asarray(a), np.asarray(b)])


def tap_rows(dataset: Dataset, backbone: Backbone, tap: str, **extract: Any) -> FeatureRows:
    """Every row of ``tap``'s pooled features (N x C, dataset order), a combined tap's parts
    (``Backbone.tap_parts``) side by side as they are read, never stacked in RAM. ``extract``: keyword
    options of models.features.extract_features (pooling, bf16, device, ...); cached parts are only read."""
    from autotransfer.models.features import extract_features

    parts = [p.name for p in backbone.tap_parts(tap)]
    found = extract_features(dataset, backbone, parts, show_progress=False, **extract)
    return FeatureRows.of([found[p] for p in parts])
