"""Peer `autogluon`: AutoGluon's ``MultiModalPredictor`` for image classification, default preset.

The train folder becomes a DataFrame of (image path, label); AutoMM makes its own validation split,
trains with its default recipe and stops at ``fit(time_limit=...)``. Its backbone is our offline
ImageNet mobilenetv2_100: ``model.timm_image.checkpoint_name`` is a folder with ``config.json`` and
a headless ``pytorch_model.bin`` written here from the offline zoo's file (AutoMM creates the model
with ``num_classes=0`` and loads it strictly). Input size: the suite's (``model.timm_image.image_size``).

``time_limit`` bounds training only, not the model loading before it nor AutoMM's work after it
(loading the best checkpoint, prediction), so it gets what is left of the budget minus a reserve
for those; the runner's wall clock (``within_budget``) tells whether that was enough.
Runs in ``.peers/autogluon`` (``make peers``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.contenders import _peer  # noqa: E402

RESERVE = 0.2  # of the budget, kept for AutoMM's work after time_limit (best checkpoint, test predictions)


def checkpoint_folder(weights: Path, folder: Path) -> Path:
    """The offline weights as AutoMM reads a local timm checkpoint: config.json + headless pytorch_model.bin."""
    import timm
    import torch
    from safetensors.torch import load_file

    model = timm.create_model(_peer.BACKBONE, pretrained=False)
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("classifier.")}
    model.reset_classifier(0)
    model.load_state_dict(state, strict=True)  # fails loudly if the offline file does not fit timm 1.0.3's model
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    cfg = dict(model.pretrained_cfg)
    cfg["interpolation"] = "bilinear"  # torchvision's MobileNetV2 training (autotransfer's offline zoo says so too)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": _peer.BACKBONE,
                "num_classes": 0,
                "num_features": model.num_features,
                "pretrained_cfg": cfg,
            },
            default=str,
        )
    )
    return folder


def main() -> int:
    args = _peer.arguments(__doc__.splitlines()[0])
    _peer.fix_torchvision()
    import pandas as pd
    from autogluon.multimodal import MultiModalPredictor

    checkpoint = checkpoint_folder(args.weights, args.out / "mobilenetv2_100-offline")
    paths, labels = _peer.image_files(args.train)
    test_paths, test_labels = _peer.image_files(args.test)
    train = pd.DataFrame({"image": paths, "label": labels})
    test = pd.DataFrame({"image": test_paths, "label": test_labels})
    time_limit = max(5.0, args.budget * (1 - RESERVE) - _peer.elapsed())
    _peer.log(f"fit with time_limit {time_limit:.0f} s")
    predictor = MultiModalPredictor(
        label="label", problem_type="multiclass", path=str(args.out / "automm"), verbosity=2
    )
    predictor.fit(
        train,
        time_limit=time_limit,
        seed=args.seed,
        hyperparameters={
            "model.names": ["timm_image"],
            "model.timm_image.checkpoint_name": str(checkpoint),
            "model.timm_image.image_size": args.size,
            "env.num_gpus": 0,
        },
    )
    _peer.log("fit done")
    predicted = predictor.predict(test.drop(columns=["label"]))
    test_accuracy = float((predicted.to_numpy() == test["label"].to_numpy()).mean())
    summary = getattr(predictor, "fit_summary", dict)() or {}
    val = summary.get("val_accuracy") or summary.get("validation_metric")
    _peer.answer(
        test_accuracy,
        f"AutoGluon MultiModalPredictor (default preset, AutoMM's own validation split): "
        f"timm_image {_peer.BACKBONE} (offline ImageNet weights) at {args.size}px, "
        f"time_limit {time_limit:.0f} s",
        val if isinstance(val, (int, float)) else None,
        dict(zip(test["image"], predicted.astype(str))),  # row for row, as test_accuracy compares them
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
