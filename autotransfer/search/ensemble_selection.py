"""Greedy ensemble selection with replacement (Caruana et al., "Ensemble Selection from Libraries of
Models", ICML 2004; AutoGluon's ``WeightedEnsembleModel`` does the same on out-of-fold predictions).

Pure functions of validation probabilities: start from nothing, add at each round the member (repeats
allowed: a member added twice weighs twice) whose addition makes the averaged probabilities score best,
and keep the round with the best score. Ties go to the earlier member (the list is best-first), so an
ensemble that scores no better than the best member alone comes out as that member alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ROUNDS = 25  # AutoGluon's ensemble_size default


@dataclass(frozen=True)
class EnsembleChoice:
    """Member indices with weights (summing to 1) and the validation score of their average."""

    weights: dict[int, float]
    score: float
    single_score: float  # the best member alone, scored the same way

    @property
    def members(self) -> list[int]:
        return sorted(self.weights)

    def gain(self) -> float:
        return self.score - self.single_score


def greedy_selection(
    probabilities: list[np.ndarray], scorer: Callable[[np.ndarray], float], rounds: int = ROUNDS
) -> EnsembleChoice:
    """``probabilities``: each member's (n_val, n_classes) validation probabilities, best member first;
    ``scorer``: higher is better. Returns the best round's weights."""
    if not probabilities:
        raise ValueError("no members to select from")
    singles = [scorer(p) for p in probabilities]
    counts = np.zeros(len(probabilities), dtype=int)
    total = np.zeros_like(probabilities[0], dtype=np.float64)
    best_score, best_counts = -np.inf, counts.copy()
    for _ in range(rounds):
        n = counts.sum() + 1
        scores = [scorer((total + p) / n) for p in probabilities]
        pick = int(np.argmax(scores))  # the first of equals
        counts[pick] += 1
        total += probabilities[pick]
        if scores[pick] > best_score:
            best_score, best_counts = scores[pick], counts.copy()
    weights = {int(i): float(c / best_counts.sum()) for i, c in enumerate(best_counts) if c}
    return EnsembleChoice(weights, float(best_score), float(max(singles)))


def worth_it(choice: EnsembleChoice, n_val: int) -> bool:
    """Whether the ensemble beats the best single member: by at least one validation image's worth of
    score (the same images chose its weights, so a smaller gain is likely noise) and with two members or more."""
    return len(choice.weights) > 1 and choice.gain() >= 1.0 / max(n_val, 1) - 1e-12
