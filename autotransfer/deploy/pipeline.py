"""The pipeline a user keeps: a backbone cut at a tap plus a linear head, its preprocessing and its story.

A checkpoint is a directory holding ``model.safetensors`` (every tensor) and ``pipeline.json``
(architecture, tap, classes, preprocessing, hyper-parameters, metrics, versions and a content hash).
Nothing is pickled, so loading cannot run code; the hash covers both files, so a changed or truncated
checkpoint is refused before any tensor is used. Inference is fully convolutional (fully_conv.py):
images larger than the training size are classified in one pass over their whole area.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from autotransfer.data.images import ResizeRecipe
from autotransfer.deploy.graph_resize import GraphResize
from autotransfer.deploy.predict_inputs import list_inputs
from autotransfer.deploy.predict_size import checked_size
from autotransfer.deploy.predict_stream import BATCH_SIZE, Prediction, stream_predictions
from autotransfer.errors import AutoTransferError
from autotransfer.models.fully_conv import ConvClassifier, conv_trunk
from autotransfer.models.wheel_assets import sha256_file
from autotransfer.models.zoo import COMBINED_TAP, Backbone, create_backbone
from autotransfer.runtime import checked_device, default_device
from autotransfer.transfer.finetune import TransferModel

FORMAT = "autotransfer-pipeline"
FORMAT_VERSION = 1
SPEC_FILE, TENSORS_FILE = "pipeline.json", "model.safetensors"


def _versions() -> dict[str, str]:
    import timm

    from autotransfer import __version__

    return {"autotransfer": __version__, "torch": torch.__version__, "timm": timm.__version__}


def _content_hash(spec: dict, tensors_sha256: str) -> str:
    body = {k: v for k, v in spec.items() if k != "content_hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(canonical + b"\0" + tensors_sha256.encode()).hexdigest()


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a run directory holding one in ``pipeline/``."""
    path = Path(path)
    for candidate in (path, path / "pipeline"):
        if (candidate / SPEC_FILE).is_file():
            return candidate
    if (path / "run.json").is_file():  # a run directory whose fit stopped before saving (Ctrl-C, an error)
        try:
            data = json.loads((path / "run.json").read_text()).get("data") or "DATA"
        except (OSError, ValueError):
            data = "DATA"
        raise AutoTransferError(
            f"The run in {path} has no pipeline yet: its fit stopped before saving one.",
            where=str(path),
            fix=f"finish it with `autotransfer fit {data} --out {path} --resume` (the trials it ran are kept).",
        )
    raise AutoTransferError(
        f"No pipeline checkpoint at {path} ({SPEC_FILE} not found there or in pipeline/).",
        where=str(path),
        fix="pass a run directory of `autotransfer fit` or a checkpoint directory.",
    )


