"""The bench's ``report.html``: the score of each contender against its wall time per group, the ranks,
and every cell, from ``templates/bench.html.j2`` with the run report's style sheet and plot set-up."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from autotransfer.bench.suite import Suite
from autotransfer.report.page import render
from autotransfer.report.plots import pyplot, svg


def score_plot(table: pd.DataFrame, metric: str) -> str:
    """One panel per group: each contender's mean ``metric`` (± std over seeds) against its wall time."""
    plt = pyplot()
    groups, titles = list(dict.fromkeys(table["group"])), list(dict.fromkeys(table["title"]))
    colours = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(titles)}
    figure, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), squeeze=False)
    for axis, group in zip(axes[0], groups):
        for row in table[table["group"] == group].itertuples():
            axis.errorbar(row.seconds, row.mean, yerr=row.std, fmt="o", color=colours[row.title], label=row.title)
        axis.set_xscale("log")
        axis.set_title(group)
        axis.set_xlabel("wall time (s, log)")
        axis.set_ylabel(f"test {metric}")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return svg(figure)


def rank_plot(table: pd.DataFrame) -> str:
    """The mean rank of each contender per group as a shaded grid."""
    groups, titles = list(dict.fromkeys(table["group"])), list(dict.fromkeys(table["title"]))
    ranks = table.pivot(index="title", columns="group", values="rank").reindex(index=titles, columns=groups)
    figure, axis = pyplot().subplots(figsize=(1.3 * len(groups) + 4, 0.35 * len(titles) + 1.5))
    image = axis.imshow(ranks.to_numpy(dtype=float), cmap="viridis_r", aspect="auto")
    axis.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    axis.set_yticks(range(len(titles)), titles)
    for (i, j), value in np.ndenumerate(ranks.to_numpy(dtype=float)):
        if not np.isnan(value):
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", color="white", fontsize=8)
    figure.colorbar(image, label="mean rank (1 = best)")
    axis.set_title("Rank of each contender per dataset and regime")
    return svg(figure)


def render_html(*, frame: pd.DataFrame, table: pd.DataFrame, suite: Suite, machine: str, metric: str) -> str:
    """The page of a ``cell_frame`` (``table``: its ``summary``; ``metric``: the name of what it ranks by)."""
    scored = table.dropna(subset=["mean"])
    finished = bool(len(scored))  # else every cell failed or is not installed: nothing to plot
    cells = frame.drop(columns=["what"]).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")
    return render(
        "bench.html.j2",
        suite=suite,
        machine=machine,
        metric=metric[0].upper() + metric[1:],
        score_plot=Markup(score_plot(scored, metric)) if finished else None,
        rank_plot=Markup(rank_plot(scored)) if finished else None,
        cells=Markup(cells),  # pandas escapes the cells' text
        what=[(r.group, r.seed, r.title, str(r.what)) for r in frame.itertuples() if r.what],
    )
