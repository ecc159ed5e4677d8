"""Fully-convolutional inference: the trained network slides over images of any size in one pass.

The recipe's trick: a linear layer is a convolution. The head (a linear map on globally pooled tap
features) becomes a 1x1 convolution applied *before* pooling, which yields a class-score map; its
mean equals the original logits exactly (pooling and a linear map commute). For torchvision's
AlexNet/VGG, whose taps may lie in the fully-connected classifier, the first FC layer (reading the
k x k x C map) becomes a k x k convolution and the next ones 1x1 convolutions.

timm's fx feature extractor gives the trunk up to a convolutional tap as a plain module (no hooks),
which is what TorchScript and ONNX export need.

A combined tap (several taps' pooled features concatenated, ``Backbone.tap_parts``) splits its head
into one 1x1 convolution per part: the logits are the sum of each part's mean score, exactly the
head on the concatenated pooled features, whatever the maps' sizes. The score map adds the parts'
maps once the coarser ones are resized (bilinear) to the finest one.
"""

from __future__ import annotations

import torch
from torch import nn

from autotransfer.errors import AutoTransferError
from autotransfer.models.zoo import Backbone

REDUCTIONS = ("mean", "max")


class _TapOutputs(nn.Module):
    """The fx feature extractor returns a dict: its entries as a list, in the taps' order.
    ``channels``: each map's."""

    def __init__(self, extractor: nn.Module, channels: list[int]) -> None:
        super().__init__()
        self.extractor = extractor
        self.channels = channels
        self.keys = [f"tap{i}" for i in range(len(channels))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.extractor(x)
        return [outputs[key] for key in self.keys]


class _Listed(nn.Module):
    """A one-output trunk as a list of one map, like ``_TapOutputs``."""

    def __init__(self, trunk: nn.Module, channels: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.channels = [channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk(x)]


def conv_from_linear(linear: nn.Linear) -> nn.Conv2d:
    """A linear layer as the equivalent 1x1 convolution."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, linear.in_features, 1, 1))
        conv.bias.copy_(linear.bias)
    return conv


def first_fc_as_conv(linear: nn.Linear, pool: nn.AdaptiveAvgPool2d, channels: int, map_size: int) -> nn.Conv2d:
    """The first FC layer, which reads ``pool``'s p x p output, as one conv over the k x k map it sees.

    Adaptive average pooling is linear, so FC ∘ pool is a single linear map of the k x k map: a k x k
    convolution. At the network's native size k == p, pooling is the identity and the kernel is the FC
    weight reshaped (AlexNet at 224 px: fc6 becomes a 6x6 conv producing 1x1x4096).
    """
    p_h, p_w = (pool.output_size, pool.output_size) if isinstance(pool.output_size, int) else pool.output_size
    if linear.in_features != channels * p_h * p_w:
        raise AutoTransferError(f"FC layer of {linear.in_features} inputs does not read a {channels}x{p_h}x{p_w} map.")
    k = map_size
    with torch.no_grad():
        basis = torch.eye(k * k).view(k * k, 1, k, k)
        pooling = pool(basis).reshape(k * k, p_h * p_w)  # how each input cell feeds each pooled cell
        weight = linear.weight.view(linear.out_features, channels, p_h * p_w)
        kernel = torch.einsum("ocq,pq->ocp", weight, pooling).reshape(linear.out_features, channels, k, k)
    conv = nn.Conv2d(channels, linear.out_features, k)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(linear.bias)
    return conv


def _classifier_trunk(backbone: Backbone, tap_module: str, train_size: int) -> nn.Module:
    """torchvision AlexNet/VGG up to a tap inside ``classifier``, with its FC layers as convolutions."""
    model = backbone.model
    if not all(hasattr(model, a) for a in ("features", "avgpool", "classifier")):
        raise AutoTransferError(
            f"Tap {tap_module!r} of {backbone.name} is a vector layer that cannot be made convolutional.",
            fix="choose a convolutional tap for this backbone.",
        )
    last = int(tap_module.split(".")[1])
    with torch.no_grad():
        feature_map = model.features(torch.zeros(1, 3, train_size, train_size, device=next(model.parameters()).device))
    channels, height, width = feature_map.shape[1:]
    if height != width:
        raise AutoTransferError(f"{backbone.name} gives a non-square {height}x{width} map at {train_size} px.")
    layers: list[nn.Module] = [model.features]
    for layer in list(model.classifier)[: last + 1]:
        if isinstance(layer, nn.Linear):
            first = not any(isinstance(m, nn.Conv2d) for m in layers[1:])
            layers.append(
                first_fc_as_conv(layer, model.avgpool, channels, height) if first else conv_from_linear(layer)
            )
        elif not isinstance(layer, nn.Dropout):  # dropout is the identity at inference
            layers.append(layer)
    return nn.Sequential(*layers)


def conv_trunk(backbone: Backbone, tap: str, train_size: int) -> nn.Module:
    """Normalised images -> the feature map of each part of ``tap``, a list of (B, C_i, h_i, w_i), for
    any input size."""
    parts = backbone.tap_parts(tap)
    if parts[0].stride is None:  # a vector layer is never part of a combination
        return _Listed(_classifier_trunk(backbone, parts[0].module, train_size), parts[0].channels)
    from timm.models import create_feature_extractor

    nodes = {part.module: f"tap{i}" for i, part in enumerate(parts)}
    return _TapOutputs(create_feature_extractor(backbone.model, nodes), [part.channels for part in parts])


class ConvClassifier(nn.Module):
    """Pixels in, class scores out: normalisation, the convolutional trunk, the head as 1x1 convs
    (one per map the trunk gives), and a mean (or max) over the score map.

    ``trunk``: normalised images -> a list of maps, with their ``channels`` (``conv_trunk``). Input:
    NCHW images with values in 0..255 (uint8 or float), of any size the trunk accepts. With ``resize``
    (deploy/graph_resize.py), the graph first resizes them as in training, so an exported model can take
    raw images.
    """

    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Linear,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        reduce: str = "mean",
        resize: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if reduce not in REDUCTIONS:
            raise AutoTransferError(f"Unknown reduction {reduce!r}.", fix=f"use one of {', '.join(REDUCTIONS)}.")
        self.trunk = trunk
        self.heads = nn.ModuleList(conv_from_linear(part) for part in _split_columns(head, trunk.channels))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.reduce = reduce
        self.resize = resize

    def _part_scores(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float()
        if self.resize is not None:
            x = self.resize(x)
        x = (x - self.mean) / self.std
        return [head(part.float()) for head, part in zip(self.heads, self.trunk(x))]

    def score_map(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores at every position of the (finest) tap's map: (B, classes, h, w)."""
        parts = self._part_scores(images)
        size = max((p.shape[-2:] for p in parts), key=lambda hw: hw[0] * hw[1])
        return sum(
            p if p.shape[-2:] == size else nn.functional.interpolate(p, size=size, mode="bilinear") for p in parts
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.reduce == "max":
            return self.score_map(images).amax(dim=(2, 3))
        return sum(part.mean(dim=(2, 3)) for part in self._part_scores(images))  # exact for any map sizes


def _split_columns(head: nn.Linear, widths: list[int]) -> list[nn.Linear]:
    """``head`` (on concatenated pooled features of ``widths`` channels each) as one linear layer per
    part, the bias on the first: their outputs sum to the head's."""
    if sum(widths) != head.in_features:
        raise AutoTransferError(f"A head of {head.in_features} inputs does not read maps of {widths} channels.")
    parts, start = [], 0
    for i, width in enumerate(widths):
        part = nn.Linear(width, head.out_features, bias=True)
        with torch.no_grad():
            part.weight.copy_(head.weight[:, start : start + width])
            part.bias.copy_(head.bias if i == 0 else torch.zeros_like(head.bias))
        parts.append(part)
        start += width
    return parts
