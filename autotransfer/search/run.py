"""``fit``: profile, cheap stage, fine-tuning trials, refit — inside one hard wall-clock budget.

1. Profile the data (quadrant, per-layer distance, strategy prior).
2. Cheap stage: every (backbone, resolution) of the space has its features extracted once (cached)
   and every tap gets linear probes; each (backbone, resolution, tap) is a trial of the ``probes`` study.
3. Fine-tuning stage: the best ``candidates`` of the cheap stage get fine-tuning trials in the
   ``finetune`` study: the profile's recommended strategies first (``enqueue_trial``), then TPE,
   with Hyperband pruning over epochs. A failing trial is recorded with its reason.
4. The best trial of both stages is refit on train+val when the time left allows it (otherwise its
   own weights are kept), saved, scored on the test split if there is one, and reported.

Both studies live in one Optuna storage (SQLite in the run directory unless ``storage`` says
otherwise), so a killed run resumes without losing or repeating finished trials. The budget covers
everything, the refit and the saving included: each step is started only if it, plus the reserve
for the final refit and saving, fits in the time left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from autotransfer.budget import Deadline, format_duration
from autotransfer.data.datasets import Dataset, load_dataset
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.errors import AutoTransferError
from autotransfer.files import disk_full_error, is_disk_full, write_text_atomic
from autotransfer.models.features import extract_features
from autotransfer.models.zoo import create_backbone
from autotransfer.search.space import FINETUNE_STRATEGIES, Range, SearchSpace
from autotransfer.search.trials import (
    candidate_key,
    config_for,
    describe,
    estimate_epoch_seconds,
    parse_candidate,
    suggest,
)
from autotransfer.transfer.finetune import TransferModel, TrialPruned, finetune
from autotransfer.transfer.probes import make_head
from autotransfer.transfer.profile import profile_dataset
from autotransfer.transfer.ranking import RankingConfig, rank_backbone

log = logging.getLogger(__name__)

STORAGE_ATTEMPTS = 5
CHEAP_SHARE_BEFORE_FINETUNING = 0.5  # of the budget, when the profile's first strategy is a fine-tuning one
SAVE_SECONDS = 8.0  # writing the checkpoint, leaderboard and report, measured at 2-4 s on 2 CPU cores
PROBE_STUDY, FINETUNE_STUDY = "probes", "finetune"


class OutOfTime(TrialPruned):
    """A trial stopped because the budget left no room for another epoch (it keeps its best epoch)."""


@dataclass
class SearchSettings:
    space: SearchSpace
    time_budget: float
    out: Path
    storage: str | None = None
    seed: int = 0
    val_fraction: float = 0.2
    device: str | None = None
    backend: str = "optuna"
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    profile_backbone: str = "mobilenetv2_100"
    start: float = field(default_factory=time.monotonic)


@dataclass
class SearchResult:
    pipeline: Pipeline
    leaderboard: pd.DataFrame
    profile: dict
    run_dir: Path
    best: dict
    refit: bool
    seconds: float


def _storage(settings: SearchSettings) -> optuna.storages.BaseStorage:
    url = settings.storage or f"sqlite:///{settings.out.resolve() / 'study.db'}"
    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    attempt = 0
    while True:
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as error:  # sqlalchemy raises many types for a bad URL or an unreachable server
            # Two workers creating a new storage at once race on its schema (a UNIQUE constraint on
            # alembic_version): the loser finds the schema there when it tries again.
            attempt += 1
            if "UNIQUE constraint" in str(error) and attempt < STORAGE_ATTEMPTS:
                time.sleep(0.5 * attempt)
                continue
            raise AutoTransferError(
                f"Cannot open the study storage {url!r}: {str(error).splitlines()[0][:200]}",
                fix="check the --storage URL (e.g. sqlite:///study.db, postgresql://user@host/db).",
            ) from error


def _probed(candidates: set, pair: str) -> bool:
    """Whether any candidate key ("backbone@resolution/tap") belongs to ``pair`` ("backbone@resolution")."""
    return any(c and c.startswith(pair + "/") for c in candidates)


class Search:
    """One ``fit`` run. ``run()`` does everything; the attributes hold what it found."""

    def __init__(self, data: str | os.PathLike, settings: SearchSettings) -> None:
        self.data, self.settings, self.space = Path(data), settings, settings.space
        self.deadline = Deadline(settings.time_budget, settings.start)
        self.out = settings.out
        self.datasets: dict[int, Dataset] = {}
        self.extract_seconds: dict[str, float] = {}
        self.device = torch.device(settings.device) if settings.device else None

    # ------------------------------------------------------------------ run directory
    def _open_run_dir(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.out / "run.lock", "w")  # noqa: SIM115  (held for the whole run)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.sole_owner = True
        except BlockingIOError:  # another fit works in this directory: share its study, never clean up for it
            self.sole_owner = False
        identity = json.loads(
            json.dumps(
                {
                    "data": str(self.data.resolve()),
                    "space": self.space.to_json(),
                    "seed": self.settings.seed,
                    "val_fraction": self.settings.val_fraction,
                }
            )
        )
        run_file = self.out / "run.json"
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            if {k: previous.get(k) for k in identity} != identity:
                changed = [k for k in identity if previous.get(k) != identity[k]]
                raise AutoTransferError(
                    f"{self.out} holds a search with another {', '.join(changed)}.",
                    where=str(self.out),
                    fix="use another --out, or the same data and settings.",
                )
        else:
            write_text_atomic(run_file, json.dumps(identity, indent=2))
        handler = logging.FileHandler(self.out / "fit.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("autotransfer").addHandler(handler)
        logging.getLogger("autotransfer").setLevel(logging.INFO)
        self._log_handler = handler

    def dataset(self, resolution: int) -> Dataset:
        if resolution not in self.datasets:
            self.datasets[resolution] = load_dataset(
                self.data,
                image_size=resolution,
                seed=self.settings.seed,
                val_fraction=self.settings.val_fraction,
                show_progress=False,
            )
        return self.datasets[resolution]

    # ------------------------------------------------------------------ stages
    def _profile(self) -> dict:
        path = self.out / "profile.json"
        if path.exists():
            return json.loads(path.read_text())
        resolution = min(self.space.resolutions)
        result = profile_dataset(
            self.dataset(resolution),
            backbone=self.settings.profile_backbone,
            seed=self.settings.seed,
            show_progress=False,
        ).to_json()
        write_text_atomic(path, json.dumps(result, indent=2, default=str))
        return result

    def _check_minimum_budget(self) -> None:
        """Fail early, naming the minimum, when not even one probe plus saving fits in the budget."""
        resolution = min(self.space.resolutions)
        dataset = self.dataset(resolution)
        backbone = create_backbone(self.space.backbones[0], device=self.device or "cpu")
        sample = torch.from_numpy(np.array(dataset.images[:16])).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            backbone.model.eval()(sample)  # warm-up
            tic = time.perf_counter()
            backbone.model(sample)
        extract = (time.perf_counter() - tic) / len(sample) * len(dataset)
        needed = self.deadline.elapsed() + extract + 5.0 + SAVE_SECONDS
        if needed > self.settings.time_budget:
            raise AutoTransferError(
                f"The time budget ({format_duration(self.settings.time_budget)}) is too small for {len(dataset)} "
                f"images: one linear probe and saving need at least about {format_duration(needed * 1.2)}.",
                fix=f"use --time-budget {format_duration(needed * 1.5)} or more, or fewer images.",
            )

    def _cheap_stage(self, study: optuna.Study, prior: dict) -> None:
        """Probe every (backbone, resolution) pair, smallest images first, while the budget allows.

        When the profile recommends fine-tuning first (large data), the probes may use at most
        ``CHEAP_SHARE_BEFORE_FINETUNING`` of the budget: on a slow machine probing every pair
        would otherwise leave nothing for the strategy the recipe says wins.
        """
        done = {t.user_attrs.get("candidate") for t in study.trials if t.state == TrialState.COMPLETE}
        failed = {t.user_attrs.get("pair") for t in study.trials if t.state == TrialState.FAIL}
        config = RankingConfig(
            heads=self.space.probe_heads,
            c_grid=self.space.c_grid,
            seed=self.settings.seed,
            probe_top=self.space.probe_top_taps,
        )
        pairs = [(r, b) for r in sorted(self.space.resolutions) for b in self.space.backbones]
        finetune_first = (
            bool(self.space.finetune_strategies)
            and self.space.max_trials > 0
            and prior.get("strategies", [""])[0] in FINETUNE_STRATEGIES
        )
        share = CHEAP_SHARE_BEFORE_FINETUNING if finetune_first else 1.0
        per_pixel: list[float] = []  # seconds / resolution^2 of each pair probed in this run
        for resolution, name in pairs:
            pair = f"{name}@{resolution}"
            if pair in failed or _probed(done, pair):
                self._note_extract_cost(study, pair)
                continue
            expected = float(np.mean(per_pixel)) * resolution**2 if per_pixel else 0.0
            if self.deadline.left() < self._reserve() + 5.0 + expected:
                log.info("time budget: cheap stage stops before %s (about %s)", pair, format_duration(expected))
                break
            probed_one = bool(per_pixel) or any(done)  # fine-tuning needs at least one probed candidate
            if probed_one and self.deadline.elapsed() + expected > share * self.deadline.seconds:
                log.info(
                    "time budget: cheap stage stops before %s (about %s): the profile recommends "
                    "fine-tuning, which keeps %d%% of the budget",
                    pair,
                    format_duration(expected),
                    round(100 * (1 - share)),
                )
                break
            tic = time.perf_counter()
            try:
                backbone = create_backbone(name, device=self.device or "cpu")
                rows = rank_backbone(self.dataset(resolution), backbone, config, show_progress=False)
            except (AutoTransferError, RuntimeError, ValueError) as error:
                log.warning("candidate %s failed: %s", pair, error)
                study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.FAIL,
                        user_attrs={
                            "pair": pair,
                            "stage": "probe",
                            "error": str(error)[:500],
                            "seconds": time.perf_counter() - tic,
                        },
                    )
                )
                continue
            finished = {t.user_attrs.get("candidate") for t in study.get_trials(states=(TrialState.COMPLETE,))}
            if _probed(finished, pair):  # a worker sharing the storage was quicker
                log.info("candidate %s was probed by another worker meanwhile", pair)
                continue
            for row in rows:
                strategy = "linear_probe" if row["tap"] == "head" else "mid_layer_probe"
                if strategy not in self.space.strategies or "probe_accuracy" not in row:  # not among the top kNN
                    continue
                attrs = {
                    "candidate": candidate_key(name, resolution, row["tap"]),
                    "pair": pair,
                    "stage": "probe",
                    "strategy": strategy,
                    "backbone": name,
                    "resolution": resolution,
                    "tap": row["tap"],
                    "head": row["probe_head"],
                    "C": row["probe_C"],
                    "logme": row["logme"],
                    "knn": row["knn"],
                    "seconds": row["extract_seconds"] + row["score_seconds"] + row["probe_seconds"],
                    "extract_seconds_pair": row["extract_seconds"] * len(rows),
                }
                study.add_trial(optuna.trial.create_trial(value=row["probe_accuracy"], user_attrs=attrs))
                log.info(
                    "probe %s: val %.4f (%s, C=%g)",
                    attrs["candidate"],
                    row["probe_accuracy"],
                    row["probe_head"],
                    row["probe_C"],
                )
            self.extract_seconds[pair] = rows[0]["extract_seconds"] * len(rows) if rows else 0.0
            per_pixel.append((time.perf_counter() - tic) / resolution**2)

    def _note_extract_cost(self, study: optuna.Study, pair: str) -> None:
        for trial in study.trials:
            if trial.user_attrs.get("pair") == pair and "extract_seconds_pair" in trial.user_attrs:
                self.extract_seconds[pair] = trial.user_attrs["extract_seconds_pair"]
                return

    def _candidates(self, probes: optuna.Study, finetune_study: optuna.Study) -> list[str]:
        """The top (backbone, resolution, tap) of the cheap stage; fixed once chosen (resume-safe)."""
        if "candidates" in finetune_study.user_attrs:
            return finetune_study.user_attrs["candidates"]
        rows = [t for t in probes.trials if t.state == TrialState.COMPLETE]
        rows.sort(key=lambda t: (-t.value, -t.user_attrs.get("logme", 0.0)))
        candidates = []
        for trial in rows:  # one tap per (backbone, resolution): variety beats near-duplicates
            pair = trial.user_attrs["pair"]
            if all(not c.startswith(pair + "/") for c in candidates):
                candidates.append(trial.user_attrs["candidate"])
            if len(candidates) == self.space.candidates:
                break
        finetune_study.set_user_attr("candidates", candidates)
        return candidates

    def _prior_ranges(self, prior: dict) -> dict[str, Range]:
        """The space's ranges, narrowed towards the profile's prior (within a factor of 10 of it)."""
        ranges = dict(self.space.ranges)
        for key in ("head_lr", "backbone_lr_ratio"):
            if key in prior:
                space = ranges[key]
                low, high = max(space.low, min(prior[key]) / 10), min(space.high, max(prior[key]) * 10)
                if low < high:
                    ranges[key] = Range(low, high, space.log)
        return ranges

    def _seed_trials(self, study: optuna.Study, prior: dict, candidates: list[str], ranges: dict[str, Range]) -> None:
        """The quadrant's recommended fine-tuning strategies on the best candidate come first.

        Only into an empty study: a resumed run, or a worker that joins one sharing the storage, would
        otherwise queue seeds again (for candidates it may have ranked on fewer probes) that nobody runs.
        """
        if study.trials:
            return
        wanted = [s for s in prior.get("strategies", []) if s in FINETUNE_STRATEGIES]
        wanted.insert(1, "lp_ft")  # the probe's head as the start: the safest fine-tuning on small data
        wanted += [s for s in self.space.finetune_strategies if s not in wanted]
        n_groups = len(create_backbone(parse_candidate(candidates[0])[0], device="meta", pretrained=False).depth_groups)

        def clip(key: str, value: float) -> float:
            return float(min(max(value, ranges[key].low), ranges[key].high))

        for strategy in [s for s in wanted if s in self.space.finetune_strategies][:3]:
            params = {
                "candidate": candidates[0],
                "strategy": strategy,
                "head_lr": clip("head_lr", float(np.sqrt(np.prod(prior.get("head_lr", [1e-3, 1e-2]))))),
                "weight_decay": clip("weight_decay", 0.05),
                "label_smoothing": self.space.label_smoothing[-1],
                "augmentation": "none" if "none" in self.space.augmentation else self.space.augmentation[0],
            }
            if strategy in ("finetune_top", "lp_ft"):
                partial = [g for g in prior.get("freeze_groups", []) if 0 < g < n_groups]
                frozen = max(partial, default=n_groups // 2)
                params["freeze_fraction"] = clip("freeze_fraction", frozen / n_groups)
            if strategy != "train_all":
                params["backbone_lr_ratio"] = clip(
                    "backbone_lr_ratio", float(np.sqrt(np.prod(prior.get("backbone_lr_ratio", [0.01, 0.1]))))
                )
                params["layer_decay"] = clip("layer_decay", float(np.mean(prior.get("layer_decay", [0.8, 0.9]))))
            study.enqueue_trial(params, user_attrs={"seeded_by": "profile prior"}, skip_if_exists=True)

    def _reserve(self, best: dict | None = None) -> float:
        """Seconds kept for the final refit and saving."""
        if best is None or best.get("stage") == "probe":
            return SAVE_SECONDS + 3.0
        return SAVE_SECONDS + self._refit_estimate(best)

    def _refit_estimate(self, best: dict) -> float:
        dataset = self.dataset(best["resolution"])
        n_train, n_val = len(dataset.indices("train")), len(dataset.indices("val"))
        per_epoch = best.get("epoch_seconds") or 1.0
        return per_epoch * (n_train + n_val) / max(n_train, 1) * (best.get("best_epoch", 0) + 1) + 3.0

    def _epoch_estimate(self, params: dict, measured: dict[str, float]) -> float:
        if params["candidate"] in measured:
            return measured[params["candidate"]]
        backbone, resolution, _ = parse_candidate(params["candidate"])
        dataset = self.dataset(resolution)
        extract = self.extract_seconds.get(f"{backbone}@{resolution}", 0.02 * len(dataset))
        return estimate_epoch_seconds(extract, len(dataset), len(dataset.indices("train")), params)

    def _finetune_trial(self, trial: optuna.Trial, params: dict, best: dict | None) -> float:
        """Train one configuration; report each epoch to the pruner and to the budget."""
        backbone_name, resolution, tap = parse_candidate(params["candidate"])
        dataset = self.dataset(resolution)
        backbone = create_backbone(backbone_name, device=self.device or "cpu")
        config = config_for(params, self.space, len(backbone.depth_groups), self.settings.seed)
        for key, value in {
            "backbone": backbone_name,
            "resolution": resolution,
            "tap": tap,
            "stage": "finetune",
            "strategy": params["strategy"],
            "freeze_groups": config.freeze_groups,
            "n_groups": len(backbone.depth_groups),
        }.items():
            trial.set_user_attr(key, value)
        folder = self.out / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("checkpoint_dir", str(folder))
        progress = {"epochs": 0, "best": 0.0, "tic": time.perf_counter()}

        def report(epoch: int, accuracy: float) -> None:
            progress["epochs"] = epoch + 1
            if accuracy > progress["best"]:  # as the trainer keeps it: the first epoch with the best accuracy
                progress["best"] = accuracy
                trial.set_user_attr("best_epoch", epoch)
            per_epoch = (time.perf_counter() - progress["tic"]) / (epoch + 1)
            trial.set_user_attr("best_val_accuracy", progress["best"])
            trial.set_user_attr("epoch_seconds", per_epoch)
            trial.set_user_attr("epochs_run", epoch + 1)
            trial.report(accuracy, epoch + 1)
            if trial.should_prune():
                raise TrialPruned(f"pruned after epoch {epoch + 1}")
            if self.deadline.left() < self._reserve(best) + per_epoch * 1.1:
                raise OutOfTime(f"time budget: stopped after epoch {epoch + 1}")

        result = finetune(dataset, backbone, config, report=report, device=self.device, checkpoint_dir=folder)
        trial.set_user_attr("best_epoch", result.best_epoch)
        return result.best_val_accuracy

    def _finetune_stage(self, study: optuna.Study, candidates: list[str], ranges: dict[str, Range]) -> None:
        measured: dict[str, float] = {}
        for t in study.trials:
            if "epoch_seconds" in t.user_attrs:
                measured[t.params.get("candidate", "")] = t.user_attrs["epoch_seconds"]
        while True:
            finished = [t for t in study.trials if t.state.is_finished()]
            if len(finished) >= self.space.max_trials:
                log.info("fine-tuning: max_trials (%d) reached", self.space.max_trials)
                return
            best = self.best_record()
            need = self._reserve(best) + self.space.min_epochs * max(
                (self._epoch_estimate({"candidate": c, "strategy": "finetune_all"}, measured) for c in candidates),
                default=0.0,
            )
            if self.deadline.left() < need:
                log.info(
                    "time budget: no room for another fine-tuning trial (%s left, %s needed)",
                    format_duration(self.deadline.left()),
                    format_duration(need),
                )
                return
            trial = study.ask()
            params = suggest(trial, self.space, candidates, ranges)
            tic = time.perf_counter()
            try:
                value = self._finetune_trial(trial, params, best)
            except KeyboardInterrupt:
                self._retry_later(study, trial, params)
                raise
            except TrialPruned as stop:
                trial.set_user_attr("stopped", str(stop))
                trial.set_user_attr("seconds", time.perf_counter() - tic)
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d (%s) %s", trial.number, describe(params), stop)
            except Exception as error:  # a failing trial is a result, not a crash
                if is_disk_full(error):  # not the trial's fault: stop, and retry it when the run resumes
                    with contextlib.suppress(Exception):  # the storage may be on the full disk too
                        self._retry_later(study, trial, params)  # if not: resume re-queues it as stale
                    raise
                trial.set_user_attr("error", f"{type(error).__name__}: {str(error)[:400]}")
                trial.set_user_attr("seconds", time.perf_counter() - tic)
                study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d (%s) failed: %s", trial.number, describe(params), error)
            else:
                trial.set_user_attr("seconds", time.perf_counter() - tic)
                study.tell(trial, value)
                log.info(
                    "trial %d (%s): val %.4f, %s left",
                    trial.number,
                    describe(params),
                    value,
                    format_duration(self.deadline.left()),
                )
            if "epoch_seconds" in study.trials[trial.number].user_attrs:
                measured[params["candidate"]] = study.trials[trial.number].user_attrs["epoch_seconds"]

    @staticmethod
    def _retry_later(study: optuna.Study, trial: optuna.Trial, params: dict) -> None:
        """Mark an interrupted trial failed and queue its parameters again for the resumed run."""
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)

    # ------------------------------------------------------------------ results
    def records(self) -> list[dict]:
        """Every trial of both stages as one flat row."""
        rows = []
        for stage, study in (("probe", self.probes), ("finetune", self.finetune_study)):
            for t in study.trials:
                state = t.state.name.lower()
                row = {"stage": stage, "trial": t.number, "status": state, **t.params, **t.user_attrs}
                row["val_accuracy"] = t.value if t.value is not None else t.user_attrs.get("best_val_accuracy")
                if state == "running":
                    continue
                rows.append(row)
        return rows

    def best_record(self) -> dict | None:
        usable = [
            r
            for r in self.records()
            if r["val_accuracy"] is not None
            and r["status"] in ("complete", "pruned")
            and (r["stage"] == "probe" or Path(r.get("checkpoint_dir", "-"), "best.json").exists())
        ]
        # The best validation accuracy; among equals the cheaper to run, decided by the trials' settings
        # (never by their wall time, so the same seed picks the same pipeline): a probe before a
        # fine-tuned network, smaller inputs, then the earlier trial (for probes, the shallower tap).
        return max(
            usable,
            key=lambda r: (r["val_accuracy"], r["stage"] == "probe", -r.get("resolution", 0), -r["trial"]),
            default=None,
        )

    def _fail_stale_trials(self, study: optuna.Study) -> None:
        """Trials left RUNNING by a killed run: failed and queued again (only when we own the run dir)."""
        if not self.sole_owner or self.settings.storage:
            return
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            if trial.params:
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            log.info("trial %d was interrupted by the previous run: queued again", trial.number)

    # ------------------------------------------------------------------ refit
    def _refit_probe(self, best: dict) -> tuple[TransferModel, object]:
        dataset = self.dataset(best["resolution"])
        backbone = create_backbone(best["backbone"], device=self.device or "cpu")
        features = np.asarray(extract_features(dataset, backbone, [best["tap"]], show_progress=False)[best["tap"]])
        rows = np.concatenate([dataset.indices("train"), dataset.indices("val")])
        head = make_head(best["head"], best["C"], seed=self.settings.seed, shape=features[rows].shape)
        head.fit(features[rows], dataset.labels[rows])
        model = TransferModel(backbone, best["tap"], len(dataset.classes)).set_linear_head(head)
        return model.to(next(backbone.model.parameters()).device).eval(), backbone

    def _trial_model(self, best: dict) -> tuple[TransferModel, object]:
        """The trial's own best weights (trained on train only)."""
        from autotransfer.transfer.finetune import load_checkpoint

        dataset = self.dataset(best["resolution"])
        backbone = create_backbone(best["backbone"], device=self.device or "cpu")
        model = TransferModel(backbone, best["tap"], len(dataset.classes))
        state, _ = load_checkpoint(Path(best["checkpoint_dir"]))
        model.load_state_dict(state, strict=False)  # a cached-prefix trial saved no (frozen, pretrained) prefix
        return model.eval(), backbone

    def _refit_finetune(self, best: dict) -> tuple[TransferModel, object]:
        """The best trial's configuration again, on train+val, for as many epochs as its best one."""
        dataset = self.dataset(best["resolution"])
        splits = np.where(dataset.splits == "test", "test", "train")
        splits[dataset.indices("val")[:1]] = "val"  # the trainer reports on a val split: one image, not selected on
        backbone = create_backbone(best["backbone"], device=self.device or "cpu")
        params = {
            k: best[k]
            for k in (
                "candidate",
                "strategy",
                "head_lr",
                "weight_decay",
                "label_smoothing",
                "augmentation",
                "freeze_fraction",
                "backbone_lr_ratio",
                "layer_decay",
            )
            if k in best and best[k] == best[k]
        }
        config = config_for(
            params,
            self.space,
            len(backbone.depth_groups),
            self.settings.seed,
            epochs=int(best.get("best_epoch", 0)) + 1,
        )
        config = replace(config, keep="last", patience=config.epochs)
        return finetune(replace(dataset, splits=splits), backbone, config, device=self.device).model, backbone

    def _final_pipeline(self, best: dict) -> tuple[Pipeline, bool]:
        refit = True
        if best["stage"] == "probe":
            model, backbone = self._refit_probe(best)
            head_type = best["head"]
        else:
            head_type = "linear"
            if self.deadline.left() > SAVE_SECONDS + self._refit_estimate(best) * 1.2:
                model, backbone = self._refit_finetune(best)
            else:
                log.info("time budget: keeping the trial's own weights (no room to refit on train+val)")
                model, backbone = self._trial_model(best)
                refit = False
        dataset = self.dataset(best["resolution"])
        n_groups = len(backbone.depth_groups)
        summary = self._summary_words(best, n_groups)
        metrics = {"val_accuracy": best["val_accuracy"], "refit_on_train_val": refit}
        hyper = {
            k: v
            for k, v in best.items()
            if k
            in (
                "candidate",
                "strategy",
                "head",
                "C",
                "head_lr",
                "backbone_lr_ratio",
                "layer_decay",
                "weight_decay",
                "label_smoothing",
                "augmentation",
                "freeze_fraction",
                "freeze_groups",
                "best_epoch",
            )
            and v == v
        }
        pipeline = Pipeline.from_model(
            backbone,
            model,
            classes=dataset.classes,
            recipe=dataset.recipe,
            frozen_groups=int(best.get("freeze_groups", n_groups if best["stage"] == "probe" else 0)),
            head_type=head_type,
            strategy=best["strategy"],
            hyperparameters=hyper,
            metrics=metrics,
            summary=summary,
        )
        test = dataset.indices("test")
        if len(test):
            metrics["test_accuracy"] = _accuracy(pipeline, np.asarray(dataset.images[test]), dataset.labels[test])
        return pipeline, refit

    @staticmethod
    def _summary_words(best: dict, n_groups: int) -> str:
        if best["stage"] == "probe":
            kind = {"softmax": "softmax", "svm": "linear SVM"}.get(best["head"], best["head"])
            return (
                f"{best['strategy']}: {kind} (C={best['C']:g}) on tap `{best['tap']}` of {best['backbone']} "
                f"at {best['resolution']}px, backbone frozen"
            )
        return describe({k: v for k, v in best.items() if v == v}, n_groups)

    # ------------------------------------------------------------------ the whole run
    def run(self) -> SearchResult:
        self._open_run_dir()
        try:
            return self._run()
        except Exception as error:
            if is_disk_full(error) and not isinstance(error, AutoTransferError):
                raise disk_full_error(error, self.out) from error
            raise
        finally:
            logging.getLogger("autotransfer").removeHandler(self._log_handler)
            self._log_handler.close()
            self._lock.close()

    def _run(self) -> SearchResult:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = _storage(self.settings)
        self.probes = optuna.create_study(
            study_name=PROBE_STUDY, storage=storage, direction="maximize", load_if_exists=True
        )
        sampler = optuna.samplers.TPESampler(seed=self.settings.seed, n_startup_trials=4)
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=self.space.min_epochs,
            max_resource=self.space.epochs,
            reduction_factor=self.space.reduction_factor,
        )
        self.finetune_study = optuna.create_study(
            study_name=FINETUNE_STUDY,
            storage=storage,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        self._fail_stale_trials(self.finetune_study)
        resumed = len(self.probes.trials) + len(self.finetune_study.trials)
        if resumed:
            log.info("resuming: %d trial(s) already in the study", resumed)
        else:
            self._check_minimum_budget()
        profile = self._profile()
        log.info("profile: %s", profile.get("rationale", ""))
        self._cheap_stage(self.probes, profile.get("prior", {}))
        if (
            self.space.finetune_strategies
            and self.space.max_trials
            and any(t.state == TrialState.COMPLETE for t in self.probes.trials)
        ):
            candidates = self._candidates(self.probes, self.finetune_study)
            ranges = self._prior_ranges(profile.get("prior", {}))
            if self.settings.backend == "ray":
                from autotransfer.search.ray_backend import run_ray_stage

                run_ray_stage(self, candidates, ranges)
            else:
                self._seed_trials(self.finetune_study, profile.get("prior", {}), candidates, ranges)
                self._finetune_stage(self.finetune_study, candidates, ranges)
        best = self.best_record()
        if best is None:
            raise AutoTransferError(
                "No trial finished within the time budget, so there is no pipeline to save.",
                where=str(self.out),
                fix="raise --time-budget (the finished work is kept: run the same command again to continue).",
            )
        log.info("final pipeline: from %s trial %s (val %.4f)", best["stage"], best["trial"], best["val_accuracy"])
        pipeline, refit = self._final_pipeline(best)
        pipeline.save(self.out / "pipeline")
        log.info("saved %s", self.out / "pipeline")
        from autotransfer.report.outputs import write_outputs

        board = write_outputs(self, best, pipeline)
        return SearchResult(pipeline, board, profile, self.out, best, refit, self.deadline.elapsed())


def _accuracy(pipeline: Pipeline, pixels: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> float:
    net = pipeline.network()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(pixels[start : start + batch_size]).to(pipeline.device).permute(0, 3, 1, 2)
            correct += int((net(batch).argmax(1).cpu().numpy() == labels[start : start + batch_size]).sum())
    return correct / max(len(labels), 1)
