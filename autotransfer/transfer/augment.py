"""Per-image training augmentation: one callable ``transform(image) -> image`` on a uint8 CHW tensor,
built from a FinetuneConfig and applied by the trainer to each training image (never to validation).

The contract the data path relies on: the input is one uint8 tensor of shape (3, S, S); the output
is a tensor of the same shape (uint8), so batches stack and normalise as before. Built from
torchvision's ``transforms.v2``, which works on tensors directly (no PIL round trip per image):

- ``RandomResizedCrop`` back to the input size, scale ``(crop_scale, 1)``: the crops of timm's train
  recipes and fastai's ``aug_transforms`` (timm's default scale is (0.08, 1) for ImageNet from scratch;
  fine-tuning on small data keeps more of the object, so the recipe uses 0.35, as fastai's
  ``RandomResizedCrop(min_scale=0.35)``);
- horizontal flips (p = 0.5); vertical flips and rotations by any angle only where the images have no
  canonical orientation (``rotate``: degrees, 0 = none; see ``canonical_orientation``);
- ``RandAugment`` (Cubuk et al., 2020; torchvision's, on uint8 tensors) at magnitude ``randaugment_magnitude``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Transform = Callable[[torch.Tensor], torch.Tensor]

# The mean image of upright photos changes when turned by 90 degrees (sky above, ground below, objects
# upright); that of top-down or microscope images, whose content has no "up", barely does. Below this
# relative difference the sample is taken to have no canonical orientation (rotations are then safe).
ORIENTATION_THRESHOLD = 0.02


def build_transform(
    *, size: int, flip: bool, crop_scale: float | None, rotate: float, randaugment_magnitude: int | None
) -> Transform | None:
    """The training transform for images of ``size`` px, or None when the config asks for no augmentation."""
    if not (flip or crop_scale is not None or rotate or randaugment_magnitude is not None):
        return None  # without importing torchvision's transforms (a Ray worker then never loads them)
    from torchvision.transforms import v2

    steps: list = []
    if crop_scale is not None:
        steps.append(v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if rotate:
        steps += [v2.RandomVerticalFlip(), v2.RandomRotation(rotate)]
    if randaugment_magnitude is not None:
        steps.append(v2.RandAugment(magnitude=randaugment_magnitude))
    return v2.Compose(steps)


def canonical_orientation(images: np.ndarray, threshold: float = ORIENTATION_THRESHOLD, blocks: int = 4) -> bool:
    """Whether a sample of images (N x S x S x C uint8) has an "up": their grey mean, averaged over a
    ``blocks`` x ``blocks`` grid, changes when turned by 90 degrees, by more than ``threshold`` of its
    brightness and by more than three standard errors of the sample mean (so noise in a small sample
    does not count as an orientation).

    A cheap check (one pass over the sample, no model), not a proof: centred objects on a plain background
    (clip art, product shots) also give a nearly rotation-symmetric mean; the search then still tries the
    recipe's rotations against no augmentation and validation decides."""
    side = (min(images.shape[1:3]) // blocks) * blocks if len(images) else 0
    if len(images) < 2 or side == 0:
        return True
    grey = np.asarray(images[:, :side, :side], dtype=np.float32).mean(axis=-1)
    grid = grey.reshape(len(grey), blocks, side // blocks, blocks, side // blocks).mean(axis=(2, 4))
    mean, error = grid.mean(axis=0), grid.std(axis=0) / np.sqrt(len(grid))
    difference = np.abs(mean - np.rot90(mean))
    noise = np.sqrt(error**2 + np.rot90(error) ** 2) + 1e-6
    relative = float(difference.mean() / max(float(mean.mean()), 1.0))
    return relative > threshold and float((difference / noise).mean()) > 3.0
