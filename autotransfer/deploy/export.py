"""Export a pipeline (or an ensemble of them, deploy/ensemble.py: one graph) to ONNX or TorchScript,
preprocessing included.

The exported graph takes uint8 images (N x 3 x H x W, any batch and any size), resizes them as in
training (deploy/graph_resize.py: the centred square of a pipeline trained on centre crops, as
``predict`` does), normalises them, and returns class logits in the pipeline's class order. The class
names and preprocessing are written next to the file as JSON, so a consumer needs nothing else.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import torch

from autotransfer.deploy.ensemble import EnsembleNet, EnsemblePipeline
from autotransfer.deploy.export_formats import check_export_format
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.files import replacing

ONNX_OPSET = 18


def _example(pipeline: Pipeline) -> torch.Tensor:
    size = pipeline.spec["preprocess"]["size"]
    return torch.randint(0, 256, (2, 3, size + 7, size + 3), dtype=torch.uint8)


def _export_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.export-based ONNX export: it keeps the image sizes symbolic (the resize builds its weights from them)."""
    from torch.export import Dim

    shapes = {
        "images": {0: Dim("batch", max=4096), 2: Dim("height", min=16, max=8192), 3: Dim("width", min=16, max=8192)}
    }
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=shapes,
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
        )


def export(pipeline: Pipeline, fmt: str, out: str | os.PathLike) -> Path:
    """Write the model to ``out`` (and ``out`` + ``.json`` with classes and preprocessing)."""
    check_export_format(fmt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(pipeline, EnsemblePipeline):  # one graph: every member, its own resize, probabilities averaged
        pipeline = pipeline.to_cpu()
        net = pipeline.network()
        described = [f"member {i + 1}: {text}" for i, text in enumerate(net.describe_members())]
        in_graph = "; ".join(described) + "; each member's input normalised, the members' probabilities averaged"
    else:
        pipeline = Pipeline(pipeline.backbone, pipeline.model.to("cpu"), pipeline.spec)
        net = pipeline.network(with_resize=True)
        in_graph = f"{net.resize.describe()}, normalised"
    example = _example(pipeline)
    with replacing(out) as partial, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic are expected here
        if fmt == "torchscript":
            # tracing would freeze the resize's size arithmetic at the example's size: that step is scripted
            if isinstance(net, EnsembleNet):
                for i, resize in enumerate(net.resizes):
                    net.resizes[i] = torch.jit.script(resize)
            else:
                net.resize = torch.jit.script(net.resize)
            with torch.no_grad():
                traced = torch.jit.trace(net, example)
            traced.save(str(partial))
        else:
            _export_onnx(net, example, partial)
    meta = {
        "format": fmt,
        "input": "uint8 images, N x 3 x H x W (RGB, 0..255)",
        "in_graph": in_graph,
        "before_the_graph": (
            "images of any size as 3-channel RGB; an image with transparency (RGBA, gray + alpha, a palette "
            "with alpha) composited on white first, as predict does (a plain convert('RGB') drops the alpha "
            "and keeps whatever colour lies under it, often black)"
        ),
        "output": "log of the members' averaged probabilities, N x classes (softmax gives the average)"
        if isinstance(pipeline, EnsemblePipeline)
        else "logits, N x classes",
        "classes": pipeline.spec["classes"],
        "preprocess": pipeline.spec["preprocess"],
        "pipeline_hash": pipeline.spec.get("content_hash"),
    }
    out.with_name(out.name + ".json").write_text(json.dumps(meta, indent=2))
    return out
