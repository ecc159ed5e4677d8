"""Live progress of a search: a rich live view on a terminal, plain lines elsewhere, silence at verbose=0."""

import io
import logging
import time

import pandas as pd
from rich.console import Console

from autotransfer.report.progress import TRIAL_LINE, Progress

PROBE = {"stage": "probe", "trial": 0, "status": "complete", "strategy": "mid_layer_probe"}
PROBE.update(
    backbone="mobilenetv2_100", resolution=64, tap="blocks.4", val_score=0.875, val_accuracy=0.875, seconds=2.5
)
PRUNED = {"stage": "finetune", "trial": 1, "status": "pruned", "strategy": "lp_ft", "backbone": "mobilenetv2_100"}
PRUNED.update(
    resolution=64,
    tap="head",
    val_score=0.5,
    val_accuracy=0.5,
    seconds=6.8,
    stopped="time budget: stopped after epoch 1",
)
FAILED = {"stage": "finetune", "trial": 0, "status": "fail", "strategy": "finetune_all", "backbone": "x"}
FAILED.update(resolution=pd.NA, tap=None, val_accuracy=pd.NA, seconds=float("nan"), error="out of memory")


def drive(progress: Progress) -> None:
    progress.stage("profile", detail="mobilenetv2_100 at 128px")
    progress.stage("probes", total=3, unit="backbone/size pair(s)")
    progress.step("mobilenetv2_100@64 features")
    progress.trial(PROBE, PROBE)
    progress.step()
    progress.stage("fine-tuning", detail="2 candidates")
    progress.trial(FAILED, PROBE)
    progress.trial(PRUNED, PROBE)
    progress.stage("refit")
    progress.stage("save")
    progress.close()


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120, color_system=None), buffer


def test_plain_lines_when_not_a_terminal():
    con, buffer = console(terminal=False)
    drive(Progress(90, start=time.monotonic(), console=con))
    text = buffer.getvalue()
    for expected in (
        "[0s / 90s] profile: mobilenetv2_100 at 128px",
        "probes (3 backbone/size pair(s))",  # issue 26: "probes (6)" was followed by 11 probes, one per tap
        "probes: mobilenetv2_100@64 features",
        "probe #0 mid_layer_probe mobilenetv2_100@64px blocks.4: val 0.8750 in 2.5s new best",
        "fine-tune #0 finetune_all x: fail out of memory",
        "fine-tune #1 lp_ft mobilenetv2_100@64px head: val 0.5000 in 6.8s (time budget: stopped after epoch 1)",
        "refit",
        "save",
    ):
        assert expected in text, (expected, text)
    assert text.count("new best") == 1
    assert "\x1b[" not in text  # no escape codes in a log


def test_silent_with_verbose_0():
    con, buffer = console(terminal=True)
    drive(Progress(90, verbose=0, console=con))
    assert buffer.getvalue() == ""


def test_live_view_on_a_terminal_keeps_one_line_per_trial():
    con, buffer = console(terminal=True)
    progress = Progress(90, console=con)
    assert progress.live is not None
    progress.stage("probes", total=3)
    progress.step("features")
    progress.trial(PROBE, PROBE)
    view = Console(file=io.StringIO(), width=120, color_system=None)
    view.print(progress._render())
    shown = view.file.getvalue()
    assert "probes  1/3" in shown and "best so far" in shown and "val score 0.8750" in shown
    assert "of 90s" in shown and "stage ETA" in shown
    progress.stage("fine-tuning")
    progress.trial(PRUNED, PROBE)
    view = Console(file=io.StringIO(), width=120, color_system=None)
    view.print(progress._render())
    assert "1 trial(s) finished, trial 2 running" in view.file.getvalue()
    progress.close()
    text = buffer.getvalue()
    assert "probe #0 mid_layer_probe" in text and "fine-tune #1 lp_ft" in text  # kept in the scroll-back
    assert progress.live is None


def test_a_notebook_gets_the_live_view_only_with_ipywidgets(monkeypatch):
    """rich draws live views in Jupyter through ipywidgets; without it, plain lines are printed."""
    import sys
    import types

    from autotransfer.report.progress import _live_possible

    notebook = Console(file=io.StringIO(), force_jupyter=True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    assert not _live_possible(notebook)
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    assert _live_possible(notebook)
    assert not _live_possible(Console(file=io.StringIO(), force_terminal=False))


def test_a_showing_progress_keeps_trial_log_lines_off_the_console_only():
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    root = logging.getLogger()
    root.addHandler(handler)
    log = logging.getLogger("autotransfer.test")
    log.setLevel(logging.INFO)
    try:
        with Progress(60, verbose=1, console=Console(file=io.StringIO())):
            log.info("probe x: val 0.9", extra=TRIAL_LINE)  # the progress view prints its own line for it
            log.info("time budget: stopping")
        log.info("probe y: val 0.8", extra=TRIAL_LINE)  # no progress view: the log line is the only one
        with Progress(60, verbose=0):
            log.info("probe z: val 0.7", extra=TRIAL_LINE)
    finally:
        root.removeHandler(handler)
    assert seen == ["time budget: stopping", "probe y: val 0.8", "probe z: val 0.7"]
