"""Domain distance to ImageNet measured from a pretrained network's BatchNorm statistics.

Every BatchNorm layer of a pretrained network stores the ImageNet mean and variance of each of its input
channels (running statistics). A seeded sample of the user's images passes through the network; the same
per-channel statistics are measured at the input of each BN layer, and the two Gaussians compared with
the 2-Wasserstein distance in units of the ImageNet standard deviation:

    d(channel) = sqrt((mu - mu0)^2 + (sigma - sigma0)^2) / sigma0,   layer distance = mean over channels

This gives a curve of distance by depth. The same pass records the pooled features and the entropy of
the pretrained ImageNet classifier's predictions (transfer/calibration.py places both on one scale).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autotransfer.errors import AutoTransferError
from autotransfer.models.features import normalisation, to_input
from autotransfer.models.zoo import Backbone, classifier_prefixes
from autotransfer.options import DEFAULT_PROFILE_BACKBONE
from autotransfer.runtime import default_device


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
            fix=f"profile with a BN backbone such as {DEFAULT_PROFILE_BACKBONE} (the default).",
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


def mean_distance(rows: list[dict]) -> float:
    return float(np.exp(np.mean([math.log(max(r["distance"], 1e-12)) for r in rows])))


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
        {"group": index, "name": names[index], "distance": mean_distance(by_group[index])} for index in sorted(by_group)
    ]
