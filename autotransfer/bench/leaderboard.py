"""Finished cells -> ``leaderboard.csv`` (one row per cell), ``leaderboard.md`` and ``report.html``.

Groups are (dataset, regime); contenders are compared within a group over the suite's seeds. The
oracle of a (group, seed) is the best test accuracy of any configuration the grid tried or any
fixed strategy reached; normalised regret is ``(oracle - accuracy) / (oracle - chance)``, so 0 is
the oracle, 1 is guessing, and a negative regret beats every configuration of the grid.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from autotransfer.bench.contenders import FIXED
from autotransfer.bench.suite import Suite
from autotransfer.files import write_text_atomic
from autotransfer.report.outputs import svg

CSV_COLUMNS = [
    "dataset",
    "per_class",
    "group",
    "seed",
    "contender",
    "title",
    "test_accuracy",
    "val_accuracy",
    "seconds",
    "within_budget",
    "oracle",
    "regret",
    "rank",
    "what",
    "error",
    "status",
]


def cell_frame(records: list[dict], suite: Suite) -> pd.DataFrame:
    """One row per cell with the oracle, the normalised regret and the rank within its (group, seed)."""
    frame = pd.DataFrame(records)
    derived = frame["error"].map(lambda e: "ok" if e is None or pd.isna(e) else "failed")  # cells from before `status`
    frame["status"] = frame["status"].fillna(derived) if "status" in frame else derived
    frame["group"] = frame["dataset"] + " " + frame["per_class"].astype(str) + "/class"
    # the grid has no budget; a peer that is not installed ran nothing (cells written before this said True)
    budgeted = (frame["contender"] != "grid") & (frame["status"] != "not installed")
    frame["within_budget"] = frame["within_budget"].where(budgeted)
    oracle_sources = frame["contender"].isin(list(FIXED)) | (frame["contender"] == "grid")
    oracles = {}
    for (group, seed), part in frame.groupby(["group", "seed"]):
        if not (part["contender"] == "grid").any():
            continue
        grid_configs = [c["test_accuracy"] for rows in part["configs"] for c in rows]
        reached = part.loc[oracle_sources[part.index], "test_accuracy"].dropna().tolist()
        oracles[(group, seed)] = max(grid_configs + reached)
    frame["oracle"] = [oracles.get((g, s), np.nan) for g, s in zip(frame["group"], frame["seed"])]
    chance = 1.0 / frame["n_classes"]
    frame["regret"] = (frame["oracle"] - frame["test_accuracy"]) / (frame["oracle"] - chance)
    frame["rank"] = frame.groupby(["group", "seed"])["test_accuracy"].rank(ascending=False, method="average")
    order = {name: i for i, name in enumerate(suite.contenders)}
    groups = [f"{d.name} {n}/class" for d in suite.datasets for n in d.per_class]
    frame["_g"], frame["_c"] = frame["group"].map(groups.index), frame["contender"].map(order)
    return frame.sort_values(["_g", "_c", "seed"])[CSV_COLUMNS].reset_index(drop=True)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (group, contender): mean and std of test accuracy over seeds, wall time, regret, rank."""
    grouped = frame.groupby(["group", "title"], sort=False)
    return pd.DataFrame(
        {
            "mean": grouped["test_accuracy"].mean(),
            "std": grouped["test_accuracy"].std(ddof=0),
            "seeds": grouped["test_accuracy"].count(),
            "failed": grouped["error"].count(),
            "not_installed": grouped["status"].agg(lambda s: int((s == "not installed").sum())),
            "seconds": grouped["seconds"].mean(),
            "over_budget": grouped["within_budget"].agg(lambda s: int((s == False).sum())),  # noqa: E712 (NaN: not run)
            "regret": grouped["regret"].mean(),
            "rank": grouped["rank"].mean(),
        }
    ).reset_index()


def _pivot(table: pd.DataFrame, cell) -> pd.DataFrame:
    shown = table.assign(text=[cell(row) for row in table.itertuples()])
    return shown.pivot(index="title", columns="group", values="text").reindex(
        index=list(dict.fromkeys(table["title"])), columns=list(dict.fromkeys(table["group"]))
    )


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| contender | " + " | ".join(frame.columns) + " |", "|---" * (len(frame.columns) + 1) + "|"]
    lines += [
        f"| {index} | " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
        for index, row in frame.iterrows()
    ]
    return "\n".join(lines)