@contextmanager
def staged_checkpoint(target: Path) -> Iterator[Path]:
    """A staging folder next to ``target`` to write a checkpoint into; on success it replaces ``target``
    in one rename (the previous checkpoint moved aside first, then removed), so a half-written checkpoint
    never replaces a good one. A write that fails (a full disk) raises AutoTransferError, the old intact."""
    _clear_dead_saves(target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise AutoTransferError(
            f"Could not write the checkpoint: {error.strerror or error}.",
            where=str(target),
            fix="free disk space or choose another {option}; the previous files are intact.",
            option="out",
        ) from error


def _clear_dead_saves(target: Path) -> None:
    """Tidy what a killed save left next to ``target``: its staging copy is dropped, and a previous
    checkpoint it had moved aside (killed between the two renames) is put back if nothing replaced it."""
    if not target.parent.is_dir():
        return
    for leftover in sorted(target.parent.iterdir()):
        for kind in ("old", "tmp"):
            pid = leftover.name.removeprefix(f".{target.name}.{kind}-")
            if pid == leftover.name or not pid.isdigit() or _alive(int(pid)):
                continue
            if kind == "old" and not target.exists():
                os.replace(leftover, target)
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class Pipeline:
    """A trained transfer pipeline with the scikit-learn prediction interface."""

    def __init__(self, backbone: Backbone, model: TransferModel, spec: dict) -> None:
        self.backbone, self.model, self.spec = backbone, model.eval(), spec
        self.classes_ = np.array(spec["classes"])
        self.device = next(model.parameters()).device

    # ------------------------------------------------------------------ building and saving
    @classmethod
    def from_model(  # noqa: PLR0913 (what a saved pipeline records, all keyword-only but the model)
        cls,
        backbone: Backbone,
        model: TransferModel,
        *,
        classes: list[str],
        recipe: ResizeRecipe,
        frozen_groups: int,
        head_type: str,
        strategy: str,
        hyperparameters: dict,
        metrics: dict,
        summary: str = "",
    ) -> Pipeline:
        spec = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "classes": list(classes),
            "backbone": {
                "name": backbone.name,
                "source": backbone.source,
                "weights": backbone.weights.describe() if backbone.weights else "random init",
            },
            "tap": {"name": model.tap, "module": COMBINED_TAP.join(model.tap_modules)},
            "frozen_groups": frozen_groups,
            "n_depth_groups": len(backbone.depth_groups),
            "head": {"type": head_type, "in_features": model.head.in_features},
            "strategy": strategy,
            "summary": summary,
            "preprocess": {
                "size": recipe.size,
                "resize_mode": recipe.mode,
                "interpolation": recipe.interpolation,
                "mean": list(backbone.preprocess.mean),
                "std": list(backbone.preprocess.std),
            },
            "hyperparameters": hyperparameters,
            "metrics": metrics,
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return cls(backbone, model, spec)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint directory atomically (a half-written checkpoint never replaces a good one)."""
        target = Path(path)
        with staged_checkpoint(target) as staging:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(staging / TENSORS_FILE), metadata={"format": FORMAT})
            spec = dict(self.spec, tensors_sha256=sha256_file(staging / TENSORS_FILE))
            spec["content_hash"] = _content_hash(spec, spec["tensors_sha256"])
            (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2))
        self.spec = spec
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> Pipeline:
        """Verify and load a checkpoint (or a run directory's). Never executes code from the files.
        A ``device`` this machine lacks raises AutoTransferError before anything is read."""
        device = checked_device(device)
        folder = checkpoint_dir(path)
        try:
            spec = json.loads((folder / SPEC_FILE).read_text())
        except (OSError, ValueError) as error:
            raise AutoTransferError(
                f"{SPEC_FILE} is unreadable or not JSON ({error}).",
                where=str(folder),
                fix="the checkpoint is damaged: save it again from its run.",
            ) from error
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise AutoTransferError(f"{SPEC_FILE} is not an autotransfer pipeline.", where=str(folder))
        if spec.get("format_version", 0) > FORMAT_VERSION:
            raise AutoTransferError(
                f"Checkpoint format {spec.get('format_version')} is newer than this autotransfer "
                f"understands ({FORMAT_VERSION}).",
                where=str(folder),
                fix="upgrade autotransfer.",
            )
        if spec.get("kind") == "ensemble":  # several pipelines averaged (deploy/ensemble.py)
            from autotransfer.deploy.ensemble import EnsemblePipeline

            return EnsemblePipeline.load_folder(folder, spec, device)
        tensors = folder / TENSORS_FILE
        if not tensors.is_file():
            raise AutoTransferError(f"{TENSORS_FILE} is missing.", where=str(folder))
        actual = sha256_file(tensors)
        if actual != spec.get("tensors_sha256") or _content_hash(spec, actual) != spec.get("content_hash"):
            raise AutoTransferError(
                "Checkpoint hash mismatch: the files were changed or truncated after saving.",
                where=str(folder),
                fix="use an intact copy, or save it again from its run.",
            )
        try:
            state = load_file(str(tensors))
            backbone = create_backbone(spec["backbone"]["name"], pretrained=False, device="cpu")
            model = TransferModel(backbone, spec["tap"]["name"], len(spec["classes"]))
            model.load_state_dict(state, strict=True)
        except (SafetensorError, KeyError, RuntimeError) as error:
            raise AutoTransferError(
                f"Checkpoint does not match its architecture ({str(error)[:300]}).",
                where=str(folder),
                fix="the checkpoint is damaged or from another version.",
            ) from error
        device = torch.device(device) if device is not None else default_device()
        return cls(backbone, model.to(device), spec)

    # ------------------------------------------------------------------ inference
    @property
    def recipe(self) -> ResizeRecipe:
        p = self.spec["preprocess"]
        return ResizeRecipe(p["size"], p["resize_mode"], p["interpolation"])

    def network(self, reduce: str = "mean", with_resize: bool = False) -> ConvClassifier:
        """The fully-convolutional classifier (pixels 0..255 in, logits out) of this pipeline; with
        ``with_resize``, the training resize (centre crop or squash) is its first step (for export)."""
        p = self.spec["preprocess"]
        trunk = conv_trunk(self.backbone, self.spec["tap"]["name"], p["size"])
        resize = (
            GraphResize(p["size"], p["resize_mode"] == "crop", p.get("interpolation", "bilinear"))
            if with_resize
            else None
        )
        net = ConvClassifier(trunk, self.model.head, p["mean"], p["std"], reduce, resize)
        return net.to(self.device).eval().requires_grad_(False)

    def predictions(
        self, inputs: Any, size: str | int = "native", reduce: str = "mean", batch_size: int = BATCH_SIZE
    ) -> list[Prediction]:
        """Probabilities per input; unreadable inputs carry their reason instead (nothing is dropped).
        ``iter_predictions`` gives the same one at a time (memory bounded whatever the number of inputs)."""
        return list(self.iter_predictions(inputs, size, reduce, batch_size))

    def iter_predictions(
        self,
        inputs: Any,
        size: str | int = "native",
        reduce: str = "mean",
        batch_size: int = BATCH_SIZE,
        *,
        draft: bool = True,
    ) -> Iterator[Prediction]:
        """One Prediction per input, in order, decoded and classified ``batch_size`` at a time.

        ``size``: "native" resizes every image as in training; "original" keeps each image's size and
        aspect ratio, its shorter side held between the training size and twice it (larger images are scaled
        down: deploy/predict_size.py's ORIGINAL_MAX_SCALE); an int sets the shorter side. Larger images are
        classified by sliding the network over them (mean or max of the class-score map). ``draft``:
        JPEGs are decoded at a reduced scale near the size needed (deploy/predict_inputs.py).
        """
        sources = list_inputs(inputs).items
        return stream_predictions(self, sources, size=size, reduce=reduce, batch_size=batch_size, draft=draft)

    def shorter_side(self, size: str | int) -> int | None:
        """The shorter side ``size`` asks for (None: each image's own), checked."""
        native = self.spec["preprocess"]["size"]
        value = checked_size(size)
        if value in ("native", "original"):
            return None if value == "original" else native
        return max(value, native)

    def probabilities(self, net: ConvClassifier, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of uint8 NHWC pixels."""
        # PIL's arrays are read-only, which torch.from_numpy warns about: "W" copies those only
        tensor = torch.from_numpy(np.require(pixels, requirements=("C", "W"))).to(self.device).permute(0, 3, 1, 2)
        with torch.inference_mode():
            return torch.softmax(net(tensor).float(), dim=1).cpu().numpy()

    def predict_proba(self, inputs: Any, size: str | int = "native", reduce: str = "mean") -> np.ndarray:
        """(n_inputs, n_classes) probabilities, columns in ``classes_`` order. Unreadable inputs raise."""
        sources = list_inputs(inputs).items
        probabilities = np.zeros((len(sources), len(self.classes_)), dtype=np.float32)
        bad = []
        for row, result in enumerate(stream_predictions(self, sources, size=size, reduce=reduce)):
            if result.error:
                bad.append(result)
            else:
                probabilities[row] = result.probabilities
        _refuse_unreadable(bad)
        return probabilities

    def predict_proba_frame(self, inputs: Any, size: str | int = "native", reduce: str = "mean") -> pd.DataFrame:
        """``predict_proba`` as a DataFrame: one row per image, indexed by its path (``path``; arrays and
        PIL images by their position), one column per class of ``classes_``. Unreadable inputs raise."""
        results = self.predictions(inputs, size, reduce)
        _refuse_unreadable([r for r in results if r.error])
        rows = np.stack([r.probabilities for r in results]) if results else np.zeros((0, len(self.classes_)))
        return pd.DataFrame(rows, columns=list(self.classes_), index=pd.Index([r.name for r in results], name="path"))

    def predict(self, inputs: Any, size: str | int = "native", reduce: str = "mean") -> np.ndarray:
        """Class names, one per input."""
        return self.classes_[self.predict_proba(inputs, size, reduce).argmax(1)]

    def score(self, inputs: Any, y: Any, size: str | int = "native") -> float:
        """Accuracy against ``y`` (class names, or class indices); labels that are not classes of this
        pipeline raise AutoTransferError before anything is predicted."""
        y = np.asarray(y)
        if not len(y):
            raise AutoTransferError("Nothing to score: no labels given.", fix="pass the inputs and their labels.")
        classes = np.asarray(self.classes_)
        if np.issubdtype(y.dtype, np.integer):
            if len(y) and (y.min() < 0 or y.max() >= len(classes)):
                raise AutoTransferError(f"Class indices must lie in 0..{len(classes) - 1}; got {y.min()}..{y.max()}.")
            truth = classes[y]
        else:
            truth = y.astype(str)
        unknown = sorted(set(truth) - set(classes))
        if unknown:  # a typo or another label set would otherwise count as plain mistakes
            shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
            raise AutoTransferError(
                f"{len(unknown)} label(s) are not classes of this pipeline: "
                + ", ".join(repr(str(u)) for u in unknown[:5]),
                fix=f"use its classes: {shown}.",
            )
        predicted = self.predict(inputs, size)
        if len(truth) != len(predicted):
            raise AutoTransferError(f"{len(predicted)} inputs but {len(truth)} labels.")
        return float((predicted == truth).mean())

    def describe(self) -> str:
        return self.spec.get("summary") or f"{self.spec['backbone']['name']} tap {self.spec['tap']['name']}"

    def __repr__(self) -> str:
        """``Pipeline(backbone='mobilenetv2_100', tap='blocks.5', resolution=128, classes=['cat', 'dog'],
        accuracy=0.9123)``: the search's score of the chosen configuration, under its metric's name."""
        metrics = self.spec.get("metrics", {})
        metric = metrics.get("metric") or "accuracy"
        score = metrics.get("val_score", metrics.get("val_accuracy"))
        if score is not None and metric == "log_loss":
            score = -float(score)  # searched as its negative: the loss itself
        classes = [str(c) for c in self.classes_]
        shown = classes if len(classes) <= 6 else [*classes[:5], f"... {len(classes)} in all"]
        if "backbone" in self.spec:
            parts = [f"backbone={self.spec['backbone']['name']!r}", f"tap={self.spec['tap']['name']!r}"]
        else:  # an ensemble (deploy/ensemble.py): its members, in words
            parts = [f"summary={self.describe()!r}"]
        parts += [f"resolution={self.spec['preprocess']['size']}", f"classes={shown}"]
        if score is not None:
            parts.append(f"{metric}={float(score):.4f}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def top_k(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes of one row of ``predict_proba`` with their probabilities, best
        first (ties in class order); ``k`` is clamped to the number of classes."""
        order = np.argsort(-np.asarray(probabilities), kind="stable")[: self.clamp_top_k(k)]
        return [(str(self.classes_[i]), float(probabilities[i])) for i in order]

    def clamp_top_k(self, k: int) -> int:
        """``k`` within 1 and the number of classes (``predict --top-k 50`` on 7 classes lists 7)."""
        return max(1, min(k, len(self.classes_)))


def _refuse_unreadable(bad: list[Prediction]) -> None:
    """The inputs of a batch prediction that could not be read, as one error (``predict`` skips them instead)."""
    if bad:
        raise AutoTransferError(
            f"{len(bad)} input(s) could not be read: " + "; ".join(f"{r.name}: {r.error}" for r in bad[:5]),
            fix="remove them, or use `autotransfer predict`, which reports and skips them.",
        )
