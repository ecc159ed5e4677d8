"""What a seeded run writes for people: its leaderboard, ``pipeline.json`` and the report's visible
text are the committed files in ``tests/golden/``, up to what a run cannot repeat (times, durations,
paths, dates, which a small normaliser masks). A refactor that changes a value, a column or a label
fails here: one such change once showed a trial's macro F1 as its accuracy.

After an intended change of the outputs, regenerate with ``AUTOTRANSFER_GOLDEN_UPDATE=1`` and review
the diff of ``tests/golden/``."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from conftest import SPACE

from autotransfer import AutoTransfer

GOLDEN = Path(__file__).parent / "golden"
DECIMALS = 6  # floats beyond this differ between BLAS builds, not between versions of the code

# Leaderboard columns that measure the machine, not the search.
TIMED_COLUMNS = re.compile(r"seconds|_s$|^started|^finished|^date|checkpoint_dir|path|^worker$")  # worker: host:pid
# pipeline.json keys that do the same.
TIMED_KEYS = re.compile(r"seconds|^created|^date|time$|_at$|path|dir$|^version$|sha256|fingerprint|content_hash")
PATTERNS = [  # (what, replacement), applied in this order to every text compared
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?"), "<date>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "<date>"),
    (re.compile(r"(/[^\s/\"'<>]+)+/?"), "<path>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|s|min|h|m|seconds?|minutes?|hours?)\b"), "<duration>"),
    (re.compile(r"\b(\d+h)?(\d+m)?\d+s\b"), "<duration>"),
    (re.compile(r"\b\d+:\d{2}(:\d{2})?\b"), "<duration>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(GiB|MiB|KiB|GB|MB|kB|B)\b"), "<size>"),
    (re.compile(r"\bv?\d+\.\d+\.\d+([.+-][\w.]+)?\b"), "<version>"),
]


def normalise(text: str) -> str:
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class _VisibleText(HTMLParser):
    """The text a reader sees, one line per block of text and one per table row (cells joined by
    `` | ``); no script, style or SVG internals. A cell under a ``seconds`` header is masked, a table row
    about the machine's load is left out, and rows of a leaderboard table that tie on the score are put
    in trial order (the report breaks such ties by measured seconds)."""

    HIDDEN = {"script", "style", "svg"}

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.hidden = 0
        self.header: list[str] = []  # the last header row of the current table
        self.rows: list[list[str]] | None = None  # the current table's rows, None outside a table
        self.in_head = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in self.HIDDEN
        if tag == "table":
            self.rows, self.header = [], []
        elif tag == "thead":
            self.in_head = True
        elif tag == "tr" and self.rows is not None:
            self.rows.append([])
        elif tag in ("td", "th") and self.rows is not None:
            self.cell = []

    def handle_endtag(self, tag):
        self.hidden -= tag in self.HIDDEN
        if tag in ("td", "th") and self.cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.rows and self.in_head:
            self.header = self.rows.pop()
        elif tag == "thead":
            self.in_head = False
        elif tag == "table" and self.rows is not None:
            self.lines.extend(self._table_lines(self.rows, self.header))
            self.rows = None

    def handle_data(self, data):
        if self.hidden:
            return
        if self.cell is not None:
            self.cell.append(data)
        elif text := " ".join(data.split()):
            self.lines.append(text)

    @staticmethod
    def _table_lines(rows: list[list[str]], header: list[str]) -> list[str]:
        masked = [i for i, name in enumerate(header) if "seconds" in name]
        rows = [[("<masked>" if i in masked else c) for i, c in enumerate(row)] for row in rows]
        rows = [row for row in rows if row and row[0] != "machine load"]
        scored = next((name for name in ("val score", "CV score") if name in header), None)  # sections._score_headers
        if scored and "trial" in header:
            score, trial = header.index(scored), header.index("trial")
            key = lambda row: (row[score], int(row[trial].lstrip("★") or -1))  # noqa: E731
            ties: dict[str, list[list[str]]] = {}
            for row in rows:
                ties.setdefault(row[score], []).append(row)
            rows = [row for group in ties.values() for row in sorted(group, key=key)]
        lines = [" | ".join(header)] if header else []
        return lines + [" | ".join(row) for row in rows]


# A sentence that compares measured seconds: whether it appears depends on the machine's load.
OFF_FRONT = re.compile(r" ?The ★ trial is not on the Pareto front:.*?while [^.]*\.")


def report_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return normalise(OFF_FRONT.sub("", "\n".join(parser.lines))) + "\n"


def leaderboard_text(frame: pd.DataFrame) -> str:
    """The CSV with timed columns masked; rows that tie on the score in (stage, trial) order, since the
    leaderboard breaks such ties by measured seconds."""
    scores = frame["val_score"]
    assert scores.dropna().is_monotonic_decreasing and scores.isna().is_monotonic_increasing  # best first
    ranked = frame.assign(_order=frame["val_score"].fillna(-1).rank(method="dense", ascending=False))
    frame = ranked.sort_values(["_order", "chosen", "stage", "trial"], ascending=[True, False, True, True])
    frame = frame.drop(columns="_order")
    for column in frame.columns:
        if TIMED_COLUMNS.search(column):
            frame[column] = frame[column].map(lambda v: v if pd.isna(v) else "<masked>")
        elif pd.api.types.is_float_dtype(frame[column]):
            frame[column] = frame[column].round(DECIMALS)
    return normalise(frame.to_csv(index=False))


def _masked(value, key: str = ""):
    if TIMED_KEYS.search(key):
        return "<masked>"
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    if isinstance(value, float):
        return round(value, DECIMALS)
    if isinstance(value, str):
        return normalise(value)
    return value


def pipeline_text(spec: dict) -> str:
    return json.dumps(_masked(spec), indent=1, sort_keys=True) + "\n"


def _seeded_run(fit_env, tmp_path) -> Path:
    fit_env["space"].write_text(SPACE.replace("max_trials: 3", "max_trials: 2"))
    out = tmp_path / "golden-run"
    AutoTransfer(
        time_budget="10m",
        search_space=fit_env["space"],
        out=out,
        seed=3,
        profile_backbone="test_efficientnet",
        device="cpu",
    ).fit(fit_env["data"])
    return out


def test_a_seeded_run_writes_the_committed_outputs(fit_env, tmp_path):
    out = _seeded_run(fit_env, tmp_path)
    got = {
        "leaderboard.csv": leaderboard_text(pd.read_csv(out / "leaderboard.csv")),
        "pipeline.json": pipeline_text(json.loads((out / "pipeline" / "pipeline.json").read_text())),
        "report.txt": report_text((out / "report.html").read_text()),
    }
    if os.environ.get("AUTOTRANSFER_GOLDEN_UPDATE"):
        GOLDEN.mkdir(exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text)
    for name, text in got.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/golden/{name}"


def test_the_normaliser_masks_times_and_paths_only():
    assert normalise("took 12.5 s at 2026-12-06 09:46:02 in /tmp/x/run") == "took <duration> at <date> in <path>"
    assert normalise("val accuracy 0.8333, 12 images, 3 classes") == "val accuracy 0.8333, 12 images, 3 classes"
    row = {"stage": "probe", "trial": 0, "chosen": True, "seconds": 3.2}
    board = lambda score, seconds: pd.DataFrame([{**row, "val_score": score, "seconds": seconds}])  # noqa: E731
    assert leaderboard_text(board(0.5, 3.2)) == leaderboard_text(board(0.5, 9.9))
    assert leaderboard_text(board(0.5, 3.2)) != leaderboard_text(board(0.6, 3.2))
