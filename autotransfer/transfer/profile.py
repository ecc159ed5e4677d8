"""Dataset profiler: size, quality, per-layer domain distance to ImageNet, and the strategy it implies.

Domain distance without ImageNet images: every BatchNorm layer of a pretrained network stores the
ImageNet mean and variance of each of its input channels (running statistics). We pass a seeded
sample of the user's images through the network, measure the same per-channel statistics at the
input of each BN layer, and compare the two Gaussians with the 2-Wasserstein distance in units of
the ImageNet standard deviation:

    d(channel) = sqrt((mu - mu0)^2 + (sigma - sigma0)^2) / sigma0,   layer distance = mean over channels

This gives a curve of distance by depth. First and second moments miss some shifts that change
what the images *mean* but hardly their statistics (colour inversion is the clearest case), so a
second, output-level signal is measured too: the entropy H of the pretrained ImageNet classifier's
predictions on the sample (unfamiliar images get uncertain predictions).

Both are calibrated per backbone and resolution on references measured the same way (cached):
20 real ImageNet photos (foolbox's; D_in, H_in), 28 Open Clip Art drawings shipped in
``references/`` (D_clip, H_clip) and uniform noise (D_noise, H_noise). Each signal is mapped
piecewise-linearly onto a scale where photos are 1, clip art 0.5 and noise 0 (log distances, since
distances span decades):

    s_bn   = ladder(log D; log D_in -> 1, log D_clip -> 0.5, log D_noise -> 0)
    s_pred = ladder(H;     H_in -> 1,     H_clip -> 0.5,     H_noise -> 0)
    similarity = mean(s_bn, s_pred)        (s_bn alone when the weights have no ImageNet classifier)

Two more references, mildly shifted photos (blur + colour jitter) and grayscale handwritten digits,
are measured as checkpoints: the profile reports where each lands (``reference_similarity``) and
which one the dataset is nearest to. Without a clip-art reference (hand-given ``references``) the
scale is the straight line from photos to noise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
from torch import nn

from autotransfer.data.datasets import Dataset, load_dataset
from autotransfer.errors import AutoTransferError
from autotransfer.files import write_text_atomic
from autotransfer.models.features import model_fingerprint, normalisation, to_input
from autotransfer.models.zoo import Backbone, classifier_prefixes, create_backbone
from autotransfer.options import DEFAULT_PROFILE_BACKBONE
from autotransfer.runtime import default_device
from autotransfer.settings import cache_dir
from autotransfer.transfer.metrics import majority_rate
from autotransfer.transfer.strategies import QUADRANT_STRATEGIES, STRATEGIES
from autotransfer.transfer.transferability import knn_accuracy, logme

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = DEFAULT_PROFILE_BACKBONE
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
GRAY_SAMPLE = 4096  # images the gray check reads: the share is a sample estimate beyond it


@dataclass(frozen=True)
class Thresholds:
    """Where the strategy matrix is cut. See docs/profiler.md for why these defaults."""

    large_images_per_class: int = 200  # median images per class at or above this: "large" (docs/profiler.md)
    similar_at: float = 0.75  # similarity at or above this: "similar" (between clip art 0.5 and mild shifts 0.9+)


@dataclass
class DatasetProfile:
    """Everything the profiler measured, and the strategy prior it derives (JSON-ready)."""

    n_images: int
    n_classes: int
    images_per_class: dict[str, int]
    class_balance: dict[str, float]
    resolution: dict[str, float]
    grayscale_share: float
    exact_duplicates: int
    cross_split_duplicates: int
    skipped: list[dict]
    backbone: str
    image_size: int
    sample_size: int
    layer_distance: list[dict]
    group_distance: list[dict]
    similarity: float
    similarity_parts: dict[str, float]
    references: dict[str, float | None]
    separability: dict[str, float]
    size_class: str
    domain: str
    quadrant: str
    recommended_strategy: str
    rationale: str
    prior: dict
    thresholds: dict
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reference_similarity: dict[str, float] = field(default_factory=dict)  # each reference on the same scale
    nearest_reference: str | None = None  # the reference whose similarity is closest to the dataset's
    label_conflicts: list[dict] = field(default_factory=list)  # same bytes in two classes: paths and labels

    def to_json(self) -> dict:
        return _finite(asdict(self))


def _finite(value):
    """JSON has no NaN: replace non-finite floats by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --------------------------------------------------------------------------- BN statistics


