"""What a running search tells the person watching it.

The search calls a ``Progress`` as it goes: ``stage`` when a stage starts (profile, probes,
fine-tuning, refit, save), ``step`` when one unit of a stage is done, ``trial`` for every finished
trial with the best one so far, ``close`` at the end (finished, failed or interrupted).

Three ways to show it, chosen from where the output goes:
- a terminal (or a notebook with ipywidgets): a rich live view of the stage, probes k/n, the
  fine-tuning trial, the best trial so far with its metric, elapsed / budget and an ETA; one line
  per finished trial goes into the scroll-back above it and stays there;
- anything else (a pipe, a CI log, a notebook without ipywidgets): the same events as plain lines;
- ``verbose=0``: nothing.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console, Group
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from autotransfer.budget import format_duration
from autotransfer.report.terminal import is_missing
from autotransfer.trial_status import BUDGET_STOPPED, NOT_STARTED

STAGES = ("profile", "probes", "fine-tuning", "refit", "save")
_RECORD_STAGE = {"probe": "probes", "finetune": "fine-tuning"}
_STATUS_MARK = {
    "complete": "[green]✓[/]",
    "pruned": "[yellow]✂[/]",
    BUDGET_STOPPED: "[yellow]⏱[/]",
    "fail": "[red]✗[/]",
}
TRIAL_LINE = {"trial_line": True}  # ``extra`` of a log record the progress view shows as its own line


class _ShownByProgress(logging.Filter):
    """Drops the log records a showing Progress prints itself (finished probes and trials), so the
    console has each once; file logs (fit.log) keep them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "trial_line", False)


def _live_possible(console: Console) -> bool:
    if console.is_jupyter:  # rich's live view in a notebook needs ipywidgets
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return False
        return True
    return console.is_terminal and not console.is_dumb_terminal


def _where(record: dict) -> str:
    """Where a record's score was measured, as its line says it: CV (a probe on small data) or val."""
    return "CV" if record.get("score_source") == "cv" else "val"


def describe_trial(record: dict) -> str:
    """``strategy backbone@px tap`` of a trial record (keys may be missing)."""
    given = {k: record.get(k) for k in ("strategy", "backbone", "resolution", "tap")}
    given = {k: v for k, v in given.items() if not is_missing(v) and v != ""}
    text = " ".join(str(given[k]) for k in ("strategy", "backbone") if k in given)
    if "resolution" in given:
        text += f"@{given['resolution']}px"
    if "tap" in given:
        text += f" {given['tap']}"
    return text


