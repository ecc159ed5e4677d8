"""Trial records and the choice of the best one: pure functions of the studies' trials.

A record is one flat dict per finished trial of either stage: ``stage``, ``trial``, ``status``, the
trial's parameters and attributes, ``val_score`` (the run's metric, what the choice maximises; a
pruned trial's best epoch counts) and ``val_accuracy``.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from autotransfer.search.storage import Studies


def trial_records(stage: str, study: optuna.Study) -> list[dict]:
    """Every trial of ``study`` that is not running, as a record."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        if state == "running":
            continue
        row = {"stage": stage, "trial": t.number, "status": state, **t.params, **t.user_attrs}
        # Optuna keeps a pruned (or budget-stopped) trial's last epoch as its value; its checkpoint is the best epoch's
        best_epoch = t.user_attrs.get("best_val_score") if state == "pruned" else None
        score = best_epoch if best_epoch is not None else t.value
        score = score if score is not None else t.user_attrs.get("best_val_score")
        row["val_score"] = score if score is not None else t.user_attrs.get("best_val_accuracy")  # older studies
        row["val_accuracy"] = _accuracy(row)
        rows.append(row)
    # An interrupted trial (Ctrl-C, a full disk) was failed by Optuna and queued again: say so on its row.
    trials = study.get_trials(deepcopy=False)
    retries = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    for row in rows:
        if row["trial"] in retries and row["status"] == "fail" and not row.get("error"):
            row["error"] = f"interrupted; queued again as trial {retries[row['trial']]}"
    return rows


def _accuracy(row: dict) -> float | None:
    """The trial's validation accuracy: recorded by the trial, else its best epoch's (``best.json`` of a
    fine-tuning trial the pruner or the budget stopped), else its score when the metric is accuracy; None
    rather than another metric's score (a stopped trial once showed its macro F1 as its accuracy)."""
    accuracy = row.get("val_accuracy", row.get("best_val_accuracy"))
    if accuracy is None and row.get("checkpoint_dir"):
        try:
            accuracy = json.loads(Path(row["checkpoint_dir"], "best.json").read_text()).get("val_accuracy")
        except (OSError, ValueError):
            accuracy = None
    if accuracy is None and row.get("metric", "accuracy") == "accuracy":
        accuracy = row["val_score"]
    return accuracy


def records(studies: Studies) -> list[dict]:
    """Both stages' records, probes first."""
    return trial_records("probe", studies.probes) + trial_records("finetune", studies.finetune)


def usable(record: dict) -> bool:
    """A record the final pipeline can be built from: scored, and (fine-tuning) with its weights on disk."""
    if record["val_score"] is None or record["status"] not in ("complete", "pruned"):
        return False
    return record["stage"] == "probe" or Path(record.get("checkpoint_dir", "-"), "best.json").exists()


def best_record(rows: list[dict], margin: float = 0.0) -> dict | None:
    """The best validation score; among equals the cheaper to run, decided by the trials' settings
    (never by their wall time, so the same seed picks the same pipeline): a probe before a fine-tuned
    network, smaller inputs, then the earlier trial (for probes, the shallower tap).

    ``margin`` > 0: the cheapest record whose score is within ``margin`` of the best, by the same
    order, the higher score first among equally cheap ones (search/selection.py: the one-standard-error
    rule on small data)."""
    candidates = [r for r in rows if usable(r)]
    if not candidates:
        return None
    if margin <= 0:
        return max(candidates, key=lambda r: (r["val_score"], *_cost_order(r)))
    top = max(r["val_score"] for r in candidates)
    near = [r for r in candidates if r["val_score"] >= top - margin]
    return max(near, key=lambda r: (*_cost_order(r)[:2], r["val_score"], -r["trial"]))


def _cost_order(record: dict) -> tuple[bool, int, int]:
    """Larger is cheaper: a probe, smaller inputs, the earlier trial."""
    return record["stage"] == "probe", -record.get("resolution", 0), -record["trial"]
