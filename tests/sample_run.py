"""A synthetic run directory for the report's tests and its browser check: the files a real ``fit``
writes before ``write_outputs`` (profile.json, predictions-val.csv, predictions-test.csv and the
images they name), plus records, the chosen record and a pipeline stand-in. Generated in well under
a second, with no model: only the report's inputs, shaped as the search writes them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from autotransfer.search.records import TrialRecord
from autotransfer.search.run_profile import RunProfile
from autotransfer.transfer.profile import DatasetProfile, Prior

CLASSES = ["cat", "dog", "fox"]


def _image(path: Path, tint: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(base).resize((40, 30), Image.Resampling.BILINEAR), dtype=np.int16)
    image[..., tint % 3] = np.clip(image[..., tint % 3] + 80, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(path)


def _predictions(root: Path, split: str, per_class: int, wrong: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            path = root / split / name / f"{name}_{i}.png"
            _image(path, c, seed * 1000 + c * 100 + i)
            predicted = CLASSES[(c + 1) % len(CLASSES)] if i < wrong and c != 0 else name
            rows.append({"path": str(path), "label": name, "predicted": predicted,
                         "confidence": round(float(rng.uniform(0.4, 0.99)), 4)})  # fmt: skip
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows, columns=["path", "label", "predicted", "confidence"]).to_csv(path, index=False)


def records(finetune_finished: bool = True) -> list[TrialRecord]:
    """Probe and fine-tuning records as the search leaves them: scores, a pruned, a failed and a
    queued trial that never ran (its cells missing)."""
    probes = [
        {
            "stage": "probe",
            "trial": i,
            "status": "complete",
            "strategy": s,
            "backbone": "mobilenetv2_100",
            "resolution": r,
            "tap": t,
            "head": "torch",
            "C": c,
            "val_accuracy": v,
            "seconds": sec,
        }  # fmt: skip
        for i, (s, r, t, c, v, sec) in enumerate(
            [
                ("linear_probe", 64, "head", 1.0, 0.80, 2.1),
                ("mid_layer_probe", 64, "blocks.4", 0.3, 0.86, 1.6),
                ("mid_layer_probe", 96, "blocks.5", 1.0, 0.84, 3.9),
                ("linear_probe", 96, "head", 3.0, 0.83, 4.4),
            ]
        )
    ]
    base = {"stage": "finetune", "backbone": "mobilenetv2_100", "resolution": 64, "tap": "head", "augmentation": "none"}
    finetune = [
        {**base, "trial": 0, "status": "fail", "strategy": "finetune_all", "val_accuracy": None, "seconds": 1.0,
         "error": "RuntimeError: out of memory"},  # fmt: skip
        {**base, "trial": 1, "status": "complete" if finetune_finished else "waiting", "strategy": "finetune_top",
         "freeze_groups": 4, "head_lr": 3e-3, "backbone_lr_ratio": 0.1, "epochs_run": 6,
         "val_accuracy": 0.9 if finetune_finished else None, "seconds": 21.5 if finetune_finished else None},
        {**base, "trial": 2, "status": "pruned" if finetune_finished else "waiting", "strategy": "lp_ft",
         "freeze_groups": 6, "head_lr": 1e-3, "backbone_lr_ratio": 0.03, "epochs_run": 2,
         "val_accuracy": 0.7 if finetune_finished else None, "seconds": 8.0 if finetune_finished else None,
         "stopped": "pruned after epoch 2 (Hyperband)" if finetune_finished else None},
        {"stage": "finetune", "trial": 3, "status": "waiting"},  # queued, never ran: its cells are missing
    ]  # fmt: skip
    # the run's metric is accuracy: each record's score is its accuracy, as TrialRecord.from_trial writes it
    return [TrialRecord(**r, val_score=r.get("val_accuracy")) for r in probes + finetune]


def make_run(out: Path, with_test: bool = True, finetune_finished: bool = True) -> dict:
    """Write a run directory's report inputs into ``out``; return the arguments of ``write_outputs``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    val = _predictions(data, "val", per_class=6, wrong=3, seed=1)
    _write_csv(out / "predictions-val.csv", val)
    if with_test:
        _write_csv(out / "predictions-test.csv", _predictions(data, "test", per_class=8, wrong=2, seed=2))
    groups = ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "conv_head"]
    dataset = replace(
        dataset_profile(),
        n_images=150,
        backbone="mobilenetv2_100",
        group_distance=[
            {"group": i, "name": g, "distance": round(0.2 + 0.1 * i + 0.03 * (i % 2), 3)} for i, g in enumerate(groups)
        ],
        rationale="median 40 images per class (< 300: small); similarity 0.41 (< 0.6: different)",
        problems=["class 'fox' has 3 near-duplicate images"],
        skipped=[{"path": str(data / "train" / "cat" / "broken.jpg"), "reason": "cannot identify image file"}],
    )
    RunProfile(dataset=dataset).save(out)  # profile.json as a run writes it
    rows = records(finetune_finished)
    best = rows[5] if finetune_finished else rows[1]
    metrics = {"val_accuracy": best.val_accuracy, "refit_on_train_val": True, "metric": "val_accuracy",
               "metric_reason": "classes are balanced (imbalance 1.0:1)"}  # fmt: skip
    if with_test:
        metrics["test_accuracy"] = 0.875
    summary = f"{best.strategy} on tap `{best.tap}` of {best.backbone} at {best.resolution}px"
    pipeline = SimpleNamespace(spec={"classes": CLASSES, "summary": summary, "metrics": metrics})
    return {"out": out, "records": rows, "best": best, "pipeline": pipeline, "elapsed": 97.0, "budget": 120.0}


def dataset_profile(prior: Prior | None = None) -> DatasetProfile:
    """A small-different profile of 36 images in 3 classes, as profile_dataset returns one."""
    return DatasetProfile(
        n_images=36, n_classes=3, images_per_class={"a": 12, "b": 12, "c": 12},
        class_balance={"imbalance_ratio": 1.0}, resolution={"median_short_side": 30.0, "profiled_at_reason": "32px"},
        grayscale_share=0.0, exact_duplicates=0, cross_split_duplicates=0, skipped=[], backbone="test_efficientnet",
        image_size=32, sample_size=36, layer_distance=[], group_distance=[{"group": 0, "distance": 0.5}],
        similarity=float("nan"), similarity_parts={}, references={"noise": None}, separability={}, size_class="small",
        domain="different", quadrant="small-different", recommended_strategy="lp_ft", rationale="small and different",
        prior=prior or Prior(), thresholds={"similar_at": 0.75},
    )  # fmt: skip
