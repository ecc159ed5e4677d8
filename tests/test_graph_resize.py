"""The exported graph's resize gives the pixels predict's PIL resize gives (deploy/graph_resize.py).

Before, the graph resized the shorter side to a rounded size and sampled the centred square from it: on
the real-cpu suite's full-size clip art an exported ensemble's labels equalled predict's on 204 and 203
of 210 images. PIL resamples the fractional box of the square directly, rounds between its two passes,
and Pillow 13 runs the vertical pass first for tall images."""

import numpy as np
import PIL
import pytest
import torch
from PIL import Image, ImageOps

from autotransfer.data.images import ResizeRecipe, resize
from autotransfer.deploy.graph_resize import GraphResize

# wide, tall (Pillow 13 resizes these vertically first), odd margins, near-square, smaller than the size
SHAPES = [(133, 61), (61, 133), (118, 273), (250, 451), (97, 96), (96, 96), (40, 30), (300, 300), (1001, 640)]


def photo_like(seed: int, width: int, height: int) -> Image.Image:
    """Smooth shading with hard edges: the hard edges are where the two pass orders differ most."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), (x + y) % 256], axis=-1)
    pixels[(x // 7 + y // 5) % 3 == 0] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels.astype(np.uint8))


def graph_pixels(module: torch.nn.Module, image: Image.Image) -> np.ndarray:
    tensor = torch.from_numpy(np.asarray(image).transpose(2, 0, 1)[None].copy()).float()
    return module(tensor)[0].numpy().transpose(1, 2, 0).astype(np.uint8)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [32, 96])
def test_the_graph_crops_and_resizes_to_the_pixels_pil_gives(interpolation, size):
    resize_module = GraphResize(size, crop=True, interpolation=interpolation)
    scripted = torch.jit.script(GraphResize(size, crop=True, interpolation=interpolation))
    for seed, shape in enumerate(SHAPES):
        image = photo_like(seed, *shape)
        expected = np.asarray(resize(image, ResizeRecipe(size, "crop", interpolation)))
        np.testing.assert_array_equal(graph_pixels(resize_module, image), expected, err_msg=str(shape))
        np.testing.assert_array_equal(graph_pixels(scripted, image), expected, err_msg=f"scripted {shape}")


def test_a_squash_below_pils_reducing_gap_gives_pils_pixels():
    module = GraphResize(64, crop=False, interpolation="bicubic")
    for seed, shape in enumerate([(133, 61), (61, 133), (200, 300)]):  # under 6x the size: no block reduction
        image = photo_like(seed, *shape)
        expected = np.asarray(resize(image, ResizeRecipe(64, "squash", "bicubic")))
        np.testing.assert_array_equal(graph_pixels(module, image), expected, err_msg=str(shape))


@pytest.mark.skipif(int(PIL.__version__.split(".")[0]) < 13, reason="Pillow 13 chose the pass order by shape")
def test_tall_images_take_pillows_vertical_pass_first():
    image = photo_like(0, 118, 273)  # the height loses 177 px, the width 22: vertical first in Pillow 13
    expected = np.asarray(ImageOps.fit(image, (96, 96), method=Image.Resampling.BICUBIC))
    module = GraphResize(96, crop=True, interpolation="bicubic")
    np.testing.assert_array_equal(graph_pixels(module, image), expected)
    module.vertical_first_rule = False  # what an older Pillow does: a different image, by rounding
    assert not np.array_equal(graph_pixels(module, image), expected)
