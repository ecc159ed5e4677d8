"""The plots of the run report and the bench page: one matplotlib set-up (Agg backend, the pages' style)
and the helpers that turn a figure into inline SVG or a PNG data: URL, so every page stays one file."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import pandas as pd

from autotransfer.trial_status import RAN

if TYPE_CHECKING:
    from autotransfer.transfer.profile import DatasetProfile

STAGE_STYLE = {"probe": ("o", "#3465a4"), "finetune": ("s", "#f57900")}  # marker, colour
STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "autotransfer"}


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed) with the pages' style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def svg(figure) -> str:
    """A matplotlib figure as inline SVG text (closed afterwards)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def png_data_url(figure) -> str:
    """A matplotlib figure as a data: URL of a PNG (closed afterwards)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    pyplot().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials no other trial beats on both score (higher) and cost (lower)."""
    done = frame.dropna(subset=["val_score", "seconds"])
    if "status" in done:
        done = done[done["status"].isin(RAN)]
    done = done.sort_values(["seconds", "val_score"], ascending=[True, False])
    front, best = [], -1.0
    for index, row in done.iterrows():
        if row["val_score"] > best:
            front.append(index)
            best = row["val_score"]
    return done.loc[front]


def distance_plot(profile: DatasetProfile) -> str | None:
    """The profile's domain distance to ImageNet per depth group of the profiling backbone."""
    groups = profile.group_distance
    if not groups:
        return None
    figure, axis = pyplot().subplots(figsize=(6.4, 3))
    x = list(range(len(groups)))
    axis.plot(x, [g.get("distance") for g in groups], marker="o", color="#3465a4")
    axis.set_xticks(x, [str(g.get("name", g.get("group", i))) for i, g in enumerate(groups)], rotation=30, ha="right")
    axis.set_xlabel(f"depth group of {profile.backbone} (low → high)")
    axis.set_ylabel("distance to ImageNet")
    axis.grid(alpha=0.3)
    return svg(figure)


def _scatter_stages(axis, trials: pd.DataFrame, x: str, labels: dict[str, str]) -> None:
    """One marker and colour per stage: ``trials[x]`` against the score; ``labels``: the legend per stage."""
    for stage, (marker, colour) in STAGE_STYLE.items():
        part = trials[trials["stage"] == stage]
        if len(part):
            axis.scatter(part[x], part["val_score"], marker=marker, alpha=0.75, color=colour, label=labels[stage])


def _log_seconds_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_xscale("log")
    axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def pareto_plot(frame: pd.DataFrame, labels: dict[str, str]) -> str | None:
    """Every trial that ran, its score against its cost, the Pareto front and the chosen trial ringed;
    ``labels``: the legend of each stage, saying where its scores were measured (CV or the val split)."""
    done = frame.dropna(subset=["val_score", "seconds"])
    done = done[done["status"].isin(RAN)]
    if not len(done):
        return None
    figure, axis = pyplot().subplots(figsize=(6.4, 3.6))
    _scatter_stages(axis, done, "seconds", labels)
    front = pareto_front(frame)
    if len(front) > 1:  # one point draws no line: its legend entry would show a line that is not there
        axis.step(front["seconds"], front["val_score"], where="post", color="black", lw=1, label="Pareto front")
    chosen = done[done["chosen"]]
    if len(chosen):
        if len(chosen) > 1:  # the members of a chosen ensemble: the ensemble itself is no point of this chart
            label = "ensemble members (★)"
        else:
            label = "chosen (★)" if chosen.index[0] in front.index else "chosen (★), off the front: see why below"
        axis.scatter(chosen["seconds"], chosen["val_score"], s=180, facecolors="none", edgecolors="#cc0000",
                     linewidths=1.5, label=label)  # fmt: skip
    _log_seconds_axis(axis)
    axis.set_xlabel("cost of the trial (seconds, log scale)")
    axis.set_ylabel("search score (the run's metric)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8, framealpha=0.85)
    return svg(figure)


def history_plot(frame: pd.DataFrame, labels: dict[str, str]) -> str | None:
    """Both stages in the order they ran, against the trial time spent so far; the best-so-far line
    only over trials that ran (a stage with none says so instead of drawing a flat line at 0)."""
    ordered = frame.copy()
    ordered["order"] = ordered["stage"].map({"probe": 0, "finetune": 1}).fillna(2)
    ordered = ordered.sort_values(["order", "trial"])
    ran = ordered[ordered["status"].isin(RAN) & ordered["val_score"].notna()].copy()
    if not len(ran):
        return None
    ran["at"] = ran["seconds"].fillna(0).cumsum()
    figure, axis = pyplot().subplots(figsize=(6.4, 3.3))
    _scatter_stages(axis, ran, "at", labels)
    axis.step(ran["at"], ran["val_score"].cummax(), where="post", color="black", lw=1, label="best so far")
    if not (ran["stage"] == "finetune").any():
        axis.set_title("no fine-tuning trial finished within the budget", fontsize=8, color="#555", loc="left")
    axis.set_xlabel("time spent in trials (seconds, cumulative: probes, then fine-tuning)")
    axis.set_ylabel("search score (the run's metric)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8, framealpha=0.85)
    return svg(figure)
