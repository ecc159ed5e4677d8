"""Finished cells -> ``leaderboard.csv`` (one row per cell), ``leaderboard.md`` and ``report.html``.

Groups are (dataset, regime); contenders are compared within a group over the suite's seeds by one
metric, ``accuracy``, ``balanced_accuracy`` or ``f1_macro`` on the held-out images (the CSV keeps
all three). The oracle of a (group, seed) is the best test score of any configuration the grid
tried or any fixed strategy reached; normalised regret is ``(oracle - score) / (oracle - chance)``,
so 0 is the oracle, 1 is guessing, and a negative regret beats every configuration of the grid.
Chance is ``1 / n_classes`` for all three metrics: a uniform random guess scores about 1/K in
accuracy, balanced accuracy and macro F1 alike on a balanced test set, as the bench's are
(``test_per_class`` images of every class).

A finished cell without the chosen metric (it ran before the bench recorded it, or is a
command-line tool that printed no ``test_predictions``) is "not recorded": it is left out of
means, ranks and regret, and the markdown counts it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from autotransfer.bench.contenders import BENCH_METRICS, FIXED
from autotransfer.bench.page import render_html
from autotransfer.bench.suite import Suite
from autotransfer.errors import AutoTransferError
from autotransfer.files import write_text_atomic
from autotransfer.transfer.metrics import PROBABILITY_METRICS

CSV_COLUMNS = [
    "dataset",
    "per_class",
    "group",
    "seed",
    "contender",
    "title",
    "test_accuracy",
    "test_balanced_accuracy",
    "test_f1_macro",
    "val_accuracy",
    "seconds",
    "within_budget",
    "metric",
    "oracle",
    "regret",
    "rank",
    "what",
    "error",
    "status",
    "n_classes",
    "at_chance",
]


METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1_macro": "macro F1"}


def check_bench_metric(name: str) -> str:
    """``name`` if the leaderboard can rank by it (one of ``BENCH_METRICS``); AutoTransferError otherwise."""
    if name in BENCH_METRICS:
        return name
    why = (
        "it needs class probabilities, and the peer contenders give only class names"
        if name in PROBABILITY_METRICS
        else "no such metric"
    )
    raise AutoTransferError(
        f"The bench cannot rank by {name!r}: {why}.",
        where="{option}",
        fix="use {option:accuracy}, balanced_accuracy or f1_macro.",
        option="metric",
    )


def _config_score(config: dict, metric: str) -> float | None:
    """A grid configuration's test score under ``metric``; None if it ran before the grid kept ``test_scores``."""
    return (config.get("test_scores") or {"accuracy": config["test_accuracy"]}).get(metric)


def _oracles(frame: pd.DataFrame, column: str, metric: str) -> dict[tuple[str, int], float]:
    """Per (group, seed) with a grid cell: the best ``metric`` of the grid's configurations and the fixed strategies.

    No entry where the grid's configurations did not record the metric: the fixed strategies alone are no oracle.
    """
    sources = frame["contender"].isin(list(FIXED)) | (frame["contender"] == "grid")
    oracles = {}
    for (group, seed), part in frame.groupby(["group", "seed"]):
        if not (part["contender"] == "grid").any():
            continue
        grid = [_config_score(config, metric) for rows in part["configs"] for config in rows]
        scores = grid + part.loc[sources[part.index], column].dropna().tolist()
        if scores and None not in grid:
            oracles[(group, seed)] = max(scores)
    return oracles


