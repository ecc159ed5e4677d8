"""``profile.json`` of a run: the dataset's profile (transfer/profile.py) and what the run adds to it, as
typed fields: `auto`'s choice, the placement the probes measured (or why they did not), the machine load
and the unused budget. The file keeps one flat JSON object (the profile's keys, then the run's); a key
neither knows is another version's file, refused with one clear error."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from autotransfer.errors import written_by_another_version
from autotransfer.files import write_text_atomic
from autotransfer.search.auto_space import AutoChoice
from autotransfer.search.placement import Placement
from autotransfer.transfer.profile import DatasetProfile, Prior

_PROFILE_FIELDS = {f.name for f in dataclasses.fields(DatasetProfile)}
_REQUIRED = {
    f.name
    for f in dataclasses.fields(DatasetProfile)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
}
_RUN_FIELDS = ("auto", "measured_skipped", "measured", "machine_load", "budget_unused", "search_ends")


@dataclass(kw_only=True)
class RunProfile:
    """``dataset``: what the profiler measured; ``auto``: what `auto` chose (None: the space named the
    backbones and sizes); ``measured``: the probes' placement, or ``measured_skipped``: why there is none;
    ``machine_load``: cpu_threads.busiest_load's; ``budget_unused``: seconds and share of the budget left;
    ``search_ends``: why the stages stopped where they did (RunContext.search_ended), in order."""

    dataset: DatasetProfile
    auto: AutoChoice | None = None
    measured_skipped: str | None = None
    measured: Placement | None = None
    machine_load: dict[str, float] | None = None
    budget_unused: dict[str, float] | None = None
    search_ends: list[str] | None = None

    def to_json(self) -> dict:
        run = {
            "auto": self.auto.to_json() if self.auto else None,
            "measured_skipped": self.measured_skipped,
            "measured": self.measured.to_json() if self.measured else None,
            "machine_load": self.machine_load,
            "budget_unused": self.budget_unused,
            "search_ends": self.search_ends,
        }
        return {**self.dataset.to_json(), **{k: v for k, v in run.items() if v is not None}}

    @classmethod
    def from_json(cls, document: dict) -> RunProfile:
        unknown = sorted(set(document) - _PROFILE_FIELDS - set(_RUN_FIELDS))
        missing = sorted(_REQUIRED - set(document))
        if unknown or missing:
            raise written_by_another_version("profile.json", unknown + missing)
        dataset = {k: v for k, v in document.items() if k in _PROFILE_FIELDS}
        dataset["prior"] = Prior.from_json(dataset["prior"])
        auto, measured = document.get("auto"), document.get("measured")
        return cls(
            dataset=DatasetProfile(**dataset),
            auto=AutoChoice.from_json(auto) if auto else None,
            measured_skipped=document.get("measured_skipped"),
            measured=Placement.from_json(measured) if measured else None,
            machine_load=document.get("machine_load"),
            budget_unused=document.get("budget_unused"),
            search_ends=document.get("search_ends"),
        )

    def save(self, out: Path) -> None:
        write_text_atomic(out / "profile.json", json.dumps(self.to_json(), indent=2, default=str))

    @classmethod
    def load(cls, out: Path) -> RunProfile:
        return cls.from_json(json.loads((out / "profile.json").read_text()))
