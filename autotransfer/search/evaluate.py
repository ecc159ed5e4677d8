"""How the chosen pipeline does, per class: predictions on the validation split (from the chosen
configuration trained on train only, so they are honest) and on the test split (from the final
pipeline), written as CSV for the report, and summarised with scikit-learn's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autotransfer.data.datasets import Dataset
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.files import write_text_atomic
from autotransfer.transfer.metrics import PROBABILITY_METRICS, classification_summary, score


def split_probabilities(pipeline: Pipeline, dataset: Dataset, split: str, batch_size: int = 64) -> np.ndarray:
    """(n_images of ``split``, n_classes) probabilities from the decoded images (the training recipe)."""
    net = pipeline.network()
    rows = dataset.indices(split)
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            pixels = np.asarray(dataset.images[rows[start : start + batch_size]])
            batch = torch.from_numpy(pixels).to(pipeline.device).permute(0, 3, 1, 2)
            out.append(torch.softmax(net(batch).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(dataset.classes)))


def write_predictions(path: Path, dataset: Dataset, split: str, probabilities: np.ndarray) -> None:
    """``path,label,predicted,confidence`` per image of ``split`` (class names; confidence of the prediction)."""
    rows = dataset.indices(split)
    classes = np.asarray(dataset.classes)
    predicted = probabilities.argmax(1)
    frame = pd.DataFrame(
        {
            "path": [str(dataset.paths[i]) for i in rows],
            "label": classes[dataset.labels[rows]],
            "predicted": classes[predicted],
            "confidence": probabilities[np.arange(len(rows)), predicted],
        }
    )
    write_text_atomic(path, frame.to_csv(index=False))


def evaluate_split(pipeline: Pipeline, dataset: Dataset, split: str, out: Path, metric: str = "accuracy") -> dict:
    """Predict ``split``, write ``out/predictions-<split>.csv``, return its classification summary; a
    ``metric`` that needs probabilities (roc_auc, log_loss: the run's, when it is one) is added under
    its name (log_loss as the loss itself, lower is better)."""
    probabilities = split_probabilities(pipeline, dataset, split)
    write_predictions(out / f"predictions-{split}.csv", dataset, split, probabilities)
    labels = dataset.labels[dataset.indices(split)]
    summary = classification_summary(labels, probabilities.argmax(1), dataset.classes)
    if metric in PROBABILITY_METRICS and len(np.unique(labels)) > 1:
        value = score(metric, labels, probabilities, len(dataset.classes))
        summary[metric] = -value if metric == "log_loss" else value  # score() maximises: log_loss negated
    return summary