def render_markdown(frame: pd.DataFrame, suite: Suite, machine: str) -> str:
    table = summary(frame)
    accuracy = _pivot(
        table,
        lambda r: (
            ("not installed" if r.not_installed else "failed")
            if r.seeds == 0
            else f"{r.mean:.3f} ± {r.std:.3f}" + (f" ({r.failed} failed)" if r.failed else "")
        ),
    )
    overall = table.groupby("title", sort=False).agg(rank=("rank", "mean"), regret=("regret", "mean"))
    accuracy["mean rank"] = overall["rank"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    if overall["regret"].notna().any():
        accuracy["mean regret"] = overall["regret"].map(lambda v: "" if pd.isna(v) else f"{v:+.3f}")
    seconds = _pivot(table, lambda r: f"{r.seconds:.0f}" + (" (over budget)" if r.over_budget else ""))
    regret = _pivot(table, lambda r: "" if pd.isna(r.regret) else f"{r.regret:+.3f}")
    seeds = ", ".join(map(str, suite.seeds))
    parts = [
        f"# Benchmark suite `{suite.name}`",
        "",
        suite.description,
        "",
        f"Machine: {machine}",
        "",
        f"Budget {suite.budget:.0f} s per contender and cell; seeds {seeds}; search space `{suite.search_space}`; "
        f"fixed strategies on {suite.fixed_backbone} at {suite.fixed_resolution}px. Test accuracy on held-out "
        "images no contender saw (mean ± std over seeds); rank 1 is best within a dataset and seed.",
        "",
        "## Test accuracy",
        "",
        _markdown(accuracy),
        "",
        "## Wall time (s, mean over seeds)",
        "",
        _markdown(seconds),
        "",
    ]
    if frame["oracle"].notna().any():
        parts += [
            "## Normalised regret vs the oracle (0 = oracle, 1 = chance, < 0 beats the grid)",
            "",
            _markdown(regret),
            "",
        ]
    chose = frame[frame["what"].fillna("").astype(str) != ""].drop_duplicates("title")  # the backbone each used
    if len(chose):
        parts += ["## What each contender ran (its first cell; every cell: report.html, leaderboard.csv)", ""]
        parts += [f"- {r.title} ({r.group} seed {r.seed}): {r.what}" for r in chose.itertuples()] + [""]
    missing = frame[frame["status"] == "not installed"]
    if len(missing):
        parts += ["## Not installed (`make peers`)", ""]
        parts += [
            f"- {title}: {str(error).splitlines()[0]}" for title, error in zip(missing["title"], missing["error"])
        ]
        parts += [""]
    over = frame[frame["within_budget"] == False]  # noqa: E712 (a column of bools and NaN)
    if len(over):
        parts += (
            ["## Over budget (ended more than 5% after the budget)", ""]
            + [f"- {r.group} seed {r.seed}, {r.title}: {r.seconds:.0f} s" for r in over.itertuples()]
            + [""]
        )
    failures = frame[frame["error"].notna() & (frame["status"] != "not installed")]
    if len(failures):
        parts += (
            ["## Failed cells", ""]
            + [f"- {r.group} seed {r.seed}, {r.title}: {str(r.error).splitlines()[0]}" for r in failures.itertuples()]
            + [""]
        )
    return "\n".join(parts)


def _plots(frame: pd.DataFrame) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary(frame).dropna(subset=["mean"])
    groups = list(dict.fromkeys(table["group"]))
    titles = list(dict.fromkeys(table["title"]))
    if not groups:  # every cell failed or is not installed: nothing to plot
        return {"accuracy": "<p>No finished cell.</p>", "rank": ""}
    colours = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(titles)}
    figure, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), squeeze=False)
    for axis, group in zip(axes[0], groups):
        part = table[table["group"] == group]
        for row in part.itertuples():
            axis.errorbar(row.seconds, row.mean, yerr=row.std, fmt="o", color=colours[row.title], label=row.title)
        axis.set_xscale("log")
        axis.set_title(group)
        axis.set_xlabel("wall time (s, log)")
        axis.set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    plots = {"accuracy": svg(figure)}
    ranks = table.pivot(index="title", columns="group", values="rank").reindex(index=titles, columns=groups)
    figure, axis = plt.subplots(figsize=(1.3 * len(groups) + 4, 0.35 * len(titles) + 1.5))
    image = axis.imshow(ranks.to_numpy(dtype=float), cmap="viridis_r", aspect="auto")
    axis.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    axis.set_yticks(range(len(titles)), titles)
    for (i, j), value in np.ndenumerate(ranks.to_numpy(dtype=float)):
        if not np.isnan(value):
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", color="white", fontsize=8)
    figure.colorbar(image, label="mean rank (1 = best)")
    axis.set_title("Rank of each contender per dataset and regime")
    plots["rank"] = svg(figure)
    return plots


def render_html(frame: pd.DataFrame, suite: Suite, machine: str) -> str:
    plots = _plots(frame)
    table = frame.drop(columns=["what"]).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")
    what = "".join(
        f"<li>{html.escape(r.group)} seed {r.seed}, {html.escape(r.title)}: {html.escape(str(r.what))}</li>"
        for r in frame.itertuples()
        if r.what
    )
    name = html.escape(suite.name)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>autotransfer bench: {name}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1600px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head><body>
<h1>Benchmark suite {name}</h1><p>{html.escape(suite.description)}</p><p>{html.escape(machine)}</p>
<h2>Accuracy against wall time</h2>{plots["accuracy"]}<h2>Ranks</h2>{plots["rank"]}
<h2>Every cell</h2>{table}<h2>What each contender chose</h2><ul>{what}</ul></body></html>"""


def write_leaderboard(records: list[dict], suite: Suite, out: Path, machine: str) -> pd.DataFrame:
    frame = cell_frame(records, suite)
    write_text_atomic(out / "leaderboard.csv", frame.to_csv(index=False))
    write_text_atomic(out / "leaderboard.md", render_markdown(frame, suite, machine))
    write_text_atomic(out / "report.html", render_html(frame, suite, machine))
    return frame
