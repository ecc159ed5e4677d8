"""Zero-cost transferability scores: rank (backbone, tap) candidates before any training.

- LogME (You et al., ICML 2021): the log marginal likelihood ("evidence") of a Bayesian linear
  model from the features to each one-hot target, maximised over its two precisions by the
  paper's fixed-point iteration, averaged over classes and divided by N. Higher is better.
- kNN accuracy: leave-one-out k-nearest-neighbour accuracy (cosine) on the features.
- H-score (Bao et al., 2019), with a Ledoit-Wolf shrunk covariance as in Ibrahim et al. (2022),
  which keeps it meaningful when features outnumber images.

Implemented here: scikit-learn has none of these; scipy gives the rank correlations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, weightedtau
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors

SCORES = ("logme", "knn", "hscore")


@dataclass(frozen=True)
class Evidence:
    """LogME for one target: evidence per sample at the optimal precisions alpha (prior) and beta (noise)."""

    value: float
    alpha: float
    beta: float


def _evidence(sigma: np.ndarray, z: np.ndarray, outside: float, alpha: float, beta: float, n: int) -> float:
    """log p(y | F, alpha, beta) of y = F w + noise, w ~ N(0, I/alpha), noise ~ N(0, I/beta).

    ``sigma``: all d eigenvalues of F^T F (zeros beyond rank); ``z``: y in the left singular basis;
    ``outside``: squared norm of the part of y outside the span of F.
    """
    d, t = len(sigma), alpha / beta
    s = sigma[: len(z)]
    m2 = float(np.sum(s * z**2 / (s + t) ** 2))  # |m|^2, m the posterior mean of w
    res2 = float(np.sum(z**2 * (t / (s + t)) ** 2)) + outside  # |F m - y|^2
    return (
        d / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - alpha / 2 * m2
        - beta / 2 * res2
        - 0.5 * float(np.sum(np.log(alpha + beta * sigma)))
        - n / 2 * math.log(2 * math.pi)
    )


def _maximise_evidence(
    u: np.ndarray, sigma: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-5
) -> Evidence:
    """The paper's fixed-point updates of alpha and beta, then the evidence per sample."""
    n = len(y)
    z = u.T @ y
    s = sigma[: len(z)]
    outside = max(float(y @ y - z @ z), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float(np.sum(s / (s + t)))
        m2 = float(np.sum(s * z**2 / (s + t) ** 2))
        res2 = float(np.sum(z**2 * (t / (s + t)) ** 2)) + outside
        alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
        if abs(alpha / beta - t) / t < tol:
            break
    return Evidence(_evidence(sigma, z, outside, alpha, beta, n) / n, alpha, beta)


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = np.zeros(f.shape[1])
    sigma[: len(s)] = s**2
    return u, sigma


def logme_evidence(features: np.ndarray, target: np.ndarray) -> Evidence:
    """LogME of one real-valued target (e.g. one class's 0/1 indicator)."""
    u, sigma = _spectrum(features)
    return _maximise_evidence(u, sigma, np.asarray(target, dtype=np.float64))


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean LogME over one-hot class targets (higher: the features explain the labels better)."""
    u, sigma = _spectrum(features)  # once, shared by every class
    return float(
        np.mean([_maximise_evidence(u, sigma, (labels == c).astype(np.float64)).value for c in np.unique(labels)])
    )


def _vote(row: np.ndarray) -> int:
    """Majority label of neighbours ordered nearest first; a tie goes to the label met first."""
    values, counts = np.unique(row, return_counts=True)
    tied = set(values[counts == counts.max()].tolist())
    return int(next(label for label in row if label in tied))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out kNN accuracy with cosine similarity (majority vote, ties to the nearest)."""
    f = np.asarray(features, dtype=np.float64)
    f = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)
    k = max(1, min(k, len(f) - 1))
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(f).kneighbors(f)
    votes = labels[neighbours[:, 1:]]  # column 0 is the sample itself
    predicted = np.array([_vote(row) for row in votes])
    return float((predicted == labels).mean())


def hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """tr(cov(f)^-1 cov(E[f | y])) with a shrunk cov(f): how much of the variance the classes explain."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    covariance = LedoitWolf(assume_centered=True).fit(f).covariance_
    class_means = np.zeros_like(f)
    for c in np.unique(labels):
        class_means[labels == c] = f[labels == c].mean(0)
    between = class_means.T @ class_means / len(f)
    return float(np.trace(np.linalg.solve(covariance, between)))


def all_scores(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"logme": logme(features, labels), "knn": knn_accuracy(features, labels), "hscore": hscore(features, labels)}


def rank_agreement(scores: list[float], truth: list[float]) -> dict[str, float]:
    """Kendall tau and weighted tau (top ranks count more) between a proxy and the true accuracy."""
    if len(scores) < 3 or len(set(truth)) < 2 or len(set(scores)) < 2:
        return {"kendall_tau": float("nan"), "weighted_tau": float("nan")}
    return {
        "kendall_tau": float(kendalltau(scores, truth).statistic),
        "weighted_tau": float(weightedtau(scores, truth).statistic),
    }
