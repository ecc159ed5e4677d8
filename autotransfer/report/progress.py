"""What a running search tells the person watching it.

The search calls a ``Progress`` as it goes: ``stage`` when a stage starts (profile, probes,
fine-tuning, refit, save), ``step`` when one unit of a stage is done, ``trial`` for every finished
trial with the best one so far. This implementation writes plain log lines; ``verbose=0`` is silent.
"""

from __future__ import annotations

import logging
import time

from autotransfer.budget import format_duration

log = logging.getLogger(__name__)

STAGES = ("profile", "probes", "fine-tuning", "refit", "save")


class Progress:
    """Listener of a search run (budget in seconds; ``verbose``: 0 silent, 1 stages and trials)."""

    def __init__(self, budget_seconds: float, verbose: int = 1, start: float | None = None) -> None:
        self.budget_seconds = budget_seconds
        self.verbose = verbose
        self.start = start if start is not None else time.monotonic()
        self.current = ""

    def _say(self, text: str) -> None:
        if self.verbose:
            elapsed = format_duration(time.monotonic() - self.start)
            print(f"[{elapsed} / {format_duration(self.budget_seconds)}] {text}", flush=True)

    def stage(self, name: str, total: int | None = None, detail: str = "") -> None:
        """A stage of ``STAGES`` starts; ``total`` units when known."""
        self.current = name
        self._say(f"{name}{f' ({total})' if total else ''}{f': {detail}' if detail else ''}")

    def step(self, text: str = "") -> None:
        """One unit of the current stage finished."""
        if text:
            self._say(f"{self.current}: {text}")

    def trial(self, record: dict, best: dict | None) -> None:
        """A trial finished (a record as in ``search.records``); ``best`` is the best record so far."""
        value = record.get("val_accuracy")
        score = f"val {value:.4f}" if isinstance(value, float) else record.get("status", "")
        best_text = f", best {best['val_accuracy']:.4f}" if best else ""
        self._say(f"{record['stage']} trial {record['trial']} {record.get('strategy', '')}: {score}{best_text}")

    def close(self) -> None:
        """The run ended (finished, failed or interrupted)."""
