"""Predictions as a stream: inputs decoded, classified and handed back batch by batch, in input order.

At most two batches are decoded at a time (the one being classified and the next, decoded by a thread
pool meanwhile: PIL releases the GIL), each image reduced to the network's pixels as soon as it is
decoded, so memory does not grow with the number of inputs. ``Pipeline.predictions``,
``predict_proba`` and the ``predict`` command all read this stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autotransfer.deploy.predict_inputs import Source, pixels_of

if TYPE_CHECKING:
    from autotransfer.deploy.pipeline import Pipeline

BATCH_SIZE = 32


@dataclass
class Prediction:
    """One input's result: class probabilities, or why it could not be read."""

    name: str
    probabilities: np.ndarray | None
    error: str | None = None


def stream_predictions(
    pipeline: Pipeline,
    sources: list[Source],
    *,
    size: str | int = "native",
    reduce: str = "mean",
    batch_size: int = BATCH_SIZE,
    draft: bool = True,
) -> Iterator[Prediction]:
    """One Prediction per source, in order, computed ``batch_size`` inputs at a time.

    ``size``: "native" resizes every image as in training (batched); "original" keeps each image's
    size and aspect ratio, its shorter side held between the training size and ``ORIGINAL_MAX_SCALE``
    times it (deploy/predict_size.py); an int sets the shorter side (one image per forward pass: sizes
    differ). ``draft``: decode JPEGs at a reduced scale near the size needed.
    """
    keep_aspect = False if size == "native" else pipeline.shorter_side(size)
    net = pipeline.network(reduce)
    recipe = pipeline.recipe
    workers = min(8, os.cpu_count() or 1)
    if keep_aspect is not False:  # one image per forward pass, each possibly at full size: a short lookahead
        batch_size = min(batch_size, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(start: int) -> list[Future]:
            chunk = sources[start : start + batch_size]
            return [pool.submit(pixels_of, source, recipe, keep_aspect, draft=draft) for source in chunk]

        upcoming = submit(0)
        for start in range(0, len(sources), batch_size):
            current, upcoming = upcoming, submit(start + batch_size)  # the next batch decodes meanwhile
            chunk = sources[start : start + batch_size]
            pixels = [future.result() for future in current]
            yield from _classify(pipeline, net, chunk, pixels, batched=keep_aspect is False)


def _classify(pipeline: Pipeline, net, chunk: list[Source], pixels: list, *, batched: bool) -> Iterator[Prediction]:
    good = [i for i, p in enumerate(pixels) if not isinstance(p, str)]
    rows: dict[int, np.ndarray] = {}
    if batched and good:
        rows = dict(zip(good, pipeline.probabilities(net, np.stack([pixels[i] for i in good])), strict=True))
    for i, (source, result) in enumerate(zip(chunk, pixels, strict=True)):
        if isinstance(result, str):
            yield Prediction(source.name, None, result)
        else:
            yield Prediction(source.name, rows[i] if batched else pipeline.probabilities(net, result[None])[0])