@dataclass
class _ChannelMoments:
    total: torch.Tensor
    squares: torch.Tensor
    count: int = 0


@dataclass
class SampleMeasure:
    """What one pass over a sample gives: BN distances by layer, pooled features, prediction entropy."""

    layers: list[dict]
    pooled: np.ndarray
    entropy: float | None  # None when the backbone has no ImageNet classifier to ask


def _imagenet_head(backbone: Backbone) -> nn.Module | None:
    """The pretrained 1000-class classifier, if this backbone kept and loaded one."""
    head = backbone.model.get_submodule(classifier_prefixes(backbone.model)[0])
    loaded = backbone.weights is not None and backbone.weights.imagenet_classifier
    return head if loaded and isinstance(head, nn.Linear) and head.out_features == 1000 else None


def measure_sample(
    backbone: Backbone, images: np.ndarray, batch_size: int = 64, device: torch.device | None = None
) -> SampleMeasure:
    """Distance to ImageNet at the input of every BN layer (forward order), pooled features, entropy."""
    device = device or default_device()
    model = backbone.model.to(device).eval()
    bns = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    }
    if not bns:
        raise AutoTransferError(
            f"{backbone.name} has no BatchNorm layers, so its ImageNet statistics are unknown.",
            fix=f"profile with a BN backbone such as {DEFAULT_BACKBONE} (the default).",
        )
    moments: dict[str, _ChannelMoments] = {}
    order: list[str] = []
    pooled: list[np.ndarray] = []
    entropies: list[np.ndarray] = []
    imagenet_head = _imagenet_head(backbone)

    def collect_bn(name: str):
        def collect(_module, inputs):
            x = inputs[0].detach().double()
            if name not in moments:
                order.append(name)
                moments[name] = _ChannelMoments(
                    torch.zeros(x.shape[1], dtype=torch.float64, device=x.device),
                    torch.zeros(x.shape[1], dtype=torch.float64, device=x.device),
                )
            m = moments[name]
            m.total += x.sum(dim=(0, 2, 3))
            m.squares += (x * x).sum(dim=(0, 2, 3))
            m.count += x.shape[0] * x.shape[2] * x.shape[3]

        return collect

    def collect_head(_module, inputs, output):
        pooled.append(inputs[0].detach().float().flatten(1).cpu().numpy())
        if imagenet_head is not None:
            p = output.float().softmax(dim=1)
            entropies.append((-(p * p.clamp_min(1e-12).log()).sum(dim=1)).cpu().numpy())

    classifier = model.get_submodule(classifier_prefixes(model)[0])
    handles = [module.register_forward_pre_hook(collect_bn(name)) for name, module in bns.items()]
    handles.append(classifier.register_forward_hook(collect_head))
    mean, std = normalisation(backbone, device)
    try:
        with torch.inference_mode():  # fp32 on purpose: statistics need the precision
            for start in range(0, len(images), batch_size):
                model(to_input(images[start : start + batch_size], mean, std, device))
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name in order:
        m, bn = moments[name], bns[name]
        mu = m.total / m.count
        sigma = (m.squares / m.count - mu * mu).clamp_min(0).sqrt()
        mu0, sigma0 = bn.running_mean.double(), (bn.running_var.double() + bn.eps).sqrt()
        per_channel = ((mu - mu0) ** 2 + (sigma - sigma0) ** 2).sqrt() / sigma0
        rows.append({"layer": name, "distance": float(per_channel.mean())})
    entropy = float(np.concatenate(entropies).mean()) if entropies else None
    return SampleMeasure(rows, np.concatenate(pooled), entropy)


def _mean_distance(rows: list[dict]) -> float:
    return float(np.exp(np.mean([math.log(max(r["distance"], 1e-12)) for r in rows])))


