"""Taps, depth groups and preprocessing, uniformly across model families."""

import pytest
import torch

from autotransfer.errors import AutoTransferError
from autotransfer.models.zoo import classifier_prefixes, create_backbone, describe_known, known_backbones

FAMILIES = ["test_resnet", "test_efficientnet", "test_vit", "test_convnext", "mobilenetv2_100"]


def _tap_outputs(backbone, size):
    outputs = {}
    modules = dict(backbone.model.named_modules())
    hooks = [
        modules[t.module].register_forward_hook(lambda _m, _i, o, n=t.name: outputs.__setitem__(n, o))
        for t in backbone.taps
    ]
    with torch.no_grad():
        pooled = backbone.model(torch.randn(2, 3, size, size))
    for h in hooks:
        h.remove()
    return outputs, pooled


@pytest.mark.parametrize("name", FAMILIES)
def test_taps_match_real_activations(name):
    backbone = create_backbone(name, pretrained=False)
    size = backbone.preprocess.input_size if "vit" in name else 64  # ViTs need their fixed size
    outputs, pooled = _tap_outputs(backbone, size)
    assert [t.name for t in backbone.taps][-1] == "head"
    for tap in backbone.taps:
        out = outputs[tap.name]
        channels = out.shape[-1] if out.ndim == 3 else out.shape[1]  # ViT tokens are (B, N, C)
        assert channels == tap.channels, tap
        if out.ndim == 4 and "vit" not in name:
            assert out.shape[-1] == -(-size // tap.stride), tap  # ceil: padding keeps partial windows
    strides = [t.stride for t in backbone.taps]
    assert strides == sorted(strides), "taps must go from early to late"
    assert pooled.shape == (2, backbone.num_features), "classifier must be removed"


@pytest.mark.parametrize("name", FAMILIES + ["tv:alexnet", "tv:resnet18", "tv:mobilenet_v2"])
def test_depth_groups_partition_the_backbone_in_order(name):
    backbone = create_backbone(name, pretrained=False, keep_classifier=True, device="meta")
    classifier = classifier_prefixes(backbone.model)
    params = [n for n, _ in backbone.model.named_parameters() if not n.startswith(classifier)]
    grouped = [p for g in backbone.depth_groups for p in g.params]
    assert sorted(grouped) == sorted(params)  # every backbone parameter, exactly once, no classifier
    assert [g.index for g in backbone.depth_groups] == list(range(len(backbone.depth_groups)))
    assert len(backbone.depth_groups) >= 4
    first = backbone.depth_groups[0].params[0]
    assert any(k in first for k in ("stem", "conv1", "features.0", "cls_token", "conv_stem")), first


def test_alexnet_taps_are_after_relu_and_fc7_is_the_cnn_code():
    backbone = create_backbone("tv:alexnet", pretrained=False)
    modules = dict(backbone.model.named_modules())
    for tap in backbone.taps:
        if tap.name.startswith(("conv", "fc")) or tap.name == "head":
            assert isinstance(modules[tap.module], torch.nn.ReLU), tap
    assert backbone.tap("head").channels == 4096
    outputs, pooled = _tap_outputs(backbone, 224)
    assert outputs["pool5"].shape[1:] == (256, 6, 6)
    assert pooled.shape == (2, 4096)


def test_preprocess_comes_from_pretrained_cfg():
    lite = create_backbone("tf_efficientnet_lite0", pretrained=False, device="meta")
    assert lite.preprocess.mean == (0.5, 0.5, 0.5) and lite.preprocess.input_size == 224
    lite2 = create_backbone("tf_efficientnet_lite2", pretrained=False, device="meta")
    assert lite2.preprocess.input_size == 260


def test_unknown_model_is_a_clear_error():
    with pytest.raises(AutoTransferError, match="Unknown backbone 'resnet_does_not_exist'"):
        create_backbone("resnet_does_not_exist", pretrained=False)
    with pytest.raises(AutoTransferError, match="Unsupported torchvision backbone"):
        create_backbone("tv:not_a_model", pretrained=False)
    with pytest.raises(AutoTransferError, match="no tap point named 'nope'"):
        create_backbone("test_resnet", pretrained=False).tap("nope")


def test_known_backbones_describe_quickly_without_weights():
    names = known_backbones()
    for required in (
        "mobilenetv2_100",
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
        "tf_efficientnet_lite2",
        "tv:alexnet",
        "tv:resnet18",
        "tv:mobilenet_v2",
    ):
        assert required in names
    row = describe_known("tv:alexnet")
    assert row["taps"][-1] == "head" and row["depth_groups"] == 7 and row["weights_available"] is False


def test_a_combined_tap_is_its_parts_in_the_networks_order():
    backbone = create_backbone("test_efficientnet", pretrained=False, device="meta")
    name = backbone.combined_tap(["head", "blocks.2", "blocks.4", "head"])
    assert name == "blocks.2+blocks.4+head"
    assert [t.module for t in backbone.tap_parts(name)] == ["blocks.2", "blocks.4", "bn2"]
    assert [t.name for t in backbone.tap_parts("head")] == ["head"]
    with pytest.raises(AutoTransferError, match="no tap point named 'blocks.9'"):
        backbone.tap_parts("blocks.2+blocks.9")
    with pytest.raises(AutoTransferError, match="distinct convolutional taps"):
        backbone.tap_parts("head+head")
    alexnet = create_backbone("tv:alexnet", pretrained=False, device="meta")
    with pytest.raises(AutoTransferError, match="distinct convolutional taps"):
        alexnet.tap_parts("pool5+head")  # fc7, a vector layer, has no map to slide over larger images
