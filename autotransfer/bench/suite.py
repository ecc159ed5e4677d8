"""Benchmark suites: YAML files in ``autotransfer/bench/suites/`` (or a path) read into a validated ``Suite``."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from autotransfer.budget import parse_duration
from autotransfer.builtin_yaml import builtin_or_path, names_in
from autotransfer.config_files import ConfigChecker, read_yaml
from autotransfer.data.offline_datasets import LOADERS
from autotransfer.errors import AutoTransferError
from autotransfer.search.space import load_search_space
from autotransfer.transfer.profile import DEFAULT_BACKBONE
from autotransfer.transfer.strategies import PROBE_HEADS

# Defaults of the grid (the oracle) and the fixed strategies when the suite's space says `auto`:
# the offline zoo's backbones at the CPU sizes the engine considers.
GRID_BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0")
GRID_RESOLUTIONS = (64, 96, 128)

SUITES_DIR = Path(__file__).resolve().parent / "suites"
BUILTIN_CONTENDERS = (
    "fit", "codes_svm", "codes_softmax", "codes128_logreg", "mid_layer", "finetune_all", "train_all", "one_lr", "grid",
)  # fmt: skip
_TOP_KEYS = {
    "description",
    "datasets",
    "seeds",
    "budget",
    "search_space",
    "profile_backbone",
    "fixed",
    "grid",
    "contenders",
    "commands",
}
_DATASET_KEYS = {"name", "path", "per_class", "test_per_class"}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")  # names become file names inside the results folder


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: a built-in offline one (``path`` None) or a folder/CSV of one's own."""

    name: str
    path: Path | None
    per_class: tuple[int, ...]  # train+val images per class: one regime each
    test_per_class: int


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    datasets: tuple[DatasetSpec, ...]
    seeds: tuple[int, ...]
    budget: float  # seconds per contender and cell
    search_space: str
    profile_backbone: str
    fixed_backbone: str
    fixed_resolution: int
    grid_backbones: tuple[str, ...]
    grid_resolutions: tuple[int, ...]
    grid_heads: tuple[str, ...]
    grid_c: tuple[float, ...]
    contenders: tuple[str, ...]
    commands: dict[str, tuple[str, ...]]
    source: Path


def available_suites() -> list[str]:
    return names_in(SUITES_DIR)


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """A suite of ``autotransfer/bench/suites`` by name, or a YAML file of one's own."""
    path = builtin_or_path(name_or_path, SUITES_DIR, kind="benchmark suite", option="suite")
    given = read_yaml(path, "suite")
    check = ConfigChecker(str(path), "suite", "docs/bench.md and autotransfer/bench/suites/smoke.yaml")
    check.mapping("", given, _TOP_KEYS)
    if "datasets" not in given:
        raise check.fail("datasets", None, "a suite needs at least one dataset")
    if not isinstance(given["datasets"], list) or not given["datasets"]:
        raise check.fail("datasets", given["datasets"], "expected a non-empty list of datasets")
    datasets = tuple(_dataset(check, f"datasets[{i}]", entry, path.parent) for i, entry in enumerate(given["datasets"]))
    if len({d.name for d in datasets}) < len(datasets):
        raise check.fail("datasets", [d.name for d in datasets], "dataset names must be unique")
    space_name = check.text("search_space", given.get("search_space", "default"))
    space = load_search_space(space_name)
    fixed = check.mapping("fixed", given.get("fixed"), {"backbone", "resolution"})
    grid = check.mapping("grid", given.get("grid"), {"backbones", "resolutions", "heads", "c_grid"})
    commands = _commands(check, check.mapping("commands", given.get("commands"), set(given.get("commands") or {})))
    known = BUILTIN_CONTENDERS + tuple(commands)
    contenders = check.choices("contenders", given.get("contenders", list(known)), str, known)
    try:
        budget = parse_duration(given.get("budget", "5m"))
    except AutoTransferError as error:
        raise check.fail("budget", given.get("budget"), error.what) from error
    # A space that leaves backbones / resolutions to `auto` gives the fixed strategies and the grid these.
    backbones = list(space.backbones) or list(GRID_BACKBONES)
    resolutions = list(space.resolutions) or list(GRID_RESOLUTIONS)
    return Suite(
        name=path.stem,
        description=str(given.get("description", "")).strip(),
        datasets=datasets,
        seeds=check.choices("seeds", given.get("seeds", [0]), int),
        budget=budget,
        search_space=space_name,
        profile_backbone=check.text("profile_backbone", given.get("profile_backbone", DEFAULT_BACKBONE)),
        fixed_backbone=check.text("fixed.backbone", fixed.get("backbone", backbones[0])),
        fixed_resolution=check.integer("fixed.resolution", fixed.get("resolution", resolutions[0]), 16, 1024),
        grid_backbones=check.choices("grid.backbones", grid.get("backbones", backbones), str),
        grid_resolutions=check.choices("grid.resolutions", grid.get("resolutions", resolutions), int, positive=True),
        grid_heads=check.choices("grid.heads", grid.get("heads", list(space.probe_heads)), str, PROBE_HEADS),
        grid_c=check.choices("grid.c_grid", grid.get("c_grid", list(space.c_grid)), float, positive=True),
        contenders=tuple(dict.fromkeys(contenders)),
        commands=commands,
        source=path.resolve(),
    )


def _dataset(check: ConfigChecker, key: str, entry, folder: Path) -> DatasetSpec:
    entry = check.mapping(key, entry, _DATASET_KEYS)
    name = check.text(f"{key}.name", entry.get("name"))
    if not _SAFE_NAME.match(name):
        raise check.fail(f"{key}.name", name, "letters, digits, '.', '_' and '-' only")
    path = None
    if "path" in entry:
        path = Path(os.path.expanduser(check.text(f"{key}.path", entry["path"])))
        path = path if path.is_absolute() else folder / path
        if not path.exists():
            raise check.fail(f"{key}.path", str(path), "no such folder or file")
    elif name not in LOADERS:
        raise check.fail(
            f"{key}.name",
            name,
            f"not a built-in dataset ({', '.join(sorted(LOADERS))}); give a path: for a folder of your own",
        )
    return DatasetSpec(
        name=name,
        path=path,
        per_class=check.choices(f"{key}.per_class", entry.get("per_class"), int, positive=True),
        test_per_class=check.integer(f"{key}.test_per_class", entry.get("test_per_class", 50), 1, 1_000_000),
    )


def _commands(check: ConfigChecker, given: dict) -> dict[str, tuple[str, ...]]:
    """Command-line contenders: a string (split like a shell would, but never run by one) or a list."""
    commands = {}
    for name, value in given.items():
        if not _SAFE_NAME.match(str(name)):
            raise check.fail(f"commands.{name}", value, "a contender name: letters, digits, '.', '_' and '-' only")
        if name in BUILTIN_CONTENDERS:
            raise check.fail(f"commands.{name}", value, "this name is a built-in contender; choose another")
        try:
            argv = shlex.split(value) if isinstance(value, str) else value
        except ValueError as error:
            raise check.fail(f"commands.{name}", value, f"cannot split it: {error}") from error
        commands[str(name)] = check.choices(f"commands.{name}", argv, str)
    return commands
