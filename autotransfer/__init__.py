"""autotransfer: find the best way to transfer an ImageNet-pretrained network to your images."""

from ._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before anything can import timm or torchvision

from .errors import AutoTransferError  # noqa: E402
from .zoo import Backbone, create_backbone, known_backbones  # noqa: E402

__all__ = ["AutoTransferError", "Backbone", "create_backbone", "known_backbones"]
__version__ = "0.1.0"
