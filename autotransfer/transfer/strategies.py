"""The recipe's strategies, defined once: every other module (search space, trials, trainer, profiler,
bench, report) reads this table and compares no strategy string of its own.

The strategies and the matrix are the CS231n transfer-learning notes' ("Transfer Learning", the
small/large x similar/different table), plus LP-FT (Kumar et al., 2022: "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution"), linear probe first, then fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autotransfer.errors import AutoTransferError

Stage = Literal["probe", "finetune"]
Freezes = Literal["all", "lower", "none"]


@dataclass(frozen=True)
class Strategy:
    """One way of transferring a pretrained backbone.

    Attributes
    ----------
    name : the name in search spaces, trials, ``pipeline.json`` and bench results.
    stage : ``probe`` (features computed once, a linear head fit on them) or ``finetune`` (trained by SGD).
    freezes : which depth groups stay frozen: ``all`` of them, the ``lower`` ``freeze_groups`` ones, or ``none``.
    tunes_backbone_lr : whether the pretrained layers' LR ratio and layer decay are searched (otherwise
        the backbone trains at the head's LR, or not at all).
    starts_from_probe : the head is initialised from a linear probe on the frozen features (LP-FT).
    text : what it does, in words, for people.
    """

    name: str
    stage: Stage
    freezes: Freezes
    tunes_backbone_lr: bool
    starts_from_probe: bool
    text: str

    @property
    def trains_backbone(self) -> bool:
        return self.freezes != "all"

    def frozen_groups(self, n_groups: int, freeze_groups: int) -> int:
        """How many of ``n_groups`` depth groups (lowest first) stay frozen for ``freeze_groups`` asked."""
        return {"all": n_groups, "none": 0, "lower": freeze_groups}[self.freezes]


# fmt: off
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("linear_probe", "probe", "all", False, False,
                 "CNN codes (top features) + linear classifier (softmax or SVM)"),
        Strategy("mid_layer_probe", "probe", "all", False, False,
                 "mid-layer features + linear classifier (top layers are too ImageNet-specific)"),
        Strategy("lp_ft", "finetune", "lower", True, True,
                 "linear probe first, then fine-tune the top layers from it (LP-FT)"),
        Strategy("finetune_top", "finetune", "lower", True, False,
                 "fine-tune the top layers, keep the lower ones frozen"),
        Strategy("finetune_all", "finetune", "none", True, False,
                 "fine-tune the whole network with a small learning rate on pretrained layers"),
        Strategy("train_all", "finetune", "none", False, False,
                 "initialise from pretrained weights and train (almost) all layers with a larger learning rate"),
    )
}
# fmt: on
PROBE_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.stage == "probe")
FINETUNE_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.stage == "finetune")
PROBE_HEADS = ("softmax", "svm", "torch")  # transfer/probes.py's make_head; named here, where no sklearn is imported

# The recipe's matrix: where each quadrant starts, best first (docs/profiler.md).
QUADRANT_STRATEGIES: dict[str, tuple[str, ...]] = {
    "small-similar": ("linear_probe", "finetune_top", "mid_layer_probe"),
    "large-similar": ("finetune_all", "finetune_top", "linear_probe"),
    "small-different": ("mid_layer_probe", "linear_probe", "finetune_top"),
    "large-different": ("train_all", "finetune_all", "mid_layer_probe"),
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; raises AutoTransferError naming the known ones otherwise."""
    if name not in STRATEGIES:
        raise AutoTransferError(f"Unknown strategy {name!r}.", fix=f"use one of {', '.join(STRATEGIES)}.")
    return STRATEGIES[name]


def probe_strategy(tap: str) -> str:
    """The probe strategy of a head on ``tap``: the CNN codes (``head``) or a mid-layer tap."""
    return "linear_probe" if tap == "head" else "mid_layer_probe"