def cell_frame(records: list[dict], suite: Suite, metric: str = "accuracy") -> pd.DataFrame:
    """One row per cell (``CSV_COLUMNS``) with its test scores, and the oracle, the normalised regret and the
    rank within its (group, seed) under ``metric`` (one of ``BENCH_METRICS``; NaN where a cell has no such score).
    """
    column = f"test_{check_bench_metric(metric)}"
    frame = pd.DataFrame(records)
    derived = frame["error"].map(lambda e: "ok" if e is None or pd.isna(e) else "failed")  # cells from before `status`
    frame["status"] = frame["status"].fillna(derived) if "status" in frame else derived
    # cells written before the bench recorded test_scores, and failed ones, have none: NaN
    scores = frame["test_scores"] if "test_scores" in frame else pd.Series([{}] * len(frame), index=frame.index)
    scores = scores.map(lambda value: value if isinstance(value, dict) else {})
    for name in BENCH_METRICS[1:]:  # accuracy: every finished cell has test_accuracy
        frame[f"test_{name}"] = scores.map(lambda value, name=name: value.get(name, np.nan)).astype(float)
    frame["group"] = frame["dataset"] + " " + frame["per_class"].astype(str) + "/class"
    # the grid has no budget; a peer that is not installed ran nothing (cells written before this said True)
    budgeted = (frame["contender"] != "grid") & (frame["status"] != "not installed")
    frame["within_budget"] = frame["within_budget"].where(budgeted)
    frame["metric"] = metric
    oracles = _oracles(frame, column, metric)
    frame["oracle"] = [oracles.get((g, s), np.nan) for g, s in zip(frame["group"], frame["seed"])]
    chance = 1.0 / frame["n_classes"]
    tested = frame["dataset"].map({d.name: d.test_per_class for d in suite.datasets}) * frame["n_classes"]
    frame["at_chance"] = (frame["status"] == "ok") & at_chance(frame[column], frame["n_classes"], tested)
    frame["regret"] = (frame["oracle"] - frame[column]) / (frame["oracle"] - chance)
    frame["rank"] = frame.groupby(["group", "seed"])[column].rank(ascending=False, method="average")
    order = {name: i for i, name in enumerate(suite.contenders)}
    groups = [f"{d.name} {n}/class" for d in suite.datasets for n in d.per_class]
    frame["_g"], frame["_c"] = frame["group"].map(groups.index), frame["contender"].map(order)
    return frame.sort_values(["_g", "_c", "seed"])[CSV_COLUMNS].reset_index(drop=True)


def at_chance(score: pd.Series, n_classes: pd.Series, n_test: pd.Series) -> pd.Series:
    """Whether each score is no better than guessing: within 1.5 standard errors of a uniform random
    guess (1/K) on ``n_test`` images (0.137 for 10 classes and 150 images). A trained contender there
    learned nothing: too few steps for the budget, or a bug; the leaderboard flags it as suspect."""
    chance = 1.0 / n_classes
    margin = 1.5 * np.sqrt(chance * (1.0 - chance) / n_test.clip(lower=1))
    return (score <= chance + margin).fillna(False).astype(bool)


def _metric(frame: pd.DataFrame) -> str:
    """The metric a ``cell_frame`` ranks by."""
    return str(frame["metric"].iloc[0])


def _not_recorded(frame: pd.DataFrame) -> pd.Series:
    """Finished cells without a score under the frame's metric (bool per row)."""
    return (frame["status"] == "ok") & frame[f"test_{_metric(frame)}"].isna()


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (group, contender): mean and std over seeds of the frame's metric, wall time, regret, rank, and
    counts of failed, not installed and not recorded cells."""
    grouped = frame.assign(score=frame[f"test_{_metric(frame)}"], not_recorded=_not_recorded(frame)).groupby(
        ["group", "title"], sort=False
    )
    return pd.DataFrame(
        {
            "mean": grouped["score"].mean(),
            "std": grouped["score"].std(ddof=0),
            "seeds": grouped["score"].count(),
            "failed": grouped["error"].count(),
            "not_installed": grouped["status"].agg(lambda s: int((s == "not installed").sum())),
            "not_recorded": grouped["not_recorded"].sum(),
            "seconds": grouped["seconds"].mean(),
            "over_budget": grouped["within_budget"].agg(lambda s: int((s == False).sum())),  # noqa: E712 (NaN: not run)
            "at_chance": grouped["at_chance"].sum(),
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


def _score_text(row: tuple) -> str:
    """A ``summary`` row's cell of the markdown table: mean ± std, or why there is none."""
    if row.seeds == 0 and row.not_installed:
        return "not installed"
    if row.seeds == 0 and not row.not_recorded:
        return "failed"
    if row.seeds == 0:
        return "not recorded" + (f" ({row.failed} failed)" if row.failed else "")
    notes = [
        f"{n} {what}"
        for n, what in (
            (row.failed, "failed"),
            (row.not_recorded, "not recorded"),
            (row.at_chance, "at chance: suspect"),
        )
        if n
    ]
    spread = f" ± {row.std:.3f}" if row.seeds > 1 else ""  # one seed has no spread to show
    return f"{row.mean:.3f}{spread}" + (f" ({', '.join(notes)})" if notes else "")


