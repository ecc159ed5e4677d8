"""What every stage of one run shares: the data, the settings, the deadline, the decoded datasets
(one per resolution, decoded once) and the measured feature-extraction cost per (backbone, resolution)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch

from autotransfer.budget import Deadline
from autotransfer.data.datasets import Dataset, load_dataset
from autotransfer.data.decode_cache import files_fingerprint, is_cached
from autotransfer.data.images import DecodedImage, ResizeRecipe, decode_file
from autotransfer.data.sources import DatasetIndex, index_dataset
from autotransfer.models.zoo import Backbone, create_backbone
from autotransfer.report.progress import Progress
from autotransfer.runtime import bf16_supported, default_device
from autotransfer.search import planner
from autotransfer.search.auto_space import AutoChoice
from autotransfer.search.objective import Objective
from autotransfer.search.records import TrialRecord
from autotransfer.search.settings import SearchSettings

log = logging.getLogger(__name__)

# fp32 forward time over the bf16 one `auto` timed (runtime.bf16_supported; features-cpu.md: 1.6-1.8x)
FP32_SLOWDOWN = 2.0
DECODE_SAMPLE = 8  # files timed to estimate decoding the data at a new size (decode_estimate)
ENSEMBLE_ROOM = 2  # ensemble members past the best that the probes run after the search leave time for
MIN_FORWARD_SPEED = 0.5  # the least share of `auto`'s timed forward cost the reserve keeps (see _forward_seconds)


@dataclass
class RunContext:
    """Built from the data, the settings and the progress listener; its search fields (``storage``,
    ``backbones``, ``resolutions``, ``auto``, ``objective``) are filled by search/run.py's ``open_run``
    alone, in the order its docstring lists. The rest are the stages' measurements and caches."""

    data: Path
    settings: SearchSettings
    progress: Progress
    deadline: Deadline = field(init=False)
    datasets: dict[int, Dataset] = field(default_factory=dict)
    extract_seconds: dict[str, float] = field(default_factory=dict)  # per Candidate.pair
    backbones: tuple[str, ...] = ()  # the space's, or what `auto` chose (search/auto_space.py)
    resolutions: tuple[int, ...] = ()
    auto: AutoChoice | None = None  # when the space left anything to `auto`
    # the last probed pair's extraction time over its estimate from `auto`'s timing (the load since), measured
    # only where the features were computed: `cached_pairs` were read from the feature cache
    slowdown: float = 1.0
    cached_pairs: set[str] = field(default_factory=set)
    # of the cached pairs, the seconds of the forward pass that filled the cache (models/features.py)
    recorded_extraction: dict[str, float] = field(default_factory=dict)
    # the budget the probe stage found it needed (planner.minimum_budget) when it could start no candidate
    budget_needed: float | None = None
    objective: Objective | None = None  # search/objective.py: metric, why, class weights, CV folds
    storage: optuna.storages.BaseStorage | None = None  # the run's Optuna storage (search/storage.py)
    # (backbone, resolution, tap) whose fp32 features this run extracted (refit.py: probe_model); they are in
    # the feature cache, so refitting such a probe costs no forward pass
    fp32_features: set[tuple[str, int, str]] = field(default_factory=set)
    # why the search stopped where it did, in order (said with the unused budget when it is over UNUSED_SHARE)
    search_ends: list[str] = field(default_factory=list)
    _index: tuple[DatasetIndex, str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.deadline = Deadline(self.settings.time_budget, self.settings.start)

    @property
    def out(self) -> Path:
        return self.settings.out

    @property
    def device(self) -> torch.device | None:
        return torch.device(self.settings.device) if self.settings.device else None

    def search_ended(self, why: str, *, final: bool = True) -> None:
        """Log why a stage of the search stopped before the budget (``why``: one clause) and, where it is
        ``final`` (no later stage can use the time), keep it for the summary of the unused budget."""
        log.info("%s", why)
        if final:
            self.search_ends.append(why)

    def index(self) -> tuple[DatasetIndex, str]:
        """The folder's index and files fingerprint: one walk and one stat per file for the whole run."""
        if self._index is None:
            index = index_dataset(self.data)
            self._index = index, files_fingerprint(index.paths)
        return self._index

    def dataset(self, resolution: int) -> Dataset:
        """The data decoded at ``resolution`` px (cached on disk and here), split with the run's seed."""
        if resolution not in self.datasets:
            index, fingerprint = self.index()
            self.datasets[resolution] = load_dataset(
                index,
                image_size=resolution,
                seed=self.settings.options.seed,
                val_fraction=self.settings.options.val_fraction,
                show_progress=False,
                fingerprint=fingerprint,
                warn=not self.datasets,  # skipped files and label conflicts: said once, not once per size
            )
        return self.datasets[resolution]

    def _decoded(self, resolution: int) -> Dataset:
        """A decoded dataset for counting: ``resolution``'s, else any other (the same files, labels and
        splits: decoding failures do not depend on the size), so no resolution is decoded only to count it."""
        return self.datasets.get(resolution) or next(iter(self.datasets.values()), None) or self.dataset(resolution)

    def n_images(self) -> int:
        """Images of the run: the decodable ones once any resolution is decoded, else the files indexed."""
        if self.datasets:
            return len(next(iter(self.datasets.values())))
        return len(self.index()[0])

    def sample_pixels(self, resolution: int, n: int) -> np.ndarray:
        """Up to ``n`` images at ``resolution`` (uint8 NHWC): from the decoded data, else decoded now."""
        if resolution in self.datasets:
            return np.asarray(self.datasets[resolution].images[:n])
        recipe = ResizeRecipe(resolution)
        decoded = [decode_file(p, recipe) for p in self.index()[0].paths[: 2 * n]]
        good = [d.pixels for d in decoded if isinstance(d, DecodedImage)][:n]
        return np.stack(good) if good else np.zeros((1, resolution, resolution, 3), np.uint8)

    def decode_estimate(self, resolution: int) -> float:
        """Seconds ``dataset(resolution)`` would take: 0 where it is decoded or cached already, else the
        decoding of ``DECODE_SAMPLE`` files timed now, scaled to every file and the cores decode_all uses.
        Decoding depends on the files (a 12-MP JPEG costs ~100x a thumbnail), so it is timed, not derived."""
        index, fingerprint = self.index()
        recipe = ResizeRecipe(resolution)
        if resolution in self.datasets or is_cached(index.paths, recipe, fingerprint=fingerprint) or not index.paths:
            return 0.0
        sample = index.paths[:DECODE_SAMPLE]
        tic = time.perf_counter()
        for path in sample:
            decode_file(path, recipe)
        return (time.perf_counter() - tic) / len(sample) * len(index.paths) / (os.cpu_count() or 1)

    def backbone(self, name: str) -> Backbone:
        return create_backbone(name, device=self.device or "cpu")

    def split_sizes(self, resolution: int) -> tuple[int, int]:
        """(train, val) image counts."""
        dataset = self._decoded(resolution)
        return len(dataset.indices("train")), len(dataset.indices("val"))

    def refit_fits(self, best: TrialRecord) -> bool:
        """Whether retraining the fine-tuned ``best`` on train+val, evaluating and saving fit in the time left."""
        return planner.refit_fits(self.deadline.left() - self.evaluation_seconds(best), self.refit_estimate(best))

    def refit_estimate(self, best: TrialRecord) -> float:
        """Seconds of retraining the fine-tuned ``best`` on train+val for as many epochs as its best one."""
        n_train, n_val = self.split_sizes(best.resolution)
        return planner.refit_seconds(best.epoch_seconds or 1.0, n_train, n_val, (best.best_epoch or 0) + 1)

    def reserve(self, best: TrialRecord | None, *, refit: bool = True) -> float:
        """Seconds to keep for the final refit, the evaluation and saving, given the best record so far.

        A fine-tuned best whose refit no longer fits keeps its own weights (refit.py): only evaluating
        and saving are kept then, so the time left goes to more trials or probes instead of idling; so
        too with ``refit=False`` (a trial that continues the best one for the time its refit had). A
        probe's refit extracts its features once more, in fp32, and fits its head on train+val (the
        probe's estimate of that fit, ``refit_seconds``; search/refit.py: probe_model)."""
        refit = refit and best is not None and best.stage != "probe" and self.refit_fits(best)
        reserve = planner.reserve(best, *self.split_sizes(best.resolution)) if refit else planner.reserve(None, 0, 0)
        # saving, evaluating and the head's refit are estimated on a quiet machine: a load the probes
        # measured slows them alike
        slow = max(1.0, self.slowdown)
        if best is not None and best.stage == "probe":
            reserve += slow * (best.refit_seconds or 0.0)
            if not self.fp32_cached(best):
                reserve += FP32_SLOWDOWN * self._forward_seconds(best, everything=True)
        return reserve + planner.SAVE_SECONDS * (slow - 1) + self.evaluation_seconds(best)

    def ensemble_room(self, best: TrialRecord | None) -> float:
        """Seconds the probes run after the search (search/widen.py) leave to the ensemble stage besides the
        reserve: ``ENSEMBLE_ROOM`` members past the best, each an fp32 extraction of its features and its
        held-out forwards at the best's cost; 0 before any best or with the ensemble turned off. Those probes
        are worth most as ensemble members: a run that spent the ensemble's time on them ended without one."""
        if best is None or not (self.settings.options.ensemble and self.settings.space.ensemble):
            return 0.0
        member = FP32_SLOWDOWN * self._forward_seconds(best, everything=True) + self.evaluation_seconds(best)
        return ENSEMBLE_ROOM * member

    def fp32_cached(self, record: TrialRecord) -> bool:
        """Whether ``record``'s fp32 features were extracted in this run (a probe's refit reads them): by the
        refit (``fp32_features``), or by the probes themselves where the device has no bf16."""
        if not bf16_supported(self.device or default_device()):
            return True
        return (record.backbone, record.resolution, record.tap) in self.fp32_features

    def training_forward_seconds(self, name: str, resolution: int) -> float | None:
        """One forward pass of ``name`` over every image at ``resolution`` px, at the precision training runs
        in: the probes' extraction of that pair where it computed the features (not read them from the
        cache), else `auto`'s timing scaled by the load the probes measured (None without either). Trainers
        use bf16 on GPUs only (transfer/finetune.py), so a CPU whose probes extracted in bf16 trains
        ``FP32_SLOWDOWN`` times slower than they extracted."""
        seconds = self._measured_extraction(name, resolution)
        if seconds is None and self.auto and name in self.auto.seconds_per_image:
            seconds = self._timed_forward_seconds(name, resolution, self.n_images())
        if seconds is None:
            return None
        device = self.device or default_device()
        return seconds * (FP32_SLOWDOWN if device.type == "cpu" and bf16_supported(device) else 1.0)

    def _measured_extraction(self, name: str, resolution: int) -> float | None:
        """Seconds the probes' extraction of (``name``, ``resolution``) took where it computed the features, or
        where it read them from the cache, the forward pass that filled it (another run's): one forward over
        every image at the probes' precision. `auto`'s timing of a few small batches is ~4x a whole pass's
        per-image cost on 2 CPU cores (Fashion-MNIST, lite1 at 128 px), so a warm cache would plan less."""
        pair = f"{name}@{resolution}"
        if pair in self.cached_pairs:
            return self.recorded_extraction.get(pair)
        return self.extract_seconds.get(pair)

    def evaluation_seconds(self, best: TrialRecord | None) -> float:
        """Predicting val (the chosen configuration) and test (the final pipeline): two forward passes
        over those images (``_forward_seconds``)."""
        return 2 * self._forward_seconds(best, everything=False)

    def _forward_seconds(self, best: TrialRecord | None, *, everything: bool) -> float:
        """One forward pass of ``best``'s backbone (before any trial: the first probed, the fastest) over
        every image (``everything``) or the held-out ones: from the probes' extraction of that pair where they
        computed it (a whole pass, under the run's load), else from `auto`'s throughput (a few batches timed
        under the load of that moment; 0 without one)."""
        per_image = self.auto.seconds_per_image if self.auto else {}
        ours = [n for n in self.backbones if n in per_image]
        name = best.backbone if best and best.backbone in per_image else next(iter(ours), None)
        if name is None or not self.resolutions:
            return 0.0
        resolution = best.resolution if best and best.resolution else min(self.resolutions)
        dataset = self._decoded(resolution)
        images = len(dataset) if everything else len(dataset) - len(dataset.indices("train"))
        measured = self._measured_extraction(name, resolution)
        if measured is not None:
            return measured * images / max(len(dataset), 1)
        return self._timed_forward_seconds(name, resolution, images)

    def _timed_forward_seconds(self, name: str, resolution: int, images: int) -> float:
        """``images`` forwards of ``name`` at ``resolution`` px from `auto`'s timing. `auto` timed a few
        batches: the probes' extractions say how fast forwards run since (the load); never below half the
        timed cost, so one fast extraction does not empty the reserve."""
        per_image = self.auto.seconds_per_image[name]
        speed = max(MIN_FORWARD_SPEED, self.slowdown)
        return speed * planner.extraction_seconds(per_image, self.auto.profile_resolution, resolution, images)
