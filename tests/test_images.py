"""Every kind of image file a user may have decodes to RGB uint8, or is refused with a reason."""

import io

import numpy as np
import pytest
from conftest import colour_image
from PIL import Image

from autotransfer.data.images import DecodedImage, ResizeRecipe, decode, decode_file

RECIPE = ResizeRecipe(32)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _ok(data: bytes) -> DecodedImage:
    result = decode(data, RECIPE)
    assert isinstance(result, DecodedImage), result
    assert result.pixels.shape == (32, 32, 3) and result.pixels.dtype == np.uint8
    return result


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM"])
def test_common_formats(fmt):
    _ok(_encode(colour_image(1), fmt))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1", "I", "F"])
def test_modes(mode):
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    result = _ok(_encode(colour_image(2, mode=mode), fmt))
    assert result.mode == mode or mode in ("I", "F")


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    result = _ok(_encode(Image.fromarray(ramp), "PNG"))  # uint16 array: mode I;16
    assert result.pixels.min() < 20 and result.pixels.max() > 235  # full range kept


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    assert (_ok(_encode(clear, "PNG")).pixels == 255).all()
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0] * 256)
    assert (_ok(_encode(palette, "GIF", transparency=0)).pixels == 255).all()


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    pixels = _ok(data).pixels
    assert pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 50


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    result = _ok(_encode(image, "JPEG", exif=exif.tobytes()))
    assert (result.width, result.height) == (20, 40)
    pixels = ResizeRecipe(32, "squash")
    upright = decode(_encode(image, "JPEG", exif=exif.tobytes()), pixels).pixels
    assert upright[:8].mean() > 200 and upright[-8:].mean() < 50  # white half is now on top


@pytest.mark.parametrize("size", [(1, 1), (20000, 50), (50, 20000)])
def test_extreme_sizes(size):
    result = _ok(_encode(Image.new("RGB", size, (10, 200, 30)), "PNG"))
    assert (result.width, result.height) == size


def test_wrong_extension_still_decodes(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(_encode(colour_image(3), "PNG"))
    assert isinstance(decode_file(path, RECIPE), DecodedImage)


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setenv("AUTOTRANSFER_MAX_IMAGE_PIXELS", "1000")
    result = decode(_encode(Image.new("RGB", (100, 100)), "PNG"), RECIPE)
    assert isinstance(result, str) and "too large" in result and "AUTOTRANSFER_MAX_IMAGE_PIXELS" in result


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"hello, I am a text file", "not an image"),
        (_encode(colour_image(4, (200, 200)), "JPEG")[:300], "corrupt or truncated"),
        (_encode(colour_image(5, (200, 200)), "PNG")[:200], "corrupt or truncated"),
    ],
)
def test_bad_data_gives_a_reason_not_an_exception(data, reason):
    result = decode(data, RECIPE)
    assert isinstance(result, str) and result.startswith(reason), result


def test_unreadable_and_missing_files(tmp_path, monkeypatch):
    assert decode_file(tmp_path / "missing.png", RECIPE).startswith("unreadable")
    path = tmp_path / "locked.png"
    path.write_bytes(_encode(colour_image(6), "PNG"))

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", deny)  # root can read anything, so simulate it
    assert decode_file(path, RECIPE) == "unreadable (permission denied)"


def test_same_bytes_same_hash_and_resize_modes_differ():
    data = _encode(colour_image(7, (60, 20)), "PNG")
    assert _ok(data).content_hash == _ok(data).content_hash
    crop = decode(data, ResizeRecipe(16, "crop")).pixels
    squash = decode(data, ResizeRecipe(16, "squash")).pixels
    assert crop.shape == squash.shape and not np.array_equal(crop, squash)
