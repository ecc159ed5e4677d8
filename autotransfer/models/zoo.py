"""Backbones: create any timm (or torchvision) model with pretrained weights, and describe it uniformly.

Every backbone exposes the same three things the rest of the engine needs:
- ``taps``: named layers whose activations can serve as features, early to late, with channels and
  stride; the last one is always called ``head`` and is the network's "CNN code" (the
  pre-logits features, after the final activation);
- ``depth_groups``: stem ... last stage, from timm's ``group_matcher`` (torchvision models get an
  equivalent matcher in the same format), used for freeze depth and layer-wise learning rates;
- ``preprocess``: input size, mean, std, interpolation and crop from the weights' pretrained_cfg.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from autotransfer.errors import AutoTransferError
from autotransfer.models import weights as weights_mod
from autotransfer.models.backbone_names import live_names
from autotransfer.models.torchvision_specs import TORCHVISION_SPECS
from autotransfer.models.weights import OFFLINE_ZOO, WeightsSource, weights_available_offline

log = logging.getLogger(__name__)

TORCHVISION_PREFIX = "tv:"


COMBINED_TAP = "+"  # joins the tap names of a combined tap: "blocks.4+blocks.6+head"


@dataclass(frozen=True)
class Tap:
    """A layer whose output can be used as features. ``stride`` is None for vector (FC) layers."""

    name: str
    module: str
    channels: int
    stride: int | None


@dataclass(frozen=True)
class DepthGroup:
    """A block of consecutive layers that is frozen or given a learning rate as a unit."""

    index: int
    name: str
    params: tuple[str, ...]


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for the pretrained weights (from timm's pretrained_cfg)."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float


@dataclass
class Backbone:
    """A pretrained network with its classifier removed (unless kept), plus its uniform description."""

    name: str
    source: str  # "timm" or "torchvision"
    model: nn.Module
    taps: list[Tap]
    depth_groups: list[DepthGroup]
    preprocess: Preprocess
    num_features: int
    weights: WeightsSource | None

    def tap(self, name: str) -> Tap:
        for tap in self.taps:
            if tap.name == name:
                return tap
        raise AutoTransferError(
            f"{self.name} has no tap point named {name!r}.",
            where=f"the taps of {self.name} (`autotransfer zoo show {self.name}` lists them)",
            fix=f"use one of: {', '.join(t.name for t in self.taps)}.",
        )

    def tap_parts(self, name: str) -> list[Tap]:
        """The taps of ``name``: one, or several for a combined tap ``"a+b"`` (their pooled features
        concatenated, shallowest first: multi-layer features, Evci et al., *Head2Toe*, ICML 2022).

        Raises AutoTransferError for an unknown part, a repeated part, or a vector (FC) layer in a
        combination (its output has no map to slide over images of any size)."""
        parts = [self.tap(part) for part in name.split(COMBINED_TAP)]
        if len(parts) > 1 and (any(p.stride is None for p in parts) or len({p.name for p in parts}) < len(parts)):
            raise AutoTransferError(
                f"{name!r} is not a combination of distinct convolutional taps of {self.name}.",
                where=f"the tap {name!r}",
                fix="combine taps with a spatial map, each once, as 'a+b'.",
            )
        return parts

    def combined_tap(self, names: list[str]) -> str:
        """The combined tap of ``names``, in the network's order (see ``tap_parts``)."""
        order = [t.name for t in self.taps]
        return COMBINED_TAP.join(sorted(set(names), key=order.index))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "num_features": self.num_features,
            "weights": self.weights.describe() if self.weights else "random init",
            "preprocess": asdict(self.preprocess),
            "taps": [asdict(t) for t in self.taps],
            "depth_groups": [{"index": g.index, "name": g.name, "n_params": len(g.params)} for g in self.depth_groups],
        }


# Shown by `autotransfer zoo list` besides the offline zoo: popular timm backbones (hub weights).
_POPULAR_TIMM = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "vit_small_patch16_224",
)


def known_backbones() -> list[str]:
    offline = [n for n in OFFLINE_ZOO if not n.startswith(TORCHVISION_PREFIX)]
    return offline + [f"{TORCHVISION_PREFIX}{n}" for n in TORCHVISION_SPECS] + list(_POPULAR_TIMM)


def _import_timm():
    from autotransfer._torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import timm

    return timm


def _torchvision_models():
    from autotransfer._torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torchvision.models

    return torchvision.models