def _score(record: dict | None, key: str = "val_score") -> float | None:
    value = (record or {}).get(key)
    if is_missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Progress:
    """Listener of a search run (budget in seconds; ``verbose``: 0 silent, 1 stages and trials,
    2 also every step's text). ``console``: where to draw (default: standard error)."""

    def __init__(
        self, budget_seconds: float, verbose: int = 1, start: float | None = None, console: Console | None = None
    ) -> None:
        self.budget_seconds = float(budget_seconds)
        self.verbose = verbose
        self.start = start if start is not None else time.monotonic()
        self.console = console or Console(stderr=True)
        self.current = ""
        self.detail = ""
        self.total: int | None = None
        self.done = 0
        self.stage_start = self.start
        self.finished: dict[str, int] = {"probes": 0, "fine-tuning": 0}  # trials reported, per stage
        self.steps: dict[str, int] = {}  # units done, per stage
        self.totals: dict[str, int | None] = {}
        self.best: dict | None = None
        self.last_step = ""
        self.live = None
        self._filter = _ShownByProgress() if verbose else None
        for handler in logging.getLogger().handlers if self._filter else ():  # the console's, set up by the CLI
            handler.addFilter(self._filter)
        if verbose and _live_possible(self.console):
            from rich.live import Live

            self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4, transient=True)
            self.live.start()

    # ------------------------------------------------------------------ the interface the search calls
    def stage(self, name: str, total: int | None = None, detail: str = "", unit: str = "") -> None:
        """A stage of ``STAGES`` starts; ``total`` units when known, named by ``unit`` ("backbone/size pair(s)":
        a bare count beside the stage's name reads as the number of its trials)."""
        self.current, self.total, self.detail, self.done = name, total, detail, 0
        self.totals[name] = total
        self.stage_start = time.monotonic()
        self.last_step = ""
        if self.live is None:
            counted = f" ({total}{f' {unit}' if unit else ''})" if total else ""
            self._say(f"{name}{counted}{f': {detail}' if detail else ''}")
        elif self.verbose:
            self.live.console.print(
                f"[dim]{self._clock()}[/] [bold]{escape(name)}[/]" + (f": {escape(detail)}" if detail else ""),
                highlight=False,
            )

    def step(self, text: str = "") -> None:
        """One unit of the current stage finished."""
        self.done += 1
        self.steps[self.current] = self.done
        self.last_step = text
        if text and (self.live is None or self.verbose >= 2):
            self._print(f"{self.current}: {escape(text)}")

    def trial(self, record: dict, best: dict | None) -> None:
        """A trial finished (a leaderboard record); ``best`` is the best record so far."""
        stage = _RECORD_STAGE.get(str(record.get("stage")), str(record.get("stage")))
        self.finished[stage] = self.finished.get(stage, 0) + 1
        new_best = best is not None and self._same(record, best) and not self._same(best, self.best)
        self.best = best if best is not None else self.best
        self._print(self.trial_line(record, new_best))

    def close(self) -> None:
        """The run ended (finished, failed or interrupted): take the live view down."""
        if self.live is not None:
            self.live.stop()
            self.live = None
        for handler in logging.getLogger().handlers if self._filter else ():
            handler.removeFilter(self._filter)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ rendering
    def trial_line(self, record: dict, new_best: bool = False) -> str:
        """The one line a finished trial leaves in the scroll-back (rich markup)."""
        status = str(record.get("status") or "")
        mark = _STATUS_MARK.get(status, "·")
        stage = "probe" if record.get("stage") == "probe" else "fine-tune"
        value = _score(record)
        score = f"{_where(record)} {value:.4f}" if value is not None else status
        seconds = _score(record, "seconds")
        extra = ""
        if status in ("pruned", BUDGET_STOPPED, NOT_STARTED) and record.get("stopped"):
            extra = f" [dim]({escape(str(record['stopped']))})[/]"
        elif status == "fail" and record.get("error"):
            extra = f" [red]{escape(str(record['error'])[:100])}[/]"
        return (
            f"{mark} {stage} #{record.get('trial', '?')} {escape(describe_trial(record))}: [bold]{score}[/]"
            + (f" in {seconds:.1f}s" if seconds is not None else "")
            + extra
            + (" [bold green]new best[/]" if new_best else "")
        )

    def _render(self):
        elapsed = time.monotonic() - self.start
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        stage = Text(self.current or "starting", style="cyan")
        if self.total:
            stage.append(f"  {min(self.done, self.total)}/{self.total}")
        if self.detail:
            stage.append(f"  {self.detail}", style="dim")
        grid.add_row("stage", stage)
        if self.total:
            grid.add_row("", ProgressBar(total=self.total, completed=min(self.done, self.total), width=40))
        pairs, probes = self.steps.get("probes", 0), self.finished.get("probes", 0)
        finetune = self.finished.get("fine-tuning", 0)
        if probes or "probes" in self.totals:
            total = self.totals.get("probes")
            done = f"{min(pairs, total)}/{total} (backbone, size) pairs" if total else f"{pairs} pairs"
            grid.add_row("probes", f"{done}, {probes} tap(s) probed")
        if finetune or self.current == "fine-tuning":
            running = f", trial {finetune + 1} running" if self.current == "fine-tuning" else ""
            grid.add_row("fine-tuning", f"{finetune} trial(s) finished{running}")
        if self.best is not None:
            value = _score(self.best)
            which = f"({self.best.get('stage', '')} #{self.best.get('trial', '?')} {describe_trial(self.best)})"
            score = f"{_where(self.best)} {self.best.get('metric', 'score')} {value:.4f}" if value is not None else ""
            grid.add_row("best so far", Text.from_markup((f"[bold green]{score}[/] " if score else "") + escape(which)))
        budget = max(self.budget_seconds, 1e-9)
        time_text = Text(f"{format_duration(elapsed)} of {format_duration(self.budget_seconds)}")
        eta = self._eta()
        if eta is not None:
            time_text.append(f"  stage ETA {format_duration(eta)}", style="dim")
        time_text.append(f"  budget ends in {format_duration(max(0.0, self.budget_seconds - elapsed))}", style="dim")
        grid.add_row("time", time_text)
        grid.add_row("", ProgressBar(total=budget, completed=min(elapsed, budget), width=40))
        if self.last_step:
            grid.add_row("last", Text(self.last_step, style="dim", overflow="ellipsis", no_wrap=True))
        return Group(grid)

    def _eta(self) -> float | None:
        """Seconds left in the current stage, from its pace so far (None when unknown)."""
        if not self.total or not self.done:
            return None
        pace = (time.monotonic() - self.stage_start) / self.done
        left = pace * max(0, self.total - self.done)
        return min(left, max(0.0, self.budget_seconds - (time.monotonic() - self.start)))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _same(a: dict | None, b: dict | None) -> bool:
        return bool(a and b) and (a.get("stage"), a.get("trial")) == (b.get("stage"), b.get("trial"))

    def _clock(self) -> str:
        return escape(f"[{format_duration(time.monotonic() - self.start)} / {format_duration(self.budget_seconds)}]")

    def _print(self, markup: str) -> None:
        if not self.verbose:
            return
        if self.live is not None:
            self.live.console.print(f"[dim]{self._clock()}[/] {markup}", highlight=False)
        else:
            self._say(markup, markup=True)

    def _say(self, text: str, markup: bool = False) -> None:
        if self.verbose:
            line = f"{self._clock()} {text if markup else escape(text)}"
            self.console.print(line, highlight=False, soft_wrap=True, markup=True)
