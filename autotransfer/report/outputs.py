"""What a run leaves for people: ``leaderboard.csv``, ``skipped.csv`` and a self-contained ``report.html``.

The HTML is one file (plots are inline SVG from matplotlib, thumbnails are base64 PNG) with, in
order: the chosen pipeline and its metrics against the budget; per-class precision / recall and
the confusion matrix (validation, and test when there is a test split), from the run's
``predictions-<split>.csv`` and ``pipeline.spec["metrics"]``; the most confidently wrong validation
images; the profile's distance-by-depth curve; the run's metric against cost with the Pareto front; the
search history of both stages; and a leaderboard per stage with the columns that matter (every
column is in ``leaderboard.csv``). Runs written by older versions lack some of these inputs: each
section is left out, or says what is missing, rather than failing.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from autotransfer.cpu_threads import load_note
from autotransfer.files import write_text_atomic
from autotransfer.report.choice import explain_choice
from autotransfer.report.confusion import confusion_view
from autotransfer.report.search_choices import describe_auto
from autotransfer.report.terminal import cell_text, is_missing

if TYPE_CHECKING:
    from autotransfer.search.records import TrialRecord

log = logging.getLogger(__name__)

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
    "epochs_planned",
    "epochs_why",  # search/finetune_stage.py: how many epochs the trial got and why
    "class_weight",
    "metric",
    "val_score",
    "val_accuracy",
    "test_accuracy",
    "seconds",
    "chosen",
    "stopped",
    "error",
]
# What the report's leaderboard shows per stage (the CSV has them all).
PROBE_COLUMNS = [
    "trial", "strategy", "backbone", "resolution", "tap", "head", "C", "class_weight", "val_score", "val_accuracy",
    "seconds", "status",
]  # fmt: skip
ALWAYS_SHOWN = ("trial", "val_score", "seconds", "status")
FINETUNE_COLUMNS = [
    "trial",
    "strategy",
    "backbone",
    "resolution",
    "tap",
    "freeze_groups",
    "head_lr",
    "backbone_lr_ratio",
    "augmentation",
    "epochs_run",
    "class_weight",
    "val_score",
    "val_accuracy",
    "seconds",
    "status",
]
# Column headings shorter than the CSV's names, and the text columns that may wrap: a 1280-px page shows
# every column of a fine-tuning table whose trials differ in backbone, tap, augmentation and weighting.
HEADERS = {"resolution": "px", "freeze_groups": "frozen groups", "head_lr": "head LR",
           "backbone_lr_ratio": "backbone LR x", "epochs_run": "epochs", "augmentation": "augment"}  # fmt: skip
TEXT_COLUMNS = ("backbone", "tap", "strategy")
RAN = ("complete", "pruned")  # trials that ran and have a score
STAGE_NAMES = {"probe": "probes", "finetune": "fine-tuning"}
GALLERY_SIZE = 12
THUMBNAIL_PX = 112


def leaderboard(records: list[TrialRecord], best: TrialRecord | None, test_accuracy: float | None) -> pd.DataFrame:
    """Every trial, best validation score (the run's metric) first; the test score only on the chosen row."""
    frame = pd.DataFrame([r.row() for r in records])
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    for column in ("trial", "resolution", "freeze_groups", "epochs_run"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in ("val_score", "val_accuracy", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["val_score"] = frame["val_score"].fillna(frame["val_accuracy"])  # runs from before the metric choice
    if best:
        frame["chosen"] = (frame["stage"] == best.stage) & (frame["trial"] == best.trial).fillna(False)
    else:
        frame["chosen"] = False
    frame["chosen"] = frame["chosen"].astype(bool)
    frame["test_accuracy"] = [test_accuracy if chosen else None for chosen in frame["chosen"]]
    # the chosen trial first among equal scores: the choice ranks ties by settings, not seconds (report/choice.py)
    frame = frame[COLUMNS].sort_values(
        ["val_score", "chosen", "seconds"], ascending=[False, False, True], na_position="last"
    )
    return frame.reset_index(drop=True)


def trial_counts(frame: pd.DataFrame) -> dict:
    """Trials per stage and status; ``text``: "3 probes, 2 fine-tuning trials (1 pruned, 1 stopped by the
    budget, 1 failed); 1 queued trial not started" -- counting only trials that ran as trials. A trial the
    budget stopped is an Optuna pruned trial whose ``stopped`` starts with "time budget"."""
    status = frame["status"].astype(str) if "status" in frame else pd.Series([""] * len(frame))
    stage = frame["stage"].astype(str) if "stage" in frame else pd.Series([""] * len(frame))
    stopped = frame["stopped"] if "stopped" in frame else pd.Series([None] * len(frame))
    stopped = stopped.astype(object).fillna("").astype(str)
    by_budget = (status == "pruned") & stopped.str.startswith("time budget")
    counts = {
        s: {
            "ran": int(((stage == s) & status.isin(RAN)).sum()),
            "pruned": int(((stage == s) & (status == "pruned") & ~by_budget).sum()),
            "stopped by the budget": int(((stage == s) & by_budget).sum()),
            "failed": int(((stage == s) & (status == "fail")).sum()),
            "not_started": int(((stage == s) & ~status.isin((*RAN, "fail"))).sum()),
        }
        for s in ("probe", "finetune")
    }
    probe, finetune = counts["probe"], counts["finetune"]
    text = f"{probe['ran']} probe{'s' * (probe['ran'] != 1)}"
    if probe["failed"]:
        text += f" ({probe['failed']} failed)"
    text += f", {finetune['ran']} fine-tuning trial{'s' * (finetune['ran'] != 1)}"
    details = [f"{finetune[k]} {k}" for k in ("pruned", "stopped by the budget", "failed") if finetune[k]]
    if details:
        text += f" ({', '.join(details)})"
    queued = probe["not_started"] + finetune["not_started"]
    if queued:
        text += f"; {queued} queued trial{'s' * (queued != 1)} not started (budget)"
    return {**counts, "text": text}


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials no other trial beats on both accuracy (higher) and cost (lower)."""
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


def svg(figure) -> str:
    """A matplotlib figure as inline SVG text (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


# ---------------------------------------------------------------------------------------------- inputs
def read_predictions(out: Path, split: str) -> pd.DataFrame | None:
    """``predictions-<split>.csv`` (path, label, predicted, confidence) or None when absent or unreadable."""
    path = out / f"predictions-{split}.csv"
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"label": str, "predicted": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        log.warning("report: %s unreadable (%s); its sections are left out", path, error)
        return None
    if not {"path", "label", "predicted"} <= set(frame.columns):
        return None
    if "confidence" not in frame:
        frame["confidence"] = float("nan")
    return frame


def split_metrics(metrics: dict, split: str, predictions: pd.DataFrame | None, classes: list[str]) -> dict | None:
    """The split's summary from the spec (``metrics[split]``), else computed from its predictions."""
    given = metrics.get(split)
    if isinstance(given, dict) and "per_class" in given:
        return given
    if predictions is None or not len(predictions):
        return None
    from autotransfer.transfer.metrics import classification_summary

    index = {name: i for i, name in enumerate(classes)}
    known = predictions["label"].isin(index) & predictions["predicted"].isin(index)
    truth = predictions.loc[known, "label"].map(index)
    guess = predictions.loc[known, "predicted"].map(index)
    return classification_summary(truth.to_numpy(), guess.to_numpy(), classes)


def _classes(spec: dict, *frames: pd.DataFrame | None) -> list[str]:
    classes = [str(c) for c in spec.get("classes") or []]
    for frame in frames:
        if frame is not None:
            for name in pd.concat([frame["label"], frame["predicted"]]).astype(str).unique():
                if name not in classes:
                    classes.append(name)
    return classes


def thumbnail(path: str | Path, roots: list[Path], size: int = THUMBNAIL_PX) -> str | None:
    """A data: URL of a PNG thumbnail of ``path`` (tried as given, then under each root), or None."""
    from PIL import Image, ImageOps

    from autotransfer.data.images import to_rgb

    candidates = [Path(path)] + [root / path for root in roots if not Path(path).is_absolute()]
    for candidate in candidates:
        try:
            with Image.open(candidate) as image:
                image = to_rgb(ImageOps.exif_transpose(image))  # palette + transparency: composited, no warning
                scale = size / max(image.size)
                # Small images (digits, MNIST) are scaled up with crisp pixels, large ones down smoothly.
                method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
                image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), method)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", optimize=True)
            return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return None


# ---------------------------------------------------------------------------------------------- plots
def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def distance_plot(profile: dict) -> str | None:
    groups = profile.get("group_distance") or []
    if not groups:
        return None
    plt = _matplotlib()
    figure, axis = plt.subplots(figsize=(6.4, 3))
    x = list(range(len(groups)))
    axis.plot(x, [g.get("distance") for g in groups], marker="o", color="#3465a4")
    axis.set_xticks(x, [str(g.get("name", g.get("group", i))) for i, g in enumerate(groups)], rotation=30, ha="right")
    axis.set_xlabel(f"depth group of {profile.get('backbone', 'the backbone')} (low → high)")
    axis.set_ylabel("distance to ImageNet")
    axis.grid(alpha=0.3)
    return svg(figure)


def _scatter_stages(axis, trials: pd.DataFrame, x: str) -> None:
    """One marker and colour per stage: ``trials[x]`` against the validation score."""
    for stage, marker, colour in (("probe", "o", "#3465a4"), ("finetune", "s", "#f57900")):
        part = trials[trials["stage"] == stage]
        if len(part):
            axis.scatter(part[x], part["val_score"], marker=marker, alpha=0.75, color=colour,
                         label=STAGE_NAMES[stage])  # fmt: skip


def pareto_plot(frame: pd.DataFrame) -> str | None:
    done = frame.dropna(subset=["val_score", "seconds"])
    done = done[done["status"].isin(RAN)]
    if not len(done):
        return None
    plt = _matplotlib()
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    _scatter_stages(axis, done, "seconds")
    front = pareto_front(frame)
    axis.step(front["seconds"], front["val_score"], where="post", color="black", lw=1, label="Pareto front")
    chosen = done[done["chosen"]]
    if len(chosen):
        label = "chosen (★)" if chosen.index[0] in front.index else "chosen (★), off the front: see why below"
        axis.scatter(chosen["seconds"], chosen["val_score"], s=180, facecolors="none", edgecolors="#cc0000",
                     linewidths=1.5, label=label)  # fmt: skip
    axis.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    axis.set_xlabel("cost of the trial (seconds, log scale)")
    axis.set_ylabel("validation score (the run's metric)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8, framealpha=0.85)
    return svg(figure)


def history_plot(frame: pd.DataFrame) -> str | None:
    """Both stages in the order they ran, against the trial time spent so far; the best-so-far line
    only over trials that ran (a stage with none says so instead of drawing a flat line at 0)."""
    ordered = frame.copy()
    ordered["order"] = ordered["stage"].map({"probe": 0, "finetune": 1}).fillna(2)
    ordered = ordered.sort_values(["order", "trial"])
    ran = ordered[ordered["status"].isin(RAN) & ordered["val_score"].notna()].copy()
    if not len(ran):
        return None
    ran["at"] = ran["seconds"].fillna(0).cumsum()
    plt = _matplotlib()
    figure, axis = plt.subplots(figsize=(6.4, 3.3))
    _scatter_stages(axis, ran, "at")
    axis.step(ran["at"], ran["val_score"].cummax(), where="post", color="black", lw=1, label="best so far")
    if not (ran["stage"] == "finetune").any():
        axis.set_title("no fine-tuning trial finished within the budget", fontsize=8, color="#555", loc="left")
    axis.set_xlabel("time spent in trials (seconds, cumulative: probes, then fine-tuning)")
    axis.set_ylabel("validation score (the run's metric)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8, framealpha=0.85)
    return svg(figure)


# ---------------------------------------------------------------------------------------------- html pieces
def _e(value) -> str:
    return html.escape(cell_text(value, 4))


def _percent(value) -> str:
    return "—" if is_missing(value) else f"{float(value):.1%}"


def _bar(value, colour: str = "#3465a4") -> str:
    width = 0 if is_missing(value) else max(0.0, min(1.0, float(value))) * 100
    return (
        f'<span class="bar"><span style="width:{width:.0f}%;background:{colour}"></span></span> '
        f"<span class=num>{_percent(value)}</span>"
    )


def per_class_table(summaries: dict[str, dict]) -> str:
    """One row per class; precision / recall / support per split (columns grouped by split)."""
    splits = [s for s in summaries if summaries[s]]
    if not splits:
        return ""
    classes = list(dict.fromkeys(c for s in splits for c in summaries[s]["per_class"]))
    names = {"val": "validation", "test": "test"}
    head = "".join(f"<th colspan=3 class=group>{html.escape(names.get(s, s))}</th>" for s in splits)
    sub = "<th>precision</th><th>recall</th><th>images</th>" * len(splits)
    rows = []
    for name in classes:
        cells = []
        for s in splits:
            row = summaries[s]["per_class"].get(name, {})
            recall = row.get("recall")
            weak = not is_missing(recall) and float(recall) < 0.5 and row.get("support", 0)
            cells.append(
                f"<td>{_bar(row.get('precision'))}</td>"
                f"<td{' class=weak' if weak else ''}>{_bar(recall, '#73a946')}</td>"
                f"<td class=num>{_e(row.get('support'))}</td>"
            )
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return (
        f"<table class=perclass><thead><tr><th></th>{head}</tr><tr><th>class</th>{sub}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def wrong_gallery(predictions: pd.DataFrame, roots: list[Path], limit: int = GALLERY_SIZE) -> str:
    """The validation images the chosen pipeline gets wrong with the most confidence."""
    wrong = predictions[predictions["label"].astype(str) != predictions["predicted"].astype(str)]
    if not len(wrong):
        return "<p class=good>The chosen pipeline classifies every validation image correctly.</p>"
    wrong = wrong.sort_values("confidence", ascending=False, na_position="last")
    tiles = []
    for row in wrong.head(limit).itertuples(index=False):
        source = thumbnail(row.path, roots)
        name = Path(str(row.path)).name
        image = (
            f'<img src="{source}" alt="{html.escape(name)}" title="{html.escape(str(row.path))}">'
            if source
            else "<div class=missing>image not found</div>"
        )
        tiles.append(
            f"<figure class=tile>{image}<figcaption><b>{html.escape(str(row.predicted))}</b> "
            f"{_percent(row.confidence)}<br>true: {html.escape(str(row.label))}<br>"
            f"<span class=file>{html.escape(name)}</span></figcaption></figure>"
        )
    more = f" (the {limit} most confident of {len(wrong)})" if len(wrong) > limit else ""
    return (
        f"<p>{len(wrong)} of {len(predictions)} validation images are misclassified{more}; "
        f"each tile shows the prediction, its confidence and the true class.</p>"
        f"<div class=gallery>{''.join(tiles)}</div>"
    )


def stage_board(frame: pd.DataFrame, stage: str) -> str:
    """The leaderboard rows of one stage, with the columns that matter for it; the chosen row marked."""
    part = frame[frame["stage"] == stage].copy()
    if not len(part):
        return ""
    part["note"] = [
        "" if is_missing(e) and is_missing(s) else str(e if not is_missing(e) else s)
        for e, s in zip(part["error"], part["stopped"])
    ]
    columns = PROBE_COLUMNS if stage == "probe" else FINETUNE_COLUMNS
    started = part[part["status"].isin((*RAN, "fail"))]
    queued = len(part) - len(started)
    columns = [c for c in columns if c in part and started[c].map(lambda v: not is_missing(v) and v != "").any()]
    # A setting every trial of the stage shares is said once above the table instead of in every row.
    shared = {}
    if len(started) > 1:
        for c in columns:
            values = {cell_text(v, 4) for v in started[c]}
            if c not in ALWAYS_SHOWN and len(values) == 1 and "" not in values:
                shared[c] = values.pop()
    columns = [c for c in columns if c not in shared]
    common = (
        f"<p class=muted>All {len(started)} share "
        + ", ".join(f"{html.escape(c.replace('_', ' '))} <b>{html.escape(v)}</b>" for c, v in shared.items())
        + ".</p>"
        if shared
        else ""
    )
    head = "".join(f"<th>{html.escape(HEADERS.get(c, c.replace('_', ' ')))}</th>" for c in columns)
    rows = []
    for _, row in started.iterrows():
        classes = ["chosen"] if row["chosen"] else []
        classes += [f"status-{row['status']}"]
        cells = []
        for c in columns:
            value = row[c]
            text = _e(value)
            if c == "val_accuracy" and not is_missing(value):
                text = f"{float(value):.4f}"
            elif c in ("head_lr", "backbone_lr_ratio", "C") and not is_missing(value):
                text = f"{float(value):.3g}"
            elif c == "seconds" and not is_missing(value):
                text = f"{float(value):.1f}"
            if c in TEXT_COLUMNS:  # names like tf_efficientnet_lite2 may break after an underscore
                cells.append(f"<td class=text>{text.replace('_', '_<wbr>')}</td>")
            else:
                cells.append(f"<td>{text}</td>")
        marker = '<span class=star title="the chosen pipeline">★</span>' if row["chosen"] else ""
        rows.append(f'<tr class="{" ".join(classes)}">{"".join(cells)}</tr>'.replace("<td>", f"<td>{marker}", 1))
    # why a trial stopped or failed: one line each under the table (a column of sentences widens it past the page)
    notes = "".join(f"<li>trial {_e(t)}: {_e(n)}</li>" for t, n in zip(started["trial"], started["note"]) if n)
    note = f"<ul class=notes>{notes}</ul>" if notes else ""
    note += f"<p class=muted>{queued} queued trial(s) did not start before the budget ran out.</p>" if queued else ""
    return (
        f"<h3>{html.escape(STAGE_NAMES[stage].capitalize())} ({len(started)})</h3>{common}"
        f"<div class=scroll><table class=board><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        f"</table></div>{note}"
    )


CSS = """
:root{--ink:#1d232a;--muted:#5b6670;--line:#dde2e7;--accent:#3465a4;--soft:#f4f6f8}
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:36px 0 10px;padding-top:10px;border-top:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
nav{margin:6px 0 16px;font-size:13px}nav a{margin-right:14px;color:var(--accent);text-decoration:none}
.muted,.sub{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;margin:16px 0}
.card{background:var(--soft);border-radius:8px;padding:12px 14px}
.card .label{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;font-weight:600}
.card .value.small{font-size:15px;font-weight:500}
.chosen-box{border-left:4px solid var(--accent);background:var(--soft);padding:10px 14px;border-radius:4px}
.facts{border-collapse:collapse}.facts th{text-align:left;padding:3px 16px 3px 0;color:var(--muted);font-weight:500;
vertical-align:top;white-space:nowrap}.facts td{padding:3px 0}
.timebar{height:8px;background:#e3e7eb;border-radius:4px;overflow:hidden;max-width:360px;margin-top:6px}
.timebar span{display:block;height:100%;background:var(--accent)}
table{border-collapse:collapse;font-size:13px}
.board th,.board td,.perclass th,.perclass td{border-bottom:1px solid var(--line);padding:4px 7px;text-align:left;
white-space:nowrap}
.board thead th,.perclass thead th{background:var(--soft);position:sticky;top:0}
.board tr.chosen td{background:#e8f0fb;font-weight:600}
.board tr.status-fail td{color:#a40000}.board tr.status-pruned td{color:#555}
.star{color:#c4a000;margin-right:4px}
.board th{white-space:normal;vertical-align:bottom}
.note{color:var(--muted);font-size:12px;display:inline-block;min-width:14em;white-space:normal}
.scroll{overflow-x:auto;max-width:100%}
.board td.text{white-space:normal}.notes{color:var(--muted);font-size:13px;margin:4px 0}
.bar{display:inline-block;width:70px;height:8px;background:#e3e7eb;border-radius:4px;vertical-align:middle;
overflow:hidden}.bar span{display:block;height:100%}
.num{font-variant-numeric:tabular-nums}
.perclass th.group{text-align:center}.weak{background:#fdecea}
.cmrow{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.cmwrap{margin:18px 0 0}.cmwrap figcaption{font-size:12px;color:var(--muted);margin-bottom:2px;max-width:420px}
.confusion td.cm{width:40px;height:34px;text-align:center;border:1px solid #eef1f4;font-variant-numeric:tabular-nums}
.confusion th{font-weight:500;padding:2px 6px;text-align:right;font-size:12px}
.confusion th.rot{height:70px;vertical-align:bottom;text-align:center;padding:0}
.confusion th.rot span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap}
.confusion th.corner{font-size:11px;color:var(--muted);vertical-align:bottom}
.cmimage{max-width:100%;image-rendering:pixelated}
.topconf td,.topconf th{padding:2px 8px;text-align:left}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:12px}
.tile{margin:0;background:var(--soft);border-radius:6px;padding:8px;text-align:center;font-size:12px}
.tile img{width:112px;height:112px;object-fit:contain;image-rendering:pixelated;background:#fff;border-radius:4px}
.tile .file{color:var(--muted);font-size:11px;word-break:break-all}
.missing{width:112px;height:112px;margin:auto;display:flex;align-items:center;justify-content:center;color:#999}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:18px}
.plot{margin:0}.plot figcaption{font-weight:600;margin-bottom:4px}
.plot p{margin:4px 0 0;color:var(--muted);font-size:12px}
.plot svg{max-width:100%;height:auto}
.good{color:#2e7d32}
ul.problems li{margin:2px 0}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""


def _plot_figure(title: str, svg_text: str | None, caption: str, missing: str) -> str:
    body = svg_text if svg_text else f"<p class=muted>{html.escape(missing)}</p>"
    return (
        f"<figure class=plot><figcaption>{html.escape(title)}</figcaption>{body}<p>{html.escape(caption)}</p></figure>"
    )


def _score(summaries: dict, metrics: dict, split: str, key: str) -> str:
    """One held-out figure as a percentage, falling back to the spec's accuracy."""
    summary = summaries.get(split) or {}
    value = summary.get(key)
    if is_missing(value) and key == "accuracy":
        value = metrics.get(f"{split}_accuracy")
    return _percent(value)


def _summary_cards(metrics: dict, summaries: dict, elapsed: float, budget: float | None) -> str:
    """The summary cards: search score, held-out metrics, test accuracy and time used."""
    from autotransfer.budget import format_duration

    metric_name = metrics.get("metric") or "val_accuracy"
    has_test = summaries["test"] is not None or "test_accuracy" in metrics
    # The search's score of the chosen trial (as in the leaderboard); the per-class figures come from
    # the predictions of the chosen configuration trained on train only, which can differ a little.
    searched = metrics.get("val_accuracy")
    evaluated = (summaries.get("val") or {}).get("accuracy")
    notes = []
    if not is_missing(searched) and not is_missing(evaluated) and abs(float(searched) - float(evaluated)) >= 0.0005:
        notes.append("the chosen configuration retrained on train only")
    # the val split is held out only when the search chose by cross-validation (as the terminal summary says)
    chosen_on_val = metrics.get("val_score_from") == "validation split"
    if chosen_on_val:
        notes.append("the split the search chose on: optimistic")
    val, val_note = ("val split" if chosen_on_val else "held-out val"), "; ".join(notes)
    search_score = metrics.get("val_score", searched)
    how = "CV mean on train+val" if metrics.get("val_score_from") == "cross-validation" else "validation split"
    if is_missing(search_score):
        search_text = "–"
    elif metric_name == "log_loss":  # searched as its negative (higher is better): shown as the loss
        search_text = f"{-float(search_score):.4f}"
    else:
        search_text = _percent(search_score)
    cards = [
        (
            f"search score: {metric_name.replace('_', ' ')} ({how})",
            search_text,
            "lower is better" if metric_name == "log_loss" else "",
        ),
        (f"accuracy ({val})", _score(summaries, metrics, "val", "accuracy"), val_note),
        (f"balanced accuracy ({val})", _score(summaries, metrics, "val", "balanced_accuracy"), ""),
        (f"macro F1 ({val})", _score(summaries, metrics, "val", "f1_macro"), ""),
        ("test accuracy", _score(summaries, metrics, "test", "accuracy") if has_test else "no test split", ""),
    ]
    test = summaries["test"] or {}
    if test:
        cards.append(("test balanced accuracy", _percent(test.get("balanced_accuracy")), ""))
    if metric_name in ("f1_macro", "roc_auc") and not is_missing(test.get(metric_name)):  # the metric asked for
        cards.append(
            ({"f1_macro": "test macro F1", "roc_auc": "test ROC AUC"}[metric_name], _percent(test[metric_name]), "")
        )
    if metric_name == "log_loss" and not is_missing(test.get("log_loss")):
        cards.append(("test log loss", f"{test['log_loss']:.4f}", "lower is better"))
    fraction = min(1.0, elapsed / budget) if budget else None
    time_text = f"{format_duration(elapsed)} of {format_duration(budget)}" if budget else format_duration(elapsed)
    card_html = "".join(
        f'<div class=card><div class=label>{html.escape(k)}</div><div class="value{" small" if len(v) > 8 else ""}">'
        f"{html.escape(v)}</div>" + (f"<div class=note>{html.escape(n)}</div>" if n else "") + "</div>"
        for k, v, n in cards
    )
    card_html += (
        "<div class=card><div class=label>time used of the budget, when this page was written</div>"
        f'<div class="value small">{time_text}</div>'
        + (
            f'<div class=timebar><span style="width:{fraction * 100:.0f}%"></span></div>'
            if fraction is not None
            else ""
        )
        + "</div>"
    )
    return card_html


def _placement_rows(profile: dict) -> list[tuple[str, str]]:
    """The recipe's quadrant twice: from the profile (a priori, with what it measured and at which size)
    and from the probes (measured), and whether they agree."""
    if not profile.get("quadrant"):
        return []
    measured_at = (profile.get("resolution") or {}).get("profiled_at")
    evidence = [f"similarity {profile['similarity']:.2f}" if profile.get("similarity") is not None else ""]
    evidence.append(f"at {measured_at}px" if measured_at else "")
    if profile.get("nearest_reference"):
        evidence.append(f"nearest reference: {profile['nearest_reference']}")
    separability = profile.get("separability") or {}
    if separability.get("knn_accuracy") is not None and separability.get("chance") is not None:
        evidence.append(
            f"kNN {separability['knn_accuracy']:.2f} vs chance {separability['chance']:.2f} (majority class)"
        )
    rows = [
        (
            "quadrant, a priori (profile)",
            f"{profile['quadrant']} — {profile.get('rationale', '')} ({', '.join(e for e in evidence if e)})",
        )
    ]
    placement = profile.get("measured")
    if placement:
        verdict = "differs from the profile" if placement.get("differs") else "agrees with the profile"
        rows.append(
            ("quadrant, measured (probes)", f"{placement['quadrant']} — {verdict}: {placement.get('rationale', '')}")
        )
    elif profile.get("measured_skipped"):
        rows.append(("quadrant, measured (probes)", f"not measured: {profile['measured_skipped']}"))
    return rows


def _fact_rows(metrics: dict, profile: dict, counts: dict, classes: list[str], frame: pd.DataFrame) -> str:
    """The facts table rows: selection metric, refit, trials, dataset, what ``auto`` chose and why (``frame``:
    the leaderboard, for the pairs the probes reached) and quadrant."""
    metric_name = metrics.get("metric") or "val_accuracy"
    reason = metrics.get("metric_reason") or ""
    refit = metrics.get("refit_on_train_val")
    facts = [
        ("selected by", f"{metric_name.replace('_', ' ')}" + (f" — {reason}" if reason else "")),
        (
            "refit",
            "retrained on train + validation"
            if refit
            else "not refit: the budget left no room (trained on train only)"
            if refit is False
            else "unknown",
        ),
        *([("choice", metrics["selection"])] if metrics.get("selection") else []),
        ("trials", counts["text"]),
        (
            "dataset",
            f"{profile.get('n_images', '?')} images, {profile.get('n_classes', len(classes) or '?')} classes"
            + (f"; {len(profile.get('skipped', []))} file(s) skipped" if profile.get("skipped") else ""),
        ),
    ]
    if load_note(profile.get("machine_load")):
        facts.append(("machine load", load_note(profile["machine_load"])))
    if profile.get("auto"):
        probes = frame[(frame["stage"] == "probe") & (frame["status"] == "complete")]
        probed = list(zip(probes["backbone"], probes["resolution"], strict=True))
        facts.append(("backbones and sizes (auto)", describe_auto(profile["auto"], probed)))
    facts += _placement_rows(profile)
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)


def _prediction_sections(
    summaries: dict, predictions: dict, classes: list[str], profile: dict, out: Path | None
) -> list[str]:
    """The per-class and most-confidently-wrong sections, where predictions exist."""
    sections = []
    per_class = per_class_table({s: summaries[s] for s in ("val", "test")})
    if per_class:
        matrices = "".join(
            confusion_view(predictions[s], classes, "validation" if s == "val" else "test")
            for s in ("val", "test")
            if predictions[s] is not None and len(predictions[s])
        )
        sections.append(
            "<h2 id=classes>Per class</h2><p class=muted>Validation predictions come from the chosen configuration "
            "trained on the training split only; test predictions from the final pipeline. Recall below 50% is "
            "shaded.</p>"
            + f"<div class=scroll>{per_class}</div>"
            + (f"<div class=cmrow>{matrices}</div>" if matrices else "")
        )
    if predictions["val"] is not None:
        roots = [out] + ([Path(profile["root"])] if profile.get("root") else [])
        sections.append(
            "<h2 id=wrong>Most confidently wrong (validation)</h2>" + wrong_gallery(predictions["val"], roots)
        )
    return sections


def _search_section(frame: pd.DataFrame, profile: dict, metrics: dict) -> str:
    """The search section: distance-by-depth (of the profiling backbone, said so), score-against-cost
    (the run's metric, e.g. "balanced_accuracy") and history plots, then why the chosen trial."""
    metric = metrics.get("metric") or "accuracy"
    profiled = str(profile.get("backbone") or "the profiling backbone")
    chosen = frame.loc[frame["chosen"], "backbone"]
    other = "" if not len(chosen) or chosen.iloc[0] == profiled else f" (the chosen pipeline uses {chosen.iloc[0]})"
    plots = [
        _plot_figure(
            f"Profile: domain distance by depth of {profiled}",
            distance_plot(profile),
            f"Measured with the profiling backbone, {profiled}{other}: how far each depth group's activations on "
            "this data are from ImageNet's (higher = more different); a distance that grows with depth suggests "
            "features from a lower tap and fine-tuning the top.",
            "The run has no profile (profile.json missing or without distances).",
        ),
        _plot_figure(
            f"Validation {metric.replace('_', ' ')} against cost",
            pareto_plot(frame),
            f"Every trial that ran, scored by the run's metric ({metric.replace('_', ' ')}); the black line is the "
            "Pareto front (no other trial both scores higher and costs less); the red ring is the chosen one.",
            "No trial finished.",
        ),
        _plot_figure(
            "Search history",
            history_plot(frame),
            "Validation score (the run's metric) of each trial in the order the stages ran, and the best so far.",
            "No trial finished.",
        ),
    ]
    why = explain_choice(frame, pareto_front(frame), metrics)
    return "<h2 id=search>Search</h2><div class=plots>" + "".join(plots) + "</div>" + why


def _leaderboard_section(frame: pd.DataFrame) -> str:
    """The leaderboard section: one table per stage."""
    boards = stage_board(frame, "probe") + stage_board(frame, "finetune")
    return (
        "<h2 id=leaderboard>Leaderboard</h2><p class=muted>The chosen trial is marked ★ "
        "(<a href=#why>why this one</a>). Only the columns that matter for each stage are shown; "
        "leaderboard.csv in the run directory has every column.</p>" + boards
    )


def _data_sections(profile: dict) -> list[str]:
    """The data-problems and skipped-files sections, where the profile has any."""
    sections = []
    problems = "".join(f"<li>{html.escape(str(p))}</li>" for p in profile.get("problems", []))
    if problems:
        sections.append(f"<h2 id=data>Data problems</h2><ul class=problems>{problems}</ul>")
    skipped = profile.get("skipped", [])
    if skipped:
        rows = "".join(
            f"<tr><td>{html.escape(str(s.get('path')))}</td><td>{html.escape(str(s.get('reason')))}</td></tr>"
            for s in skipped[:200]
        )
        sections.append(
            f"<h2 id=skipped>Skipped files ({len(skipped)})</h2><div class=scroll><table class=board><thead><tr>"
            f"<th>file</th><th>why</th></tr></thead><tbody>{rows}</tbody></table></div>"
            + ("<p class=muted>The first 200 are listed; skipped.csv has all.</p>" if len(skipped) > 200 else "")
        )
    return sections


def _assemble_page(
    sections: list[str],
    card_html: str,
    fact_rows: str,
    profile: dict,
    pipeline_spec: dict,
    out: Path | None,
    has_test_predictions: bool,
) -> str:
    """The whole HTML page around the already rendered cards, facts and sections."""
    links = [("classes", "Per class"), ("wrong", "Mistakes"), ("search", "Search"), ("leaderboard", "Leaderboard")]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links if f"id={a}" in "".join(sections))
    summary = pipeline_spec.get("summary") or "(no description in the checkpoint)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>autotransfer report</title><link rel="icon" href="data:,"><style>{CSS}</style></head>
<body><main>
<h1>autotransfer fit report</h1>
<div class=sub>{html.escape(str(profile.get("root") or (out or "")))}</div>
<nav>{nav}</nav>
<div class=chosen-box><div class=label>chosen pipeline</div><b>{html.escape(str(summary))}</b></div>
<div class=cards>{card_html}</div>
<table class=facts>{fact_rows}</table>
{"".join(sections)}
<footer>Written by autotransfer. Everything in this page is in the run directory: leaderboard.csv,
predictions-val.csv{", predictions-test.csv" if has_test_predictions else ""}, profile.json,
skipped.csv and pipeline/.</footer>
</main></body></html>"""


def render_html(
    frame: pd.DataFrame,
    profile: dict,
    pipeline_spec: dict,
    elapsed: float,
    budget: float | None = None,
    out: Path | None = None,
) -> str:
    """The report of a run (``out``: the run directory, for the predictions CSVs)."""
    metrics = pipeline_spec.get("metrics") or {}
    out = Path(out) if out is not None else None
    predictions = {s: read_predictions(out, s) if out else None for s in ("val", "test")}
    classes = _classes(pipeline_spec, *predictions.values())
    summaries = {s: split_metrics(metrics, s, predictions[s], classes) for s in ("val", "test")}
    counts = trial_counts(frame)
    card_html = _summary_cards(metrics, summaries, elapsed, budget)
    fact_rows = _fact_rows(metrics, profile, counts, classes, frame)
    sections = _prediction_sections(summaries, predictions, classes, profile, out)
    sections.append(_search_section(frame, profile, metrics))
    sections.append(_leaderboard_section(frame))
    sections.extend(_data_sections(profile))
    return _assemble_page(sections, card_html, fact_rows, profile, pipeline_spec, out, predictions["test"] is not None)


def write_outputs(
    out: Path, records: list[TrialRecord], best: TrialRecord, pipeline, elapsed: float, budget: float
) -> pd.DataFrame:
    """leaderboard.csv, skipped.csv (the files left out, and why) and report.html (written atomically)."""
    out = Path(out)
    spec = getattr(pipeline, "spec", {}) or {}
    frame = leaderboard(records, best, (spec.get("metrics") or {}).get("test_accuracy"))
    write_text_atomic(out / "leaderboard.csv", frame.to_csv(index=False))
    profile = {}
    if (out / "profile.json").exists():
        try:
            profile = json.loads((out / "profile.json").read_text())
        except (OSError, ValueError) as error:
            log.warning("report: profile.json unreadable (%s)", error)
    skipped = pd.DataFrame(profile.get("skipped", []), columns=["path", "reason"])
    write_text_atomic(out / "skipped.csv", skipped.to_csv(index=False))
    write_text_atomic(out / "report.html", render_html(frame, profile, spec, elapsed, budget, out))
    return frame