def _group_name(params: list[str]) -> str:
    """A readable name for a depth group: 'blocks.3', 'layer2', or 'conv_stem+bn1'."""
    prefixes = []
    for param in params:
        parts = param.split(".")
        prefix = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        if prefix not in prefixes:
            prefixes.append(prefix)
    return "+".join(prefixes[:3]) + ("+..." if len(prefixes) > 3 else "")


def _depth_groups(model: nn.Module, matcher: dict, classifier_prefixes: tuple[str, ...]) -> list[DepthGroup]:
    from timm.models import group_parameters

    def is_classifier(param: str) -> bool:
        return any(param == p or param.startswith(p + ".") for p in classifier_prefixes)

    grouped = group_parameters(model, matcher)
    groups = []
    for params in grouped.values():
        kept = [p for p in params if not is_classifier(p)]
        if kept:
            groups.append(DepthGroup(len(groups), _group_name(kept), tuple(kept)))
    return groups


def _find_output_module(model: nn.Module, run: callable) -> str:
    """Name of the deepest module whose output *is* the tensor ``run(model)`` returns."""
    outputs: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, id(out)))
        for name, m in model.named_modules()
        if name
    ]
    try:
        result = run(model)
    finally:
        for hook in hooks:
            hook.remove()
    matches = [name for name, ident in outputs.items() if ident == id(result)]
    return matches[-1] if matches else ""


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module names of the ImageNet classifier, which a new task replaces."""
    spec = TORCHVISION_SPECS.get(getattr(model, "_autotransfer_arch", ""))
    if spec is not None:
        return (spec.classifier,)
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "classifier"
    return tuple(classifier) if isinstance(classifier, (list, tuple)) else (classifier,)


def _timm_description(model: nn.Module) -> tuple[list[Tap], list[DepthGroup], Preprocess, int]:
    timm = _import_timm()
    cfg = timm.data.resolve_model_data_config(model)
    preprocess = Preprocess(
        int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"], float(cfg["crop_pct"])
    )
    taps = [
        Tap(info["module"], info["module"], int(info["num_chs"]), int(info["reduction"])) for info in model.feature_info
    ]
    size = preprocess.input_size
    device = next(model.parameters()).device
    probe = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad():
        head_module = _find_output_module(model, lambda m: m.forward_features(probe))
    last_reduction = taps[-1].stride if taps else None
    if taps and taps[-1].module == head_module:
        taps[-1] = Tap("head", head_module, taps[-1].channels, last_reduction)
    else:
        taps.append(Tap("head", head_module, int(model.num_features), last_reduction))
    groups = _depth_groups(model, model.group_matcher(coarse=True), classifier_prefixes(model))
    return taps, groups, preprocess, int(model.num_features)


def _create_timm(name: str, device: torch.device | str) -> nn.Module:
    if ":" in name:  # timm's hf-hub: and local-dir: schemes read configs and files from elsewhere
        raise AutoTransferError(
            f"Backbone {name!r}: only registered architecture names are accepted.",
            where=f"the backbone name {name!r} (a ':' names a hub or a folder, which are not read)",
            fix="use a timm architecture name and give weights with --weights or AUTOTRANSFER_WEIGHTS.",
        )
    timm = _import_timm()
    try:
        with torch.device(device):
            return timm.create_model(name, pretrained=False)
    except RuntimeError as error:
        if "Unknown model" not in str(error):
            raise
        raise unknown_backbone_error(name) from error


def _create_torchvision(arch: str, device: torch.device | str) -> nn.Module:
    if arch not in TORCHVISION_SPECS:
        raise unknown_backbone_error(TORCHVISION_PREFIX + arch)
    with torch.device(device):
        model = _torchvision_models().get_model(arch, weights=None)
    model._autotransfer_arch = arch  # lets classifier_prefixes find the spec
    return model


def _torchvision_description(arch: str, model: nn.Module) -> tuple[list[Tap], list[DepthGroup], Preprocess, int]:
    spec = TORCHVISION_SPECS[arch]
    taps = [Tap(*t) for t in spec.taps]
    groups = _depth_groups(model, spec.group_matcher, classifier_prefixes(model))
    # torchvision's IMAGENET1K_V1 recipe: resize 256, centre crop 224, bilinear.
    preprocess = Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 0.875)
    return taps, groups, preprocess, spec.num_features


def _load_pretrained(name: str, model: nn.Module, explicit: str | Path | None) -> WeightsSource:
    source, looked = weights_mod.find_local_weights(name, explicit)
    if source is not None and source.kind == "offline_zoo":
        path = weights_mod.fetch_offline(name, model)
        source = WeightsSource("offline_zoo", path)
    if source is not None:
        state = weights_mod.read_state_dict(source.path)
        classifier_loaded = _load_state(model, state, name, source)
        return WeightsSource(source.kind, source.path, imagenet_classifier=classifier_loaded)
    if weights_mod.hub_reachable():
        try:
            _load_from_hub(name, model)
            return WeightsSource("hub")
        except Exception as error:  # the hub raises many types (HTTP, missing file, no weights tag)
            looked.append(f"the hub ({type(error).__name__}: {str(error)[:200]})")
    else:
        looked.append(weights_mod.HUB_UNREACHABLE)
    raise weights_mod.no_weights_error(name, looked)


def _load_from_hub(name: str, model: nn.Module) -> None:
    if name.startswith(TORCHVISION_PREFIX):
        arch = name.removeprefix(TORCHVISION_PREFIX)
        state = _torchvision_models().get_model_weights(arch).DEFAULT.get_state_dict(progress=False)
        model.load_state_dict(state)
    else:
        timm = _import_timm()
        loaded = timm.create_model(name, pretrained=True)
        model.load_state_dict(loaded.state_dict())


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], name: str, source: WeightsSource) -> bool:
    """Load strictly, except that a classifier of another size (a fine-tuned file) is left out.

    Returns whether the ImageNet classifier itself was loaded.
    """
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    prefixes = classifier_prefixes(model)
    classifier_only = all(k.startswith(prefixes) for k in mismatched + missing + unexpected)
    if (mismatched or missing or unexpected) and not classifier_only:
        raise AutoTransferError(
            f"The weights do not fit {name}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(mismatched)} of another shape (e.g. {(missing + unexpected + mismatched)[:3]}).",
            where=source.describe(),
            fix="give weights saved from the same architecture.",
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in mismatched}, strict=False)
    return not (mismatched or missing)


def similar_backbone_names(name: str, n: int = 5) -> list[str]:
    """The nearest known names to ``name`` (models/backbone_names.py, from timm's live list)."""
    return live_names().similar(name, n)


def unknown_backbone_error(name: str, where: str | None = None) -> AutoTransferError:
    """The message for a backbone name nobody knows: the nearest names, and where the name came from."""
    return live_names().unknown_error(name, where)


def create_backbone(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    keep_classifier: bool = False,
    device: torch.device | str = "cpu",
) -> Backbone:
    """Create ``name`` (timm name, or ``tv:<arch>``) with weights resolved in the documented order.

    ``pretrained=False`` gives random weights and says so in ``Backbone.weights`` (None). With
    ``device="meta"`` nothing is allocated: useful to describe a model quickly.
    """
    is_tv = name.startswith(TORCHVISION_PREFIX)
    arch = name.removeprefix(TORCHVISION_PREFIX)
    model = _create_torchvision(arch, device) if is_tv else _create_timm(name, device)
    source = _load_pretrained(name, model, weights) if pretrained else None
    model.eval()
    taps, groups, preprocess, num_features = (
        _torchvision_description(arch, model) if is_tv else _timm_description(model)
    )
    overrides = OFFLINE_ZOO[name].pretrained_cfg if source and source.kind == "offline_zoo" else {}
    if overrides:
        preprocess = Preprocess(**{**asdict(preprocess), **overrides})
    if not keep_classifier:
        if is_tv:
            model.set_submodule(TORCHVISION_SPECS[arch].classifier, nn.Identity())
        else:
            model.reset_classifier(0)
    return Backbone(name, "torchvision" if is_tv else "timm", model, taps, groups, preprocess, num_features, source)


def describe_known(name: str) -> dict:
    """One row of `autotransfer zoo list`, built on the meta device (no memory, no weights)."""
    backbone = create_backbone(name, pretrained=False, device="meta")
    source = (
        "offline zoo"
        if name in OFFLINE_ZOO
        else "torchvision hub"
        if name.startswith(TORCHVISION_PREFIX)
        else "timm hub"
    )
    return {
        "name": name,
        "source": source,
        "weights_available": weights_available_offline(name),
        "native_resolution": backbone.preprocess.input_size,
        "taps": [t.name for t in backbone.taps],
        "depth_groups": len(backbone.depth_groups),
        "num_features": backbone.num_features,
    }
