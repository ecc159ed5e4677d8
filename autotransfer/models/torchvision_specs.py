"""The torchvision backbones the zoo supports, described as timm describes its own: taps (after each ReLU,
as the recipe's CNN codes are taken), the depth-group matcher, the classifier cut off and the feature width."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TorchvisionSpec:
    """What timm would tell us about a model, written out for the torchvision models we support."""

    taps: tuple[tuple[str, str, int, int | None], ...]  # name, module, channels, stride
    group_matcher: dict
    classifier: str  # module replaced by Identity to get the CNN codes
    num_features: int


TORCHVISION_SPECS: dict[str, TorchvisionSpec] = {
    # AlexNet: taps after each ReLU (the recipe's CNN codes are fc7 after its ReLU, 4096-d);
    # pool5 is the 6x6x256 map that fc6 reads.
    "alexnet": TorchvisionSpec(
        taps=(
            ("conv1", "features.1", 64, 4),
            ("conv2", "features.4", 192, 8),
            ("conv3", "features.7", 384, 16),
            ("conv4", "features.9", 256, 16),
            ("conv5", "features.11", 256, 16),
            ("pool5", "features.12", 256, 32),
            ("fc6", "classifier.2", 4096, None),
            ("head", "classifier.5", 4096, None),
        ),
        group_matcher={"features": r"^features\.(\d+)", "classifier": r"^classifier\.(\d+)"},
        classifier="classifier.6",
        num_features=4096,
    ),
    "vgg16": TorchvisionSpec(
        taps=(
            ("conv2_2", "features.8", 128, 2),
            ("conv3_3", "features.15", 256, 4),
            ("conv4_3", "features.22", 512, 8),
            ("conv5_3", "features.29", 512, 16),
            ("pool5", "features.30", 512, 32),
            ("fc6", "classifier.1", 4096, None),
            ("head", "classifier.4", 4096, None),
        ),
        group_matcher={"features": r"^features\.(\d+)", "classifier": r"^classifier\.(\d+)"},
        classifier="classifier.6",
        num_features=4096,
    ),
    "resnet18": TorchvisionSpec(
        taps=(
            ("relu", "relu", 64, 2),
            ("layer1", "layer1", 64, 4),
            ("layer2", "layer2", 128, 8),
            ("layer3", "layer3", 256, 16),
            ("head", "layer4", 512, 32),
        ),
        group_matcher={"stem": r"^conv1|^bn1", "blocks": r"^layer(\d+)"},
        classifier="fc",
        num_features=512,
    ),
    "mobilenet_v2": TorchvisionSpec(
        taps=(
            ("features.1", "features.1", 16, 2),
            ("features.3", "features.3", 24, 4),
            ("features.6", "features.6", 32, 8),
            ("features.13", "features.13", 96, 16),
            ("head", "features.18", 1280, 32),
        ),
        group_matcher={"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)"},
        classifier="classifier.1",
        num_features=1280,
    ),
}
