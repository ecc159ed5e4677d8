"""A weighted average of several pipelines' probabilities, kept, predicted and exported as one pipeline.

The checkpoint is a directory whose ``pipeline.json`` has ``"kind": "ensemble"``, the member weights and
each member's content hash; every member is an ordinary pipeline checkpoint in ``members/NN/`` (its own
``model.safetensors`` and ``pipeline.json``, verified by its own hash when loaded). Nothing is pickled.
Members may differ in backbone, tap and input size: each resizes the original image as it was trained.
The exported graph runs every member on the same uint8 input, each with its own in-graph resize, and
returns the log of the averaged probabilities (so softmax of its output is the average, and its argmax
the ensemble's label).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autotransfer.deploy.pipeline import FORMAT, SPEC_FILE, Pipeline, Prediction, staged_checkpoint
from autotransfer.errors import AutoTransferError

KIND = "ensemble"
MEMBERS_DIR = "members"


def _ensemble_hash(spec: dict) -> str:
    body = {k: v for k, v in spec.items() if k != "content_hash"}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class EnsembleNet(nn.Module):
    """uint8 images (N x 3 x H x W, any size) in, log of the weighted mean of the members' probabilities out.

    ``nets``: the members' classifiers, each with its training resize (``ConvClassifier.resize``). Members
    trained at the same size and resize share one: it runs once per input (``resizes``; ``resize_of``: each
    member's), as the resize of a large image can cost more than a small member's network.
    """

    def __init__(self, nets: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        self.resizes = nn.ModuleList()
        self.resize_of: list[int] = []
        kinds: list[tuple] = []
        for net in nets:
            kind = (net.resize.size, net.resize.crop, net.resize.bicubic)
            if kind not in kinds:
                kinds.append(kind)
                self.resizes.append(net.resize)
            self.resize_of.append(kinds.index(kind))
            net.resize = None  # EnsembleNet resizes: the member gets its own size
        self.nets = nn.ModuleList(nets)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def describe_members(self) -> list[str]:
        """Each member's resize, in words (deploy/graph_resize.py ``describe``)."""
        return [self.resizes[i].describe() for i in self.resize_of]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.float()
        resized = [resize(pixels) for resize in self.resizes]
        total = torch.zeros(())
        for i, net in enumerate(self.nets):
            total = total + self.weights[i] * torch.softmax(net(resized[self.resize_of[i]]).float(), dim=1)
        return torch.log(total.clamp_min(1e-12))


class EnsemblePipeline(Pipeline):
    """Pipelines whose probabilities are averaged with ``weights`` (they sum to 1); the scikit-learn
    interface (``predict``, ``predict_proba``, ``score``) is Pipeline's, on the averaged probabilities."""

    def __init__(self, members: list[Pipeline], weights: list[float], spec: dict) -> None:
        if not members or len(members) != len(weights):
            raise AutoTransferError("An ensemble needs one weight per member and at least one member.")
        classes = [list(m.classes_) for m in members]
        if any(c != classes[0] for c in classes):
            raise AutoTransferError("The ensemble's members predict different classes.")
        total = float(sum(weights))
        self.members, self.weights = members, [float(w) / total for w in weights]
        first = members[0]
        self.backbone, self.model, self.device = first.backbone, first.model, first.device
        self.spec = {**spec, "format": FORMAT, "kind": KIND, "classes": classes[0],
                     "preprocess": spec.get("preprocess", first.spec["preprocess"])}  # fmt: skip
        self.classes_ = np.array(classes[0])

    @classmethod
    def from_members(
        cls, members: list[Pipeline], weights: list[float], *, metrics: dict, summary: str
    ) -> EnsemblePipeline:
        largest = max(members, key=lambda m: m.spec["preprocess"]["size"])
        spec = {"format_version": 1, "metrics": metrics, "summary": summary, "preprocess": largest.spec["preprocess"],
                "strategy": KIND}  # fmt: skip
        return cls(members, weights, spec)

    def save(self, path: str | os.PathLike) -> Path:
        """Members first, each in its own folder, then ``pipeline.json``; the whole directory replaces the
        old one at once (a half-written ensemble never replaces a good checkpoint)."""
        target = Path(path)
        with staged_checkpoint(target) as staging:
            (staging / MEMBERS_DIR).mkdir()
            entries = []
            for i, (member, weight) in enumerate(zip(self.members, self.weights)):
                folder = member.save(staging / MEMBERS_DIR / f"{i:02d}")
                entries.append({"path": f"{MEMBERS_DIR}/{folder.name}", "weight": weight,
                                "content_hash": member.spec["content_hash"], "summary": member.describe()})  # fmt: skip
            spec = {**self.spec, "members": entries}
            spec["content_hash"] = _ensemble_hash(spec)
            (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2))
        self.spec = spec
        return target

    @classmethod
    def load_folder(cls, folder: Path, spec: dict, device: str | torch.device | None = None) -> EnsemblePipeline:
        """Verify the ensemble's own hash, then load every member (each verifies its own)."""
        if spec.get("content_hash") != _ensemble_hash(spec) or not isinstance(spec.get("members"), list):
            raise AutoTransferError(
                "Checkpoint hash mismatch: the ensemble's pipeline.json was changed after saving.",
                where=str(folder),
                fix="use an intact copy, or save it again from its run.",
            )
        members = []
        for entry in spec["members"]:
            member = Pipeline.load(folder / entry["path"], device)
            if member.spec.get("content_hash") != entry["content_hash"]:
                raise AutoTransferError(f"Member {entry['path']} is not the one saved here.", where=str(folder))
            members.append(member)
        return cls(members, [e["weight"] for e in spec["members"]], spec)

    def network(self, reduce: str = "mean", with_resize: bool = True) -> EnsembleNet:
        """One graph of every member, each with its own training resize (members differ in size)."""
        return EnsembleNet([m.network(reduce, with_resize=True) for m in self.members], self.weights).eval()

    def to_cpu(self) -> EnsemblePipeline:
        members = [Pipeline(m.backbone, m.model.to("cpu"), m.spec) for m in self.members]
        return EnsemblePipeline(members, self.weights, self.spec)

    def predictions(
        self, inputs: Any, size: str | int = "native", reduce: str = "mean", batch_size: int = 32
    ) -> list[Prediction]:
        """Each member's predictions, averaged with the weights; an unreadable input keeps its reason."""
        per_member = [m.predictions(inputs, size, reduce, batch_size) for m in self.members]
        results = []
        for rows in zip(*per_member):
            if rows[0].error:
                results.append(rows[0])
                continue
            mean = sum(w * r.probabilities for w, r in zip(self.weights, rows))
            results.append(Prediction(rows[0].name, mean))
        return results

    def describe(self) -> str:
        return self.spec.get("summary") or f"ensemble of {len(self.members)} pipelines"
