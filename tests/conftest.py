"""Shared fixtures: an isolated cache per test, generators of small synthetic images, and a tiny
'pretrained' timm model with local weights for end-to-end runs (fit_env)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import autotransfer  # noqa: F401  (applies the torchvision fix before any test imports timm)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own cache and never reaches a hub; slow tests opt back into the real cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("AUTOTRANSFER_CACHE", str(cache))
    monkeypatch.setenv("AUTOTRANSFER_OFFLINE", "1")
    monkeypatch.delenv("AUTOTRANSFER_WEIGHTS", raising=False)
    from autotransfer.models.weights import hub_reachable

    hub_reachable.cache_clear()
    return cache


def colour_image(seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Image.Image:
    """A random smooth colour photo stand-in (width, height)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(base, "RGB").resize(size, Image.Resampling.BILINEAR)
    return image if mode == "RGB" else image.convert(mode)


def make_imagefolder(
    root: Path, classes: dict[str, int], size: tuple[int, int] = (40, 30), fmt: str = "png", seed: int = 0
) -> Path:
    """``root/<class>/<i>.<fmt>`` with distinct images; each class has its own tint so it is learnable."""
    for c, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = np.asarray(colour_image(seed * 10_000 + c * 1000 + i, size), dtype=np.int16)
            image[..., c % 3] = np.clip(image[..., c % 3] + 60, 0, 255)
            Image.fromarray(image.astype(np.uint8)).save(folder / f"img_{i}.{fmt}")
    return root


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "data", {"cats": 6, "dogs": 6, "birds": 5})


def run_concurrently(code: str, argument: str, cache: Path, copies: int = 3) -> set[str]:
    """Run ``python -c code argument`` ``copies`` times at once on one cache; their distinct outputs."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AUTOTRANSFER_CACHE": str(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, argument], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(copies)
    ]
    outputs = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    return outputs


def small_probe_pipeline(folder, counts: dict[str, int]):
    """A Pipeline (random-init test backbone, a probe head trained one epoch) on an image folder made under
    ``folder`` with ``counts`` images per class; returns (pipeline, the folder's root)."""
    import torch

    from autotransfer.data.datasets import load_dataset
    from autotransfer.deploy.pipeline import Pipeline
    from autotransfer.models.zoo import create_backbone
    from autotransfer.transfer.finetune import FinetuneConfig, finetune

    root = make_imagefolder(folder / "d", counts)
    dataset = load_dataset(root, image_size=32, show_progress=False)
    torch.manual_seed(0)
    backbone = create_backbone("test_efficientnet", pretrained=False)
    config = FinetuneConfig(strategy="linear_probe", epochs=1, batch_size=8, bf16=False, warmup_epochs=0)
    result = finetune(dataset, backbone, config)
    pipeline = Pipeline.from_model(
        backbone, result.model, classes=dataset.classes, recipe=dataset.recipe, frozen_groups=0,
        head_type="linear", strategy="linear_probe", hyperparameters=result.config,
        metrics={"val_accuracy": result.best_val_accuracy},
    )  # fmt: skip
    return pipeline, root


def as_from_a_terminal() -> None:
    """``preexec_fn`` of the tests' commands: Ctrl-C (SIGINT) reaches them as it does a command typed in a
    terminal. A test run started as a background job (``pytest &`` from a script) has SIGINT ignored, and
    children inherit that, so interruption tests would test nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def cli():
    """Run ``autotransfer ARGS`` in a subprocess (the real entry point, exit codes included)."""
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    def run(args: list[str], timeout: float = 600):
        done = subprocess.run(
            [sys.executable, "-c", "from autotransfer.cli import main; main()", *args],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=timeout,
            preexec_fn=as_from_a_terminal,
        )
        return SimpleNamespace(exit_code=done.returncode, stdout=done.stdout, output=done.stdout + done.stderr)

    return run


SPACE = """
backbones: [test_efficientnet]
resolutions: [32]
strategies: [linear_probe, mid_layer_probe, lp_ft, finetune_top, finetune_all]
probe: {heads: [softmax], c_grid: [1.0], top_taps: 0}
finetune: {candidates: 1, max_trials: 3, epochs: 2, batch_size: 8}
"""
# Stand-ins for the profiler's ImageNet/noise reference statistics (real ones need real weights).
REFS = {
    "imagenet_photos": 0.5,
    "clipart": 1.2,
    "noise": 3.0,
    "entropy_imagenet_photos": 2.0,
    "entropy_clipart": 4.0,
    "entropy_noise": 6.0,
}


@pytest.fixture
def fit_env(tmp_path, monkeypatch, isolated_cache):
    """Local 'pretrained' weights for test_efficientnet, its profiler references, a space and a dataset."""
    from autotransfer.models.features import model_fingerprint
    from autotransfer.models.zoo import create_backbone

    torch.manual_seed(0)
    weights = tmp_path / "weights"
    weights.mkdir()
    model = create_backbone("test_efficientnet", pretrained=False, keep_classifier=True).model
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(weights / "test_efficientnet.safetensors")
    )
    monkeypatch.setenv("AUTOTRANSFER_WEIGHTS", str(weights))
    net = create_backbone("test_efficientnet", keep_classifier=True)
    key = hashlib.blake2b(f"v3-{model_fingerprint(net.model)}-32".encode(), digest_size=12).hexdigest()
    (isolated_cache / "profile-references").mkdir(parents=True)
    (isolated_cache / "profile-references" / f"{key}.json").write_text(json.dumps(REFS))
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    data = make_imagefolder(tmp_path / "data", {"a": 12, "b": 12, "c": 12})
    return {"space": space, "data": data, "out": tmp_path / "run"}


def exported_probabilities(path: Path, fmt: str, images: list) -> np.ndarray:
    """Class probabilities (N x K, float64) of an exported ONNX / TorchScript graph, one raw image (any
    size, uint8) at a time, as a deployed model receives them."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        run = lambda pixels: session.run(None, {"images": pixels.numpy()})[0]  # noqa: E731
    else:
        run = torch.jit.load(str(path))
    got = []
    for image in images:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].contiguous()
        got.append(torch.softmax(torch.as_tensor(np.asarray(run(pixels))).double(), 1).numpy()[0])
    return np.array(got)
