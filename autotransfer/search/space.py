"""Search spaces: YAML files (``autotransfer/search/spaces/*.yaml`` or a user's own) read into a validated object.

The file is data only (``yaml.safe_load``: no tags, no objects). Every key is checked; a bad one is
reported with its dotted name and value, and the keys a file leaves out take the defaults of
``autotransfer/search/spaces/default.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from autotransfer.config_files import ConfigChecker, read_yaml
from autotransfer.search.space_files import SPACES_DIR, space_path
from autotransfer.transfer.strategies import FINETUNE_STRATEGIES, PROBE_HEADS, STRATEGIES

AUGMENTATIONS = ("none", "flip", "crop", "randaugment")  # search/trials.py: what each turns on
AUTO = "auto"  # backbones / resolutions chosen from the data, the machine and the budget (search/auto_space.py)


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    name: str
    backbones: tuple[str, ...]  # empty: auto
    resolutions: tuple[int, ...]  # empty: auto
    strategies: tuple[str, ...]
    probe_heads: tuple[str, ...]
    c_grid: tuple[float, ...]
    probe_top_taps: int
    candidates: int
    max_trials: int
    epochs: int
    batch_size: int
    ranges: dict[str, Range] = field(default_factory=dict)
    label_smoothing: tuple[float, ...] = (0.0, 0.1)
    augmentation: tuple[str, ...] = AUGMENTATIONS
    min_epochs: int = 1
    reduction_factor: int = 3
    probe_combine_taps: bool = True
    ensemble: bool = True  # search/ensemble_selection.py: average the best few when validation says it wins
    grow_with_budget: bool = True  # search/planner.py's scaled_plan: epochs, trials, sizes, backbones grow

    @property
    def finetune_strategies(self) -> tuple[str, ...]:
        return tuple(s for s in self.strategies if s in FINETUNE_STRATEGIES)

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


_RANGES = ("head_lr", "backbone_lr_ratio", "layer_decay", "freeze_fraction", "weight_decay")
_TOP_KEYS = {"backbones", "resolutions", "strategies", "probe", "finetune", "pruner", "ensemble", "grow_with_budget"}
_PROBE_KEYS = {"heads", "c_grid", "top_taps", "combine_taps"}
_FINETUNE_KEYS = {"candidates", "max_trials", "epochs", "batch_size", "label_smoothing", "augmentation", *_RANGES}
_PRUNER_KEYS = {"min_epochs", "reduction_factor"}
_BOUNDS = {
    "head_lr": (1e-7, 10.0),
    "backbone_lr_ratio": (0.0, 10.0),
    "layer_decay": (0.01, 1.0),
    "freeze_fraction": (0.0, 1.0),
    "weight_decay": (0.0, 10.0),
}


def _range(check: ConfigChecker, key: str, value: Any) -> Range:
    lowest, highest = _BOUNDS[key.split(".")[-1]]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"low": value, "high": value}
    if not isinstance(value, dict) or set(value) - {"low", "high", "log"} or not {"low", "high"} <= set(value):
        raise check.fail(key, value, "expected {low: number, high: number, log: true|false} or a number")
    low, high, log = value["low"], value["high"], value.get("log", False)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise check.fail(key, value, "low and high must be numbers")
    if not lowest <= low <= high <= highest or (log and low <= 0) or not isinstance(log, bool):
        raise check.fail(key, value, f"need {lowest} <= low <= high <= {highest}, low > 0 when log")
    return Range(float(low), float(high), log)


def load_search_space(name_or_path: str | os.PathLike = "default") -> SearchSpace:
    """A built-in space by name (``fast``, ``default``, ``thorough``) or a YAML file of one's own."""
    path = space_path(name_or_path)
    defaults, given = read_yaml(SPACES_DIR / "default.yaml", "search space"), read_yaml(path, "search space")
    check = ConfigChecker(str(path), "search space", "docs/search.md and autotransfer/search/spaces/default.yaml")
    check.mapping("", given, _TOP_KEYS)
    merged = {**defaults, **{k: v for k, v in given.items() if k not in ("probe", "finetune", "pruner")}}
    sections = {
        s: {**defaults.get(s, {}), **check.mapping(s, given.get(s), keys)}
        for s, keys in (("probe", _PROBE_KEYS), ("finetune", _FINETUNE_KEYS), ("pruner", _PRUNER_KEYS))
    }
    probe, finetune, pruner = sections["probe"], sections["finetune"], sections["pruner"]
    resolutions = merged["resolutions"]
    resolutions = () if resolutions == AUTO else check.choices("resolutions", resolutions, int, positive=True)
    for size in resolutions:
        if not 16 <= size <= 1024:
            raise check.fail("resolutions", size, "each size must be 16..1024 pixels")
    return SearchSpace(
        name=path.stem,
        backbones=() if merged["backbones"] == AUTO else check.choices("backbones", merged["backbones"], str),
        resolutions=resolutions,
        strategies=check.choices("strategies", merged["strategies"], str, tuple(STRATEGIES)),
        probe_heads=check.choices("probe.heads", probe["heads"], str, PROBE_HEADS),
        c_grid=check.choices("probe.c_grid", probe["c_grid"], float, positive=True),
        probe_top_taps=check.integer("probe.top_taps", probe["top_taps"], 0, 1000),
        probe_combine_taps=check.flag("probe.combine_taps", probe["combine_taps"]),
        candidates=check.integer("finetune.candidates", finetune["candidates"], 1, 100),
        max_trials=check.integer("finetune.max_trials", finetune["max_trials"], 0, 100_000),
        epochs=check.integer("finetune.epochs", finetune["epochs"], 1, 1000),
        batch_size=check.integer("finetune.batch_size", finetune["batch_size"], 1, 4096),
        ranges={k: _range(check, f"finetune.{k}", finetune[k]) for k in _RANGES},
        label_smoothing=check.choices("finetune.label_smoothing", finetune["label_smoothing"], float),
        augmentation=check.choices("finetune.augmentation", finetune["augmentation"], str, AUGMENTATIONS),
        min_epochs=check.integer("pruner.min_epochs", pruner["min_epochs"], 1, 1000),
        reduction_factor=check.integer("pruner.reduction_factor", pruner["reduction_factor"], 2, 10),
        ensemble=check.flag("ensemble", merged["ensemble"]),
        grow_with_budget=check.flag("grow_with_budget", merged["grow_with_budget"]),
    )
