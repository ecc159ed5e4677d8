"""The training resize as a graph module, so an exported model takes raw images of any size.

``predict`` resizes with PIL: a pipeline trained on centre crops sees ``ImageOps.fit`` (the centred
square of the image, as a box of source coordinates, resampled to the training size in one call); one
trained on squashed images sees the whole image resized to a square. ``GraphResize`` computes what
Pillow's ``Image.resize`` computes (src/libImaging/Resample.c, Pillow 13): per axis, a filter window
over the source pixels around each output pixel's centre in the box, its weights normalised and held
as 22-bit fixed point, and two passes, each rounded to whole 8-bit levels; the vertical pass first when
the height shrinks by more than twice as many pixels as the width (Pillow >= 13; earlier versions
always ran the horizontal pass first). A pass is a product with a dense (output x input) weight
matrix, built from the image's size inside the graph, so both exporters keep the size dynamic.
Written here because neither torchvision's transforms nor ``F.interpolate`` take PIL's box (a
fractional source window) or round between the passes, and a centre crop by slicing is refused by
``torch.export`` with dynamic sizes.
"""

from __future__ import annotations

import PIL
import torch
from torch import nn

from autotransfer.errors import AutoTransferError

# Literals below, not module constants: TorchScript does not read a module's global floats.


def _filter(x: torch.Tensor, bicubic: bool) -> torch.Tensor:
    """Resample.c's filters: bicubic_filter (Keys' cubic convolution, a = -0.5, support 2) and
    bilinear_filter (the triangle, support 1)."""
    x = x.abs()
    if bicubic:
        near = (1.5 * x - 2.5) * x * x + 1.0  # ((a + 2) x - (a + 3)) x^2 + 1
        far = (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5  # (((x - 5) x + 8) x - 4) a
        return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))
    return torch.clamp(1.0 - x, min=0.0)


def resample_weights(n_in: int, start: torch.Tensor, length: torch.Tensor, n_out: int, bicubic: bool) -> torch.Tensor:
    """(n_out, n_in) weights of one axis: output pixel ``i`` is the weighted sum of the source pixels
    under the filter centred at ``start + (i + 0.5) * length / n_out`` (``start``, ``length``: the box
    along this axis, in source pixels, 0-d tensors), as Resample.c's ``precompute_coeffs`` and
    ``normalize_coeffs_8bpc``: the filter widened by the scale when shrinking, the window of source
    pixels rounded as there, rows normalised to sum 1, then rounded to 22-bit fixed point (8-bit images:
    32 bits less 8 for the pixel and 2 for overflow)."""
    support = 2.0 if bicubic else 1.0
    scale = length / n_out
    filterscale = torch.clamp(scale, min=1.0)
    reach = support * filterscale
    centres = start + (torch.arange(n_out, dtype=torch.float64, device=start.device) + 0.5) * scale
    index = torch.arange(n_in, dtype=torch.float64, device=start.device)
    first = torch.clamp(torch.trunc(centres - reach + 0.5), min=0.0)
    last = torch.trunc(centres + reach + 0.5)  # exclusive; the image's edge ends it too
    inside = (index[None, :] >= first[:, None]) & (index[None, :] < last[:, None])
    weights = _filter((index[None, :] - centres[:, None] + 0.5) / filterscale, bicubic) * inside
    weights = weights / weights.sum(dim=1, keepdim=True)
    unit = 4194304.0  # 2 ** 22
    return torch.trunc(weights * unit + 0.5 * torch.sign(weights)) / unit


def _level(pixels: torch.Tensor) -> torch.Tensor:
    """A pass's 8-bit result: rounded half up and clipped, as Resample.c's ``clip8``."""
    return torch.floor(pixels + 0.5).clamp(0.0, 255.0)


class GraphResize(nn.Module):
    """(N, 3, H, W) float pixels 0..255 of any H, W -> (N, 3, size, size) whole levels 0..255, as the
    training resize: ``crop``, the centred square of side min(H, W) (``ImageOps.fit``, ``resize_mode``
    "crop"); otherwise the whole image ("squash"). ``interpolation``: the recipe's, "bilinear" or
    "bicubic" (others fall back to bilinear, said in ``describe``), antialiased as PIL's.

    Measured against ``ImageOps.fit`` on full-size clip art (the real-cpu suite's 210 test images,
    ``python -m benchmarks.export_agreement``): see docs/pipeline.md. A squash of an image more than six
    times the size differs more: PIL's ``reducing_gap`` first averages blocks of pixels there.
    """

    def __init__(self, size: int, crop: bool, interpolation: str = "bilinear") -> None:
        super().__init__()
        if size < 1:
            raise AutoTransferError(f"A resize to {size} px is not possible.")
        self.size = size
        self.crop = crop
        self.bicubic = interpolation == "bicubic"
        # the pass order of the Pillow that predict uses here, where the graph is made
        self.vertical_first_rule = int(PIL.__version__.split(".")[0]) >= 13

    def describe(self) -> str:
        how = f"{'bicubic' if self.bicubic else 'bilinear'}, antialiased, as PIL's resize"
        if self.crop:
            return f"the centred square of the image resized to {self.size}x{self.size} px ({how})"
        return f"the whole image resized to {self.size}x{self.size} ({how})"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        # already the size: PIL returns a copy (predict's pixels, decoded at an ensemble's shared size). Not
        # while torch.export traces: a branch on the image's size would fix it at the example's
        eager = torch.jit.is_scripting() or not torch.compiler.is_compiling()
        if eager and height == self.size and width == self.size:
            return images.to(torch.float32)
        one = torch.ones((), dtype=torch.float64, device=images.device)
        h, w = one * height, one * width
        box_h, box_w = h, w
        if self.crop:
            box_h = box_w = torch.minimum(h, w)
        top, left = (h - box_h) * 0.5, (w - box_w) * 0.5
        rows = resample_weights(height, top, box_h, self.size, self.bicubic)  # (size, H)
        cols = resample_weights(width, left, box_w, self.size, self.bicubic).T.contiguous()  # (W, size)
        pixels = images.to(torch.float64)  # float32 sums flip a level at .5 now and then: PIL's are exact
        if not self.vertical_first_rule:
            return _horizontal_first(pixels, rows, cols).to(torch.float32)
        # Pillow >= 13 (Resample.c): the vertical pass first when the height loses more than twice the
        # pixels the width does; the two orders differ by the rounding between the passes
        if torch.jit.is_scripting():
            if height - self.size > 0 and height - self.size > 2 * (width - self.size):
                return _vertical_first(pixels, rows, cols).to(torch.float32)
            return _horizontal_first(pixels, rows, cols).to(torch.float32)
        # torch.export would fix a Python branch at the example's size: torch.cond keeps both (ONNX: If)
        shrink_h, shrink_w = h - self.size, w - self.size
        vertical = (shrink_h > 0) & (shrink_h > shrink_w * 2)
        return torch.cond(vertical, _vertical_first, _horizontal_first, (pixels, rows, cols)).to(torch.float32)


def _horizontal_first(pixels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Resample.c's order: (N, 3, H, W) -> (N, 3, H, size) -> (N, 3, size, size); ``cols``: (W, size)."""
    return _level(rows @ _level(pixels @ cols))


def _vertical_first(pixels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Pillow 13's order for tall images: (N, 3, H, W) -> (N, 3, size, W) -> (N, 3, size, size)."""
    return _level(_level(rows @ pixels) @ cols)
