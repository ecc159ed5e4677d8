"""Runs a suite cell by cell; a finished cell is a JSON file, so a rerun skips it (resumable).

A cell is (dataset, regime, seed, contender). Its result is written atomically once the contender
returns, with the settings that produced it: a cell whose settings changed (budget, search space,
command...) runs again. A contender that fails is recorded as failed and the suite goes on; a
half-done cell (killed mid-way) leaves no result and starts from scratch next time; failed cells
are tried again too (an out-of-memory or a fixed bug should not need a new folder).
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from autotransfer.bench.contenders import Cell, NotInstalled, contender, title
from autotransfer.bench.data import split_folders
from autotransfer.bench.suite import Suite
from autotransfer.budget import Deadline, format_duration
from autotransfer.errors import AutoTransferError
from autotransfer.files import write_text_atomic
from autotransfer.search.space import load_search_space

log = logging.getLogger("autotransfer.bench")


@dataclass(frozen=True)
class CellKey:
    dataset: str
    per_class: int
    seed: int
    contender: str

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.per_class}-s{self.seed}--{self.contender}"


def plan(suite: Suite, only: tuple[str, ...] | None = None) -> list[CellKey]:
    names = [c for c in suite.contenders if only is None or c in only]
    return [
        CellKey(d.name, n, seed, c) for d in suite.datasets for n in d.per_class for seed in suite.seeds for c in names
    ]


def cell_settings(suite: Suite, key: CellKey) -> dict:
    """What a cell's result depends on besides its key: a change reruns it."""
    spec = next(d for d in suite.datasets if d.name == key.dataset)
    settings = {
        "budget": suite.budget,
        "test_per_class": spec.test_per_class,
        "path": str(spec.path) if spec.path else None,
    }
    if key.contender == "fit":
        # the space's content, not just its name: editing autotransfer/search/spaces/default.yaml reruns `fit`
        settings["search_space"] = [asdict(load_search_space(suite.search_space)), suite.profile_backbone]
    elif key.contender == "grid":
        settings["grid"] = [suite.grid_backbones, suite.grid_resolutions, suite.grid_heads, suite.grid_c]
    elif key.contender in suite.commands:
        settings["command"] = list(suite.commands[key.contender])
    else:
        settings["fixed"] = [suite.fixed_backbone, suite.fixed_resolution]
    return json.loads(json.dumps(settings))


def stored(out: Path, suite: Suite, key: CellKey) -> dict | None:
    """The cell's record if it ran with the current settings (failed or not), else None."""
    path = out / "cells" / f"{key.name}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("settings") == cell_settings(suite, key) else None


def run_suite(suite: Suite, out: Path, only: tuple[str, ...] | None = None) -> list[dict]:
    """Run every unfinished cell of ``suite`` into ``out``; return the records of all its cells."""
    (out / "cells").mkdir(parents=True, exist_ok=True)
    lock = open(out / "bench.lock", "w")  # noqa: SIM115  (held until the suite ends)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        raise AutoTransferError(
            "Another `autotransfer bench` is writing to this folder.",
            where=str(out),
            fix="wait for it, or give this one another --out.",
        ) from error
    cells = plan(suite, only)
    todo = [key for key in cells if (record := stored(out, suite, key)) is None or record["error"] is not None]
    log.info(
        "suite %s: %d cells, %d finished earlier, %d to run (failed ones again; budget %s each)",
        suite.name,
        len(cells),
        len(cells) - len(todo),
        len(todo),
        format_duration(suite.budget),
    )
    for number, key in enumerate(todo, 1):
        record = _run_cell(suite, out, key)
        result = (
            f"test accuracy {record['test_accuracy']:.4f}"
            if record["error"] is None
            else record["error"].splitlines()[0]
            if record["status"] == "not installed"
            else f"FAILED: {record['error'].splitlines()[0]}"
        )
        log.info(
            "[%d/%d] %s %d/class seed %d, %s: %s in %s",
            number,
            len(todo),
            key.dataset,
            key.per_class,
            key.seed,
            title(key.contender),
            result,
            format_duration(record["seconds"]),
        )
    lock.close()
    return finished_records(suite, out, only)


def finished_records(suite: Suite, out: Path, only: tuple[str, ...] | None = None) -> list[dict]:
    """The records of the cells of ``suite`` (its ``only`` contenders) finished in ``out`` with the current settings."""
    return [record for key in plan(suite, only) if (record := stored(out, suite, key)) is not None]


def _run_cell(suite: Suite, out: Path, key: CellKey) -> dict:
    spec = next(d for d in suite.datasets if d.name == key.dataset)
    train_dir, test_dir = split_folders(spec, key.per_class, key.seed, out / "data")
    work = out / "work" / key.name
    shutil.rmtree(work, ignore_errors=True)  # a cell killed mid-way starts again from nothing
    work.mkdir(parents=True)
    cell = Cell(
        suite, key.dataset, key.per_class, key.seed, train_dir, test_dir, work, Deadline(suite.budget, time.monotonic())
    )
    record = {
        "dataset": key.dataset,
        "per_class": key.per_class,
        "seed": key.seed,
        "contender": key.contender,
        "title": title(key.contender),
        "n_classes": sum(1 for p in test_dir.iterdir() if p.is_dir()),
        "test_accuracy": None,
        "test_scores": {},  # BENCH_METRICS -> score; a tool without test_predictions: accuracy only
        "val_accuracy": None,
        "what": "",
        "configs": [],
        "error": None,
        "status": "ok",
        "settings": cell_settings(suite, key),
    }
    try:
        outcome = contender(key.contender, suite)(cell)
        record.update(
            test_accuracy=outcome.test_accuracy,
            test_scores=outcome.test_scores,
            val_accuracy=outcome.val_accuracy,
            what=outcome.what,
            configs=outcome.configs,
        )
    except KeyboardInterrupt:
        raise
    except NotInstalled as error:  # a peer `make peers` could not set up: shown as such, never dropped
        record.update(error=str(error), status="not installed")
    except AutoTransferError as error:
        record.update(error=str(error), status="failed")
    except Exception as error:  # a contender's own bug must not stop the suite: recorded, with its traceback
        record.update(error=f"{type(error).__name__}: {error} (traceback in {work / 'error.txt'})", status="failed")
        (work / "error.txt").write_text(traceback.format_exc())
    record["seconds"] = cell.deadline.elapsed()
    # a peer that is not installed ran nothing: no budget was kept or broken (null in the cell)
    record["within_budget"] = None if record["status"] == "not installed" else record["seconds"] <= suite.budget * 1.05
    write_text_atomic(out / "cells" / f"{key.name}.json", json.dumps(record, indent=1))
    return record
