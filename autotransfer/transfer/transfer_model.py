"""The transfer model (a backbone cut at a tap + a new linear head) and its depth groups: which are frozen,
and the learning rate of each trainable one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from autotransfer.models.features import outputs_until, pool
from autotransfer.models.zoo import Backbone
from autotransfer.transfer.probes import as_linear
from autotransfer.transfer.strategies import get_strategy

if TYPE_CHECKING:
    from autotransfer.transfer.finetune import FinetuneConfig


class TransferModel(nn.Module):
    """Backbone cut at ``tap`` + global average pooling + a new linear head.

    A combined tap (``"a+b"``, ``Backbone.tap_parts``): the head reads the parts' pooled features
    concatenated, (B, C_a + C_b), from one forward pass that stops after the deepest part."""

    def __init__(self, backbone: Backbone, tap: str, n_classes: int) -> None:
        super().__init__()
        parts = backbone.tap_parts(tap)
        self.backbone = backbone.model
        self.tap = tap
        self.tap_modules = [part.module for part in parts]
        self.head = nn.Linear(sum(part.channels for part in parts), n_classes)
        self.frozen_modules: list[nn.Module] = []

    def set_linear_head(self, fitted) -> TransferModel:
        """Make the head a fitted probe (scikit-learn or torch), its standardisation folded in."""
        weight, bias = as_linear(fitted, self.head.out_features)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = outputs_until(self.backbone, x, self.tap_modules)
        return self.head(torch.cat([pool(outputs[m], "avg").float() for m in self.tap_modules], dim=1))

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        for module in self.frozen_modules:  # frozen groups keep ImageNet BN statistics, no dropout
            module.eval()
        return self


def _group_modules(backbone: Backbone, groups: range) -> list[nn.Module]:
    """The modules owning the parameters of ``groups`` (for eval mode of frozen layers)."""
    names = {p.rsplit(".", 1)[0] for g in groups for p in backbone.depth_groups[g].params}
    return [m for n, m in backbone.model.named_modules() if n in names]


def param_groups(
    model: TransferModel, backbone: Backbone, config: FinetuneConfig
) -> tuple[list[dict], dict[str, float]]:
    """Optimizer groups with explicit learning rates (timm's schedulers scale each group's own lr)."""
    params = dict(model.backbone.named_parameters())
    n = len(backbone.depth_groups)
    groups, lrs = [], {}
    if get_strategy(config.strategy).trains_backbone:
        for group in backbone.depth_groups[config.frozen_groups(n) :]:
            lr = config.head_lr * config.backbone_lr_ratio * config.layer_decay ** (n - 1 - group.index)
            tensors = [params[p] for p in group.params if params[p].requires_grad]
            decay = [t for t in tensors if t.ndim > 1]
            no_decay = [t for t in tensors if t.ndim <= 1]  # biases and norms are not decayed
            groups += [{"params": decay, "lr": lr}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
            lrs[f"{group.index}:{group.name}"] = lr
    groups += [
        {"params": [model.head.weight], "lr": config.head_lr},
        {"params": [model.head.bias], "lr": config.head_lr, "weight_decay": 0.0},
    ]
    lrs["head"] = config.head_lr
    return [g for g in groups if g["params"]], lrs


def freeze(model: TransferModel, backbone: Backbone, config: FinetuneConfig) -> None:
    """No gradient for the frozen groups' parameters; their modules stay in eval mode unless
    ``config.train_bn_stats`` lets their BatchNorm statistics adapt."""
    frozen = range(config.frozen_groups(len(backbone.depth_groups)))
    for param in model.backbone.parameters():
        param.requires_grad = True
    for g in frozen:
        for name in backbone.depth_groups[g].params:
            model.backbone.get_parameter(name).requires_grad = False
    model.frozen_modules = [] if config.train_bn_stats else _group_modules(backbone, frozen)