def _not_recorded_section(frame: pd.DataFrame) -> list[str]:
    """Markdown lines counting the finished cells without the frame's metric, per contender (none: no lines)."""
    missing = frame[_not_recorded(frame)]
    if not len(missing):
        return []
    name = METRIC_NAMES[_metric(frame)]
    return (
        [
            f"## Not recorded: test {name}",
            "",
            f"{len(missing)} finished cell(s) have no test {name}: they ran before the bench recorded it, or come "
            'from a peer that printed no test_predictions. They show as "not recorded" and are left out of means, '
            "ranks and regret; their test accuracy is in leaderboard.csv.",
            "",
        ]
        + [f"- {title}: {n} cell(s)" for title, n in missing.groupby("title", sort=False).size().items()]
        + [""]
    )


def render_markdown(frame: pd.DataFrame, suite: Suite, machine: str) -> str:
    """``leaderboard.md``: the frame's metric per contender and group, wall time, regret, and every cell's problems."""
    table = summary(frame)
    name = METRIC_NAMES[_metric(frame)]
    scores = _pivot(table, _score_text)
    overall = table.groupby("title", sort=False).agg(rank=("rank", "mean"), regret=("regret", "mean"))
    scores["mean rank"] = overall["rank"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    if overall["regret"].notna().any():
        scores["mean regret"] = overall["regret"].map(lambda v: "" if pd.isna(v) else f"{v:+.3f}")
    seconds = _pivot(
        table,
        lambda r: (
            "" if r.not_installed and r.seeds == 0 else f"{r.seconds:.0f}" + (" (over budget)" if r.over_budget else "")
        ),
    )
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
        f"fixed strategies on {suite.fixed_backbone} at {suite.fixed_resolution}px. Test {name} on held-out "
        "images no contender saw (mean ± std over seeds, the mean alone with one seed); rank 1 is best within a "
        "dataset and seed.",
        "",
        f"## Test {name}",
        "",
        _markdown(scores),
        "",
        *_not_recorded_section(frame),
        "## Wall time (s, mean over seeds)",
        "",
        _markdown(seconds),
        "",
    ]
    if frame["oracle"].notna().any():
        parts += [
            "## Normalised regret vs the oracle (0 = oracle, 1 = chance, "
            "< 0 beats every grid configuration and fixed strategy)",
            "",
            _markdown(regret),
            "",
        ]
    return "\n".join(parts + _cell_sections(frame, name))


def _cell_sections(frame: pd.DataFrame, name: str) -> list[str]:
    """Markdown lines about single cells: what each contender ran, and the cells not installed, over budget,
    at chance level or failed (each section only when it has cells)."""
    parts: list[str] = []
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
    suspect = frame[frame["at_chance"]]
    if len(suspect):
        parts += (
            [
                "## At chance level (suspect)",
                "",
                f"These cells' test {name} is within 1.5 standard errors of guessing (1/classes): the contender "
                "learned nothing it could use. Too few training steps within the budget, or a bug: see its "
                "folder under work/.",
                "",
            ]
            + [
                f"- {r.group} seed {r.seed}, {r.title}: {getattr(r, f'test_{_metric(frame)}'):.3f} on "
                f"{r.n_classes} classes (chance {1 / r.n_classes:.3f}); {r.what}"
                for r in suspect.itertuples()
            ]
            + [""]
        )
    failures = frame[frame["error"].notna() & (frame["status"] != "not installed")]
    if len(failures):
        parts += (
            ["## Failed cells", ""]
            + [f"- {r.group} seed {r.seed}, {r.title}: {str(r.error).splitlines()[0]}" for r in failures.itertuples()]
            + [""]
        )
    return parts


def write_leaderboard(
    records: list[dict], suite: Suite, out: Path, machine: str, metric: str = "accuracy"
) -> pd.DataFrame:
    """Write ``out``'s leaderboard.csv, leaderboard.md and report.html, ranked by ``metric``; return the cell frame."""
    frame = cell_frame(records, suite, metric)
    write_text_atomic(out / "leaderboard.csv", frame.to_csv(index=False))
    write_text_atomic(out / "leaderboard.md", render_markdown(frame, suite, machine))
    page = render_html(frame=frame, table=summary(frame), suite=suite, machine=machine, metric=METRIC_NAMES[metric])
    write_text_atomic(out / "report.html", page)
    return frame
