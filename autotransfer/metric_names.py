"""The metric names a run may ask for, without transfer/metrics.py's numpy and scikit-learn imports:
the CLI checks ``--metric`` with them before any heavy import."""

from __future__ import annotations

LABEL_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")  # computable from hard predictions
PROBABILITY_METRICS = ("roc_auc", "log_loss")  # need class probabilities
METRICS = LABEL_METRICS + PROBABILITY_METRICS
