"""The training resize as a graph module, so an exported model takes raw images of any size.

``predict`` resizes with PIL: a pipeline trained on centre crops sees ``ImageOps.fit`` (the shorter
side scaled to the training size, the centred square kept); one trained on squashed images sees the
whole image resized to a square. ``GraphResize`` does the same with torch ops that both exporters
keep dynamic in the image size: ``torch.export`` (ONNX) refuses the data-dependent slicing a plain
centre crop needs, so the square is sampled by an affine grid at scale 1 (``grid_sample``), which lands
on the resized image's pixel centres. Written here because neither torchvision's transforms (not
exportable with symbolic sizes) nor timm's fit this.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from autotransfer.errors import AutoTransferError

MODES = {"bilinear": "bilinear", "bicubic": "bicubic"}  # PIL's name -> torch's; both antialiased in the graph


class GraphResize(nn.Module):
    """(N, 3, H, W) float pixels of any H, W -> (N, 3, size, size), as the training resize.

    ``crop``: the shorter side to ``size`` (rounded), then the centred ``size`` x ``size`` square
    (``resize_mode`` "crop"); otherwise the whole image squashed to the square ("squash").
    ``interpolation``: the recipe's, "bilinear" or "bicubic" (others fall back to bilinear, said in
    ``describe``); antialiased, as PIL's resize. Input and output are pixel values in 0..255; the output
    is rounded to whole levels, as PIL's uint8 result is (on full-size clip art that rounding took the
    exported labels from 200 to 205 of 210 equal to predict's).
    """

    def __init__(self, size: int, crop: bool, interpolation: str = "bilinear") -> None:
        super().__init__()
        if size < 1:
            raise AutoTransferError(f"A resize to {size} px is not possible.")
        self.size = size
        self.crop = crop
        self.mode = MODES.get(interpolation, "bilinear")

    def describe(self) -> str:
        how = f"{self.mode}, antialiased"
        if self.crop:
            return (
                f"the shorter side resized to {self.size} px ({how}), then the centred {self.size}x{self.size} square"
            )
        return f"the whole image resized to {self.size}x{self.size} ({how})"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.crop:
            squashed = F.interpolate(images, size=(self.size, self.size), mode=self.mode, align_corners=False,
                                     antialias=True)  # fmt: skip
            return squashed.round().clamp(0, 255)
        height, width = images.shape[-2], images.shape[-1]
        side = min(height, width) if torch.jit.is_scripting() else torch.sym_min(height, width)
        new_height = (height * self.size + side // 2) // side
        new_width = (width * self.size + side // 2) // side
        resized = F.interpolate(images, size=(new_height, new_width), mode=self.mode, align_corners=False,
                                antialias=True)  # fmt: skip
        theta = torch.zeros(images.shape[0], 2, 3, dtype=resized.dtype, device=resized.device)
        theta[:, 0, 0] = self.size / new_width
        theta[:, 1, 1] = self.size / new_height
        grid = F.affine_grid(theta, [images.shape[0], images.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(resized, grid, mode="bilinear", align_corners=False).round().clamp(0, 255)