REFERENCES_DIR = Path(__file__).parent / "references"
# name in the references dict -> what it stands for (docs/profiler.md). Anchors of the scale: photos 1, clip art
# 0.5, noise 0; the other two are checkpoints that show where real transfer situations land on it.
REFERENCE_NAMES = {
    "imagenet_photos": "ImageNet photos (foolbox's 20)",
    "photos_shifted": "the same photos blurred and colour-jittered (a mild shift)",
    "clipart": "Open Clip Art drawings (28, two per category)",
    "digits": "grayscale handwritten digits (scikit-learn's 8x8, upscaled)",
    "noise": "uniform noise",
}
CLIPART_SCORE = 0.5  # where clip art sits on the scale, by definition


def _shifted(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A mild, seeded shift of a photo: Gaussian blur (radius 1.5) and colour/brightness/contrast jitter."""
    image = image.convert("RGB").filter(ImageFilter.GaussianBlur(1.5))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.4, 0.7))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 0.9))


def reference_images(image_size: int) -> dict[str, np.ndarray]:
    """The reference samples (uint8 N x S x S x 3) at ``image_size``, by name of REFERENCE_NAMES."""
    from sklearn.datasets import load_digits

    from autotransfer.data.images import ResizeRecipe, resize, to_rgb
    from autotransfer.models.imagenet_check import imagenet_samples

    recipe = ResizeRecipe(image_size, "crop", "bicubic")

    def prepare(images) -> np.ndarray:
        return np.stack([np.asarray(resize(to_rgb(image), recipe)) for image in images])

    photos = [Image.open(path) for path, _ in imagenet_samples()]
    rng = np.random.default_rng(0)
    digits = np.round(load_digits().images[:64] / 16.0 * 255.0).astype(np.uint8)
    return {
        "imagenet_photos": prepare(photos),
        "photos_shifted": prepare([_shifted(image, rng) for image in photos]),
        "clipart": prepare([Image.open(path) for path in sorted(REFERENCES_DIR.glob("clipart_*.png"))]),
        "digits": prepare([Image.fromarray(d, "L") for d in digits]),
        "noise": rng.integers(0, 256, size=(32, image_size, image_size, 3), dtype=np.uint8),
    }


def reference_distances(backbone: Backbone, image_size: int) -> dict[str, float]:
    """D (mean BN distance) and H (``entropy_<name>``) of every reference, for this model and size; cached."""
    key = hashlib.blake2b(f"v3-{model_fingerprint(backbone.model)}-{image_size}".encode(), digest_size=12).hexdigest()
    path = cache_dir() / "profile-references" / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    references: dict[str, float] = {}
    for name, images in reference_images(image_size).items():
        measured = measure_sample(backbone, images)
        references[name] = _mean_distance(measured.layers)
        if measured.entropy is not None:
            references[f"entropy_{name}"] = measured.entropy
    write_text_atomic(path, json.dumps(references))
    return references


def _ladder(value: float, near: float, middle: float | None, far: float) -> float:
    """1 at ``near``, CLIPART_SCORE at ``middle`` (when given), 0 at ``far``: piecewise linear, clipped."""
    if far <= near:  # degenerate references (the same statistics for photos and noise): no scale to place on
        return 1.0 if value <= near else 0.0
    if middle is None or not near < middle < far:  # two anchors (or an out-of-order middle): one straight line
        return float(np.clip((far - value) / (far - near), 0.0, 1.0))
    if value <= middle:
        return float(np.clip(1.0 - (1.0 - CLIPART_SCORE) * (value - near) / (middle - near), CLIPART_SCORE, 1.0))
    return float(np.clip(CLIPART_SCORE * (far - value) / (far - middle), 0.0, CLIPART_SCORE))


def similarity_score(distance: float, references: dict[str, float]) -> float:
    """s_bn of the module docstring (log distances; clip art's anchor is used when measured)."""
    middle = references.get("clipart")
    return _ladder(
        math.log(max(distance, 1e-12)),
        math.log(references["imagenet_photos"]),
        None if middle is None else math.log(middle),
        math.log(references["noise"]),
    )


def similarity_of(measure: SampleMeasure, references: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The overall similarity and its parts (see the module docstring)."""
    return _similarity(_mean_distance(measure.layers), measure.entropy, references)


def _similarity(distance: float, entropy: float | None, references: dict[str, float]) -> tuple[float, dict[str, float]]:
    parts = {"bn_statistics": similarity_score(distance, references)}
    if entropy is not None and "entropy_noise" in references:
        parts["imagenet_predictions"] = _ladder(
            entropy,
            references["entropy_imagenet_photos"],
            references.get("entropy_clipart"),
            references["entropy_noise"],
        )
    return float(np.mean(list(parts.values()))), parts


def reference_similarities(references: dict[str, float]) -> dict[str, float]:
    """Where each measured reference lands on the similarity scale (photos 1, clip art 0.5, noise 0)."""
    return {
        name: _similarity(references[name], references.get(f"entropy_{name}"), references)[0]
        for name in REFERENCE_NAMES
        if name in references
    }


def _group_of_layer(backbone: Backbone) -> dict[str, int]:
    owner = {}
    for group in backbone.depth_groups:
        for param in group.params:
            owner[param.rsplit(".", 1)[0]] = group.index
    return owner


def group_distances(backbone: Backbone, rows: list[dict]) -> list[dict]:
    owner = _group_of_layer(backbone)
    by_group: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        if row["layer"] in owner:
            by_group[owner[row["layer"]]].append(row)
    names = {g.index: g.name for g in backbone.depth_groups}
    return [
        {"group": index, "name": names[index], "distance": _mean_distance(by_group[index])}
        for index in sorted(by_group)
    ]


# --------------------------------------------------------------------------- resolution

CPU_RESOLUTION = 128  # docs/profiler.md: 3x the throughput of 224 px on 2 cores, and the fine details mostly kept
GPU_RESOLUTION = 224  # the pretrained weights' own size
MIN_RESOLUTION = 64  # a stride-32 network's last feature map is 2x2 here; below it, 1x1


def native_short_sides(data: str | Path | Dataset, sample: int = 512, seed: int = 0) -> list[int]:
    """Short sides (pixels) of the images of ``data``: from a Dataset's records, or the headers of a seeded sample."""
    if isinstance(data, Dataset):
        return [min(r["width"], r["height"]) for r in data.records if "width" in r]
    from autotransfer.data.sources import index_dataset

    paths = index_dataset(data).paths
    chosen = np.random.default_rng(seed).permutation(len(paths))[:sample]
    sides = []
    for i in chosen:
        try:
            with Image.open(paths[i]) as image:  # reads the header only
                sides.append(min(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return sides


def choose_resolution(
    sizes: str | Path | Dataset | list[int] | list[tuple[int, int]],
    *,
    device: str | torch.device | None = None,
    choices: tuple[int, ...] | list[int] | None = None,
) -> tuple[int, str]:
    """The one resolution that both ``profile`` and ``fit`` measure/train at, and why (a sentence).

    ``sizes``: a dataset (folder, CSV or Dataset) or its native sizes (short sides, or (width, height)).
    The target is 128 px on a CPU and 224 px on a GPU, lowered to the median short side rounded up to a
    multiple of 32 (never below 64) when the images are smaller: upscaling invents no detail. With
    ``choices`` (the search space's resolutions) it is the largest choice at or below that target, or
    the smallest choice when all are above it.
    """
    if isinstance(sizes, (str, Path, Dataset)):
        sides = native_short_sides(sizes)
    else:
        sides = [min(s) if isinstance(s, (tuple, list)) else int(s) for s in sizes]
    device = torch.device(device) if device is not None else default_device()
    cap, where = (GPU_RESOLUTION, "GPU") if device.type == "cuda" else (CPU_RESOLUTION, "CPU")
    median = float(np.median(sides)) if sides else float(cap)
    target = min(cap, max(MIN_RESOLUTION, 32 * math.ceil(median / 32)))
    reason = (
        f"{target}px: {where} default"
        if target == cap
        else f"{target}px: images are small (median short side {median:.0f}px), upscaling adds no detail"
    )
    if choices:
        below = [c for c in sorted(choices) if c <= target]
        picked = below[-1] if below else min(choices)
        if picked != target:
            reason = f"{picked}px: the search space's resolution nearest below {reason}"
        target = picked
    return int(target), reason


def profile_resolution(
    sizes: str | Path | Dataset | list[int] | list[tuple[int, int]],
    *,
    device: str | torch.device | None = None,
    choices: tuple[int, ...] | list[int] | None = None,
) -> int:
    """choose_resolution without the reason: the resolution ``profile`` and ``fit`` share."""
    return choose_resolution(sizes, device=device, choices=choices)[0]


# --------------------------------------------------------------------------- dataset statistics


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def _gray_share(dataset: Dataset, seed: int) -> float:
    """The share of gray images outside the test split, measured on up to ``GRAY_SAMPLE`` of them (seeded):
    a file in a gray mode, or a colour file whose channels are all equal."""
    rows = np.flatnonzero(dataset.splits != "test")
    if len(rows) > GRAY_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(rows, GRAY_SAMPLE, replace=False))
    gray = np.array([dataset.records[i].get("mode") in GRAY_MODES for i in rows], dtype=bool)
    for start in range(0, len(rows), 2048):
        chunk = np.asarray(dataset.images[rows[start : start + 2048]])
        gray[start : start + len(chunk)] |= (chunk[..., 0] == chunk[..., 1]).all((1, 2)) & (
            chunk[..., 1] == chunk[..., 2]
        ).all((1, 2))
    return float(gray.mean()) if len(gray) else 0.0


def _duplicates(dataset: Dataset) -> tuple[int, int, list[str]]:
    """(extra copies of images filed under one class, groups crossing splits, leak examples); images in
    two classes are label conflicts (data/conflicts.py), counted there and not as plain duplicates."""
    conflicting = {conflict.content_hash for conflict in dataset.conflicts}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(dataset.records):
        groups[record["content_hash"]].append(i)
    repeated = [g for h, g in groups.items() if len(g) > 1 and h not in conflicting]
    extra_copies = sum(len(g) - 1 for g in repeated)
    crossing = [g for g in repeated if len({dataset.splits[i] for i in g}) > 1]
    examples = [" = ".join(str(dataset.paths[i]) for i in g[:2]) for g in crossing[:3]]
    return extra_copies, len(crossing), examples


# --------------------------------------------------------------------------- strategy


def _tap_group(backbone: Backbone, module: str) -> int:
    """The deepest depth group holding parameters of ``module`` (a tap's module) or below it."""
    groups = [
        g.index for g in backbone.depth_groups if any(p == module or p.startswith(module + ".") for p in g.params)
    ]
    return max(groups, default=-1)


def _generic_taps(backbone: Backbone, groups: list[dict]) -> list[str]:
    """The (up to two) deepest taps in the range where the distance is still below its midpoint."""
    candidates = [t for t in backbone.taps if t.name != "head"] or backbone.taps
    if not groups:
        return [candidates[-1].name]
    low, high = min(g["distance"] for g in groups), max(g["distance"] for g in groups)
    generic_until = max((g["group"] for g in groups if g["distance"] <= (low + high) / 2), default=0)
    taps = [t.name for t in candidates if _tap_group(backbone, t.module) <= generic_until]
    return (taps or [candidates[len(candidates) // 2].name])[-2:]


def strategy_prior(quadrant: str, backbone: Backbone, groups: list[dict]) -> dict:
    """Where the search starts: strategies in order, taps, freeze depths and LR ranges to try first."""
    n_groups = len(backbone.depth_groups)
    large, similar = quadrant.startswith("large"), quadrant.endswith("similar")
    mid = _generic_taps(backbone, groups)
    return {
        "strategies": list(QUADRANT_STRATEGIES[quadrant]),
        "taps": ["head"] + mid if similar else mid + ["head"],
        "freeze_groups": ([0, n_groups // 2] if large else [n_groups, n_groups - 2])
        if similar
        else ([0, 1] if large else [n_groups // 2, n_groups]),
        "head_lr": [1e-3, 1e-2],
        "backbone_lr_ratio": ([0.01, 0.1] if similar else [0.1, 1.0]) if large else [0.001, 0.05],
        "layer_decay": [0.7, 0.9] if similar else [0.85, 1.0],
    }


def _problems(profile: dict, counts: dict[str, int], leak_examples: list[str], skipped: list[dict]) -> list[str]:
    problems = []
    smallest = min(counts.values())
    if smallest < 5:
        few = [c for c, n in counts.items() if n < 5]
        problems.append(
            f"{len(few)} class(es) have fewer than 5 images ({', '.join(few[:5])}): their accuracy "
            "will be unreliable; add images or merge classes."
        )
    if profile["class_balance"]["imbalance_ratio"] > 10:
        problems.append(
            f"Classes are imbalanced {profile['class_balance']['imbalance_ratio']:.0f}:1; "
            "class weights or more images of the small classes help."
        )
    if profile["label_conflicts"]:
        conflicts = profile["label_conflicts"]
        problems.append(
            f"{len(conflicts)} label conflict(s): the same image (same bytes) in more than one class, e.g. "
            + "; ".join(" = ".join(f"{p} ({c})" for p, c in zip(x["paths"], x["labels"])) for x in conflicts[:3])
            + ". Keep each image in its one class."
        )
    if profile["exact_duplicates"]:
        problems.append(f"{profile['exact_duplicates']} exact duplicate image(s) (same bytes, same class).")
    if profile["cross_split_duplicates"]:
        problems.append(
            f"{profile['cross_split_duplicates']} duplicate(s) cross train/val/test (leakage), e.g. "
            + "; ".join(leak_examples)
        )
    if skipped:
        problems.append(f"{len(skipped)} file(s) skipped (unreadable or not images); see 'skipped'.")
    if profile["resolution"]["median_short_side"] < 32:
        problems.append(
            f"Images are tiny (median short side {profile['resolution']['median_short_side']:.0f} px): "
            "they are upscaled, and fine details cannot be recovered."
        )
    return problems


def _load_for_profile(
    data: str | Path | Dataset, image_size: int | None, seed: int, show_progress: bool
) -> tuple[Dataset, str]:
    """The dataset to profile and why it is at its size (``data`` may already be a Dataset)."""
    if isinstance(data, Dataset):
        return data, f"{data.recipe.size}px: the size the dataset was decoded at"
    size_reason = f"{image_size}px: asked for"
    if image_size is None:
        image_size, size_reason = choose_resolution(data)
    return load_dataset(data, image_size=image_size, seed=seed, show_progress=show_progress), size_reason


def _draw_sample(dataset: Dataset, sample_size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of the non-test images (the test split is never looked at)."""
    selectable = np.flatnonzero(dataset.splits != "test")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(selectable, size=min(sample_size, len(selectable)), replace=False))


def _separability(pooled: np.ndarray, sample_labels: np.ndarray, n_sample: int) -> dict[str, float]:
    """kNN accuracy, LogME and the majority-class rate of the sample's pooled features."""
    return {
        "knn_accuracy": knn_accuracy(pooled, sample_labels) if n_sample > 2 else float("nan"),
        "logme": logme(pooled, sample_labels),
        "chance": majority_rate(sample_labels),  # a constant guess of the sample's majority class
    }


def _data_fields(dataset: Dataset, per_class: list[int], size_reason: str) -> tuple[dict, list[str], list[dict]]:
    """Class balance, resolution and duplicate fields, with leak examples and the skipped files."""
    learning = [r for r, split in zip(dataset.records, dataset.splits) if split != "test"]  # never steered by test
    short_sides = [min(r["width"], r["height"]) for r in learning]
    aspects = [r["width"] / r["height"] for r in learning]
    duplicates, crossing, leak_examples = _duplicates(dataset)
    skipped = [{"path": s.path, "reason": s.reason} for s in dataset.skipped]
    fields = {
        "class_balance": {**_percentiles(per_class), "imbalance_ratio": max(per_class) / max(min(per_class), 1)},
        "resolution": {
            "median_short_side": float(np.median(short_sides)),
            "min_short_side": float(min(short_sides)),
            "max_short_side": float(max(short_sides)),
            "median_aspect": float(np.median(aspects)),
            "widest_aspect": float(max(aspects)),
            "tallest_aspect": float(min(aspects)),
            "profiled_at": dataset.recipe.size,
            "profiled_at_reason": size_reason,
        },
        "exact_duplicates": duplicates,
        "cross_split_duplicates": crossing,
        "label_conflicts": [conflict.to_json() for conflict in dataset.conflicts],
    }
    return fields, leak_examples, skipped


def _rationale(
    per_class: list[int], similarity: float, large: bool, similar: bool, thresholds: Thresholds, strategy: str
) -> str:
    """One line on why the data falls in its quadrant and which strategy that gives."""
    return (
        f"median {np.median(per_class):.0f} images per class "
        f"({'>=' if large else '<'} {thresholds.large_images_per_class}: {'large' if large else 'small'}); "
        f"similarity {similarity:.2f} ({'>=' if similar else '<'} {thresholds.similar_at}: "
        f"{'similar' if similar else 'different'}) -> {STRATEGIES[strategy].text}"
    )


def profile_dataset(
    data: str | Path | Dataset,
    *,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    image_size: int | None = None,
    sample_size: int = 256,
    seed: int = 0,
    thresholds: Thresholds = Thresholds(),
    weights: str | Path | None = None,
    references: dict[str, float] | None = None,
    show_progress: bool = True,
) -> DatasetProfile:
    """Measure ``data`` and place it in the strategy matrix. Samples ``sample_size`` images (seeded).

    ``image_size`` None: profile_resolution(data) (a Dataset is measured at the size it was decoded at).
    ``references`` default to the cached measurement for this backbone and size (reference_distances).
    """
    start = time.perf_counter()
    dataset, size_reason = _load_for_profile(data, image_size, seed, show_progress)
    net = (
        backbone if isinstance(backbone, Backbone) else create_backbone(backbone, weights=weights, keep_classifier=True)
    )
    test = dataset.counts("test")
    counts = {c: n - test[c] for c, n in dataset.counts().items()}  # the test split never steers the search
    per_class = list(counts.values())
    sample = _draw_sample(dataset, sample_size, seed)
    images = np.asarray(dataset.images[sample])
    measure = measure_sample(net, images)
    layers, pooled = measure.layers, measure.pooled
    references = references or reference_distances(net, dataset.recipe.size)
    overall = _mean_distance(layers)
    similarity, parts = similarity_of(measure, references)
    groups = group_distances(net, layers)
    ladder = reference_similarities(references)
    nearest = min(ladder, key=lambda name: abs(ladder[name] - similarity)) if ladder else None
    separability = _separability(pooled, dataset.labels[sample], len(sample))
    large = float(np.median(per_class)) >= thresholds.large_images_per_class
    similar = similarity >= thresholds.similar_at
    quadrant = f"{'large' if large else 'small'}-{'similar' if similar else 'different'}"
    strategy = QUADRANT_STRATEGIES[quadrant][0]
    fields, leak_examples, skipped = _data_fields(dataset, per_class, size_reason)
    return DatasetProfile(
        n_images=sum(per_class),
        n_classes=len(dataset.classes),
        images_per_class=counts,
        grayscale_share=_gray_share(dataset, seed),
        skipped=skipped,
        backbone=net.name,
        image_size=dataset.recipe.size,
        sample_size=len(sample),
        layer_distance=layers,
        group_distance=groups,
        similarity=similarity,
        similarity_parts=parts,
        references={**references, "dataset": overall, "entropy_dataset": measure.entropy},
        reference_similarity=ladder,
        nearest_reference=nearest,
        separability=separability,
        size_class="large" if large else "small",
        domain="similar" if similar else "different",
        quadrant=quadrant,
        recommended_strategy=strategy,
        rationale=_rationale(per_class, similarity, large, similar, thresholds, strategy),
        prior=strategy_prior(quadrant, net, groups),
        thresholds=asdict(thresholds),
        problems=_problems(fields, counts, leak_examples, skipped),
        seconds=time.perf_counter() - start,
        **fields,
    )
