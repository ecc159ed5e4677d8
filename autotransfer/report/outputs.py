"""What a run leaves for people: ``leaderboard.csv`` and a self-contained ``report.html``.

The HTML has the profile summary, the distance-by-depth curve, the leaderboard, accuracy against
cost with its Pareto front, and the search history; plots are inline SVG from matplotlib, so the
file needs nothing else to open.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import pandas as pd

from autotransfer.files import write_text_atomic

COLUMNS = [
    "stage",
    "trial",
    "status",
    "strategy",
    "backbone",
    "resolution",
    "tap",
    "head",
    "C",
    "freeze_groups",
    "head_lr",
    "backbone_lr_ratio",
    "layer_decay",
    "weight_decay",
    "label_smoothing",
    "augmentation",
    "epochs_run",
    "val_accuracy",
    "test_accuracy",
    "seconds",
    "chosen",
    "stopped",
    "error",
]


def leaderboard(records: list[dict], best: dict, test_accuracy: float | None) -> pd.DataFrame:
    """Every trial, best validation accuracy first; the test score only on the chosen row."""
    frame = pd.DataFrame(records)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    for column in ("trial", "resolution", "freeze_groups", "epochs_run"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["chosen"] = (frame["stage"] == best["stage"]) & (frame["trial"] == best["trial"])
    frame["test_accuracy"] = frame["chosen"].map({True: test_accuracy, False: None})
    frame = frame[COLUMNS].sort_values(["val_accuracy", "seconds"], ascending=[False, True], na_position="last")
    return frame.reset_index(drop=True)


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials no other trial beats on both accuracy (higher) and cost (lower)."""
    done = frame.dropna(subset=["val_accuracy", "seconds"]).sort_values(
        ["seconds", "val_accuracy"], ascending=[True, False]
    )
    front, best = [], -1.0
    for index, row in done.iterrows():
        if row["val_accuracy"] > best:
            front.append(index)
            best = row["val_accuracy"]
    return done.loc[front]


def svg(figure) -> str:
    """A matplotlib figure as inline SVG text (closed afterwards)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _plots(frame: pd.DataFrame, profile: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    groups = profile.get("group_distance") or []
    if groups:
        figure, axis = plt.subplots(figsize=(6, 3))
        axis.plot([g["group"] for g in groups], [g["distance"] for g in groups], marker="o")
        axis.set_xlabel(f"depth group of {profile.get('backbone', '')} (low → high)")
        axis.set_ylabel("distance to ImageNet")
        axis.set_title("Domain distance by depth")
        plots["distance"] = svg(figure)
    done = frame.dropna(subset=["val_accuracy", "seconds"])
    if len(done):
        figure, axis = plt.subplots(figsize=(6, 3.5))
        for stage, marker in (("probe", "o"), ("finetune", "s")):
            part = done[done["stage"] == stage]
            axis.scatter(part["seconds"], part["val_accuracy"], marker=marker, alpha=0.7, label=stage)
        front = pareto_front(frame)
        axis.step(front["seconds"], front["val_accuracy"], where="post", color="black", lw=1, label="Pareto front")
        axis.set_xscale("log")
        axis.set_xlabel("cost (seconds, log)")
        axis.set_ylabel("validation accuracy")
        axis.legend()
        axis.set_title("Accuracy against cost")
        plots["pareto"] = svg(figure)
        finetune = frame[frame["stage"] == "finetune"].sort_values("trial")
        if len(finetune):
            figure, axis = plt.subplots(figsize=(6, 3))
            axis.plot(finetune["trial"], finetune["val_accuracy"], "o", alpha=0.6, label="trial")
            axis.plot(finetune["trial"], finetune["val_accuracy"].fillna(0).cummax(), label="best so far")
            axis.set_xlabel("fine-tuning trial")
            axis.set_ylabel("validation accuracy")
            axis.legend()
            axis.set_title("Search history")
            plots["history"] = svg(figure)
    return plots


def render_html(frame: pd.DataFrame, profile: dict, pipeline_spec: dict, elapsed: float) -> str:
    plots = _plots(frame, profile)
    metrics = pipeline_spec.get("metrics", {})
    facts = [
        ("chosen pipeline", pipeline_spec.get("summary", "")),
        ("validation accuracy", f"{metrics.get('val_accuracy', float('nan')):.4f}"),
        ("test accuracy", f"{metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else "no test split"),
        ("refit on train+val", str(metrics.get("refit_on_train_val"))),
        ("dataset", f"{profile.get('n_images')} images, {profile.get('n_classes')} classes"),
        ("quadrant", f"{profile.get('quadrant')} — {profile.get('rationale', '')}"),
        (
            "trials",
            f"{len(frame)} ({(frame['stage'] == 'probe').sum()} probes, "
            f"{(frame['stage'] == 'finetune').sum()} fine-tuning)",
        ),
        ("wall time", f"{elapsed:.0f} s"),
    ]
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in profile.get("problems", []))
    skipped = "".join(
        f"<tr><td>{html.escape(s['path'])}</td><td>{html.escape(s['reason'])}</td></tr>"
        for s in profile.get("skipped", [])
    )
    table = frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", classes="board")
    sections = "".join(
        f"<h2>{title}</h2>{plots[key]}"
        for key, title in (
            ("distance", "Profile: distance by depth"),
            ("pareto", "Accuracy vs cost"),
            ("history", "Search history"),
        )
        if key in plots
    )
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>autotransfer report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} .board tr:nth-child(2) td{{font-weight:bold}}</style>
</head><body><h1>autotransfer fit report</h1><table>{rows}</table>
{f"<h2>Data problems</h2><ul>{problems}</ul>" if problems else ""}
{f"<h2>Skipped files</h2><table><tr><th>file</th><th>why</th></tr>{skipped}</table>" if skipped else ""}{sections}
<h2>Leaderboard</h2>{table}</body></html>"""


def write_outputs(out: Path, records: list[dict], best: dict, pipeline, elapsed: float, budget: float) -> pd.DataFrame:
    """leaderboard.csv, skipped.csv (the files left out, and why) and report.html (written atomically)."""
    frame = leaderboard(records, best, pipeline.spec["metrics"].get("test_accuracy"))
    write_text_atomic(out / "leaderboard.csv", frame.to_csv(index=False))
    profile = {}
    if (out / "profile.json").exists():
        import json

        profile = json.loads((out / "profile.json").read_text())
    skipped = pd.DataFrame(profile.get("skipped", []), columns=["path", "reason"])
    write_text_atomic(out / "skipped.csv", skipped.to_csv(index=False))
    write_text_atomic(out / "report.html", render_html(frame, profile, pipeline.spec, elapsed))
    return frame
