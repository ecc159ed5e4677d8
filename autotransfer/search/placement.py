"""The cheap stage corrects the profile: the recipe's question asked of the probes themselves.

"Are the top features still relevant?" is measured directly: the best probe on the CNN codes (the
``head`` tap) against the best probe on a lower tap, with a no-transfer baseline (a logistic
regression on raw pixels) to tell whether the pretrained features help at all. The data is placed in
the matrix again (its size axis as the profile measured it, its similar/different axis from this
evidence) and the fine-tuning stage is seeded from the corrected quadrant.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from autotransfer.data.datasets import Dataset
from autotransfer.errors import written_by_another_version
from autotransfer.models.zoo import COMBINED_TAP
from autotransfer.search.records import TrialRecord
from autotransfer.transfer.metrics import score
from autotransfer.transfer.profile import Prior
from autotransfer.transfer.strategies import QUADRANT_STRATEGIES

PIXELS = 24  # side of the grey thumbnails of the pixel baseline
BASELINE_TRAIN, BASELINE_VAL = 4000, 2000  # images the baseline fits and scores on at most (seeded samples)
TIE = 0.01  # the CNN codes count as "still relevant" within this of the best lower tap


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where the probes place the data in the strategy matrix (``profile.json``'s ``measured``)."""

    quadrant: str  # "large-different"
    a_priori: str | None  # the profile's quadrant
    differs: bool
    head_score: float  # the best probe on the CNN codes (the run's metric)
    mid_score: float  # the best probe on a single lower tap
    pixel_score: float | None  # the no-transfer baseline on raw pixels
    strategies: tuple[str, ...]  # the quadrant's, best first (transfer/strategies.py)
    rationale: str

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "strategies": list(self.strategies)}

    @classmethod
    def from_json(cls, document: dict) -> Placement:
        known = {f.name for f in dataclasses.fields(cls)}
        if set(document) != known:
            raise written_by_another_version("measured placement (profile.json)", sorted(set(document) ^ known))
        return cls(**{**document, "strategies": tuple(document["strategies"])})


def pixel_baseline(dataset: Dataset, metric: str, seed: int = 0) -> float:
    """``metric`` on val of a logistic regression on ``PIXELS`` x ``PIXELS`` grey pixels (train split).

    Fit on at most ``BASELINE_TRAIN`` train images and scored on at most ``BASELINE_VAL`` val images
    (seeded samples): its cost stays within run.PLACEMENT_SECONDS whatever the dataset's size."""

    def grey(rows: np.ndarray) -> np.ndarray:
        images = [Image.fromarray(np.asarray(dataset.images[i])).convert("L").resize((PIXELS, PIXELS)) for i in rows]
        return np.stack([np.asarray(image, dtype=np.float32).ravel() / 255.0 for image in images])

    rng = np.random.default_rng(seed)
    train, val = dataset.indices("train"), dataset.indices("val")
    train = np.sort(rng.choice(train, BASELINE_TRAIN, replace=False)) if len(train) > BASELINE_TRAIN else train
    val = np.sort(rng.choice(val, BASELINE_VAL, replace=False)) if len(val) > BASELINE_VAL else val
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped solver is still a valid baseline
        model.fit(grey(train), dataset.labels[train])
    proba = np.zeros((len(val), len(dataset.classes)))
    proba[:, model.classes_] = model.predict_proba(grey(val))
    return score(metric, dataset.labels[val], proba, len(dataset.classes))


def measured_placement(
    a_priori: str | None, probe_records: list[TrialRecord], pixel_score: float | None
) -> Placement | None:
    """The quadrant from the probes (``None`` without both a head-tap and a lower-tap probe).

    ``a_priori``: the profile's quadrant (its size half is kept); ``probe_records``: finished
    probe trials (``tap``, ``val_score``); ``pixel_score``: the no-transfer baseline on the same metric.
    """
    # single taps only: a combined tap ("a+b+head", ranking.py) holds the codes and lower taps alike
    scored = [r for r in probe_records if r.val_score is not None and r.tap and COMBINED_TAP not in r.tap]
    head = max((r.val_score for r in scored if r.tap == "head"), default=None)
    mid = max((r.val_score for r in scored if r.tap != "head"), default=None)
    if head is None or mid is None:
        return None
    size = (a_priori or "small-different").split("-")[0]
    # the words follow the quadrant: features no better than raw pixels place the data "different" whatever
    # the head-vs-lower-tap comparison says, so that comparison's verdict is not printed beside it
    beaten_by_pixels = pixel_score is not None and max(head, mid) <= pixel_score
    similar = head >= mid - TIE and not beaten_by_pixels
    quadrant = f"{size}-{'similar' if similar else 'different'}"
    codes = f"CNN codes {head:.3f} vs best lower tap {mid:.3f}"
    if beaten_by_pixels:
        words = (f"{codes}, neither above the no-transfer pixel baseline {pixel_score:.3f}: the pretrained "
                 "features do not beat raw pixels, the data is far from ImageNet (different)")  # fmt: skip
    else:
        words = f"{codes}: the top features are " + (
            "still relevant (similar)" if similar else "too ImageNet-specific (different)"
        )
        if pixel_score is not None:
            words += f"; no-transfer pixel baseline {pixel_score:.3f}"
    return Placement(
        quadrant=quadrant,
        a_priori=a_priori,
        differs=quadrant != a_priori,
        head_score=head,
        mid_score=mid,
        pixel_score=pixel_score,
        strategies=QUADRANT_STRATEGIES[quadrant],
        rationale=words,
    )


def corrected_prior(prior: Prior, placement: Placement | None) -> Prior:
    """The profile's prior with its strategies taken from the measured quadrant (when there is one)."""
    return prior if placement is None else dataclasses.replace(prior, strategies=tuple(placement.strategies))
