"""Decode any image a user may have into an RGB uint8 array of a fixed size, or say why not.

Handles JPEG/PNG/WebP/BMP/GIF/TIFF, grayscale, palette (with transparency), RGBA, CMYK, 16-bit,
EXIF rotation, animated files (first frame), 1x1 pixels and extreme aspect ratios, and refuses
decompression bombs. Failures come back as a short reason string, never as an exception, so that a
folder of mixed files can be decoded in one pass and the bad ones listed afterwards.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from autotransfer.settings import MAX_PIXELS_ENV

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
_DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own guard (about 9.5k x 9.5k): larger files are skipped

_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class ResizeRecipe:
    """How every image is brought to ``size`` x ``size``: centre crop of the shorter side, or squash."""

    size: int
    mode: str = "crop"  # "crop" keeps aspect ratio and crops the centre; "squash" stretches
    interpolation: str = "bicubic"

    def key(self) -> str:
        return f"{self.size}px-{self.mode}-{self.interpolation}"


@dataclass(frozen=True)
class DecodedImage:
    """The pixels plus what the profiler needs to know about the original file."""

    pixels: np.ndarray  # (size, size, 3) uint8
    content_hash: str
    width: int
    height: int
    mode: str  # PIL mode of the file: "L", "RGB", "P", "CMYK", "I;16", ...


def max_image_pixels() -> int:
    return int(os.environ.get(MAX_PIXELS_ENV, _DEFAULT_MAX_PIXELS))


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any PIL mode: alpha composited on white, 16-bit scaled down, palette expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image if image.mode == "RGB" else image.convert("RGB")


def resize(image: Image.Image, recipe: ResizeRecipe) -> Image.Image:
    method = _RESAMPLING[recipe.interpolation]
    target = (recipe.size, recipe.size)
    if recipe.mode == "squash":
        return image.resize(target, method, reducing_gap=3.0)
    return ImageOps.fit(image, target, method=method, centering=(0.5, 0.5))


@dataclass(frozen=True)
class OpenedImage:
    """An upright RGB image and what the file said about itself."""

    image: Image.Image
    width: int  # upright size of the file (before any draft reduction)
    height: int
    mode: str


def open_rgb(data: bytes, draft_to: int | None = None) -> OpenedImage | str:
    """Open encoded bytes as an upright RGB image (first frame), or return why not.

    ``draft_to`` lets JPEGs decode at a reduced scale when they are more than twice that size.
    """
    if not data:
        return "empty file (0 bytes)"
    from io import BytesIO

    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as image:
                width, height, mode = image.width, image.height, image.mode
                if width * height > limit:
                    return f"too large ({width}x{height} pixels > {limit}; set {MAX_PIXELS_ENV} to allow)"
                if draft_to and image.format == "JPEG" and min(width, height) > 2 * draft_to:
                    image.draft("RGB", (2 * draft_to, 2 * draft_to))  # decode at reduced scale: faster
                image.seek(0)  # animated GIF/WebP/TIFF: the first frame
                before = image.size
                image = ImageOps.exif_transpose(image)
                if image.size != before:  # rotated by 90 degrees: report the upright size
                    width, height = height, width
                rgb = to_rgb(image)
                rgb.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"too large (decompression bomb guard, > {limit} pixels; set {MAX_PIXELS_ENV} to allow)"
    except UnidentifiedImageError:
        return "not an image (unrecognised format)"
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated or corrupt data
        return f"corrupt or truncated image ({type(error).__name__}: {str(error)[:120]})"
    return OpenedImage(rgb, width, height, mode)


def decode(data: bytes, recipe: ResizeRecipe) -> DecodedImage | str:
    """Decode encoded image bytes; return the image, or a reason string if it cannot be used."""
    opened = open_rgb(data, draft_to=recipe.size)
    if isinstance(opened, str):
        return opened
    try:
        pixels = np.asarray(resize(opened.image, recipe), dtype=np.uint8)
    except (OSError, ValueError) as error:
        return f"corrupt or truncated image ({type(error).__name__}: {str(error)[:120]})"
    content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    return DecodedImage(pixels, content_hash, opened.width, opened.height, opened.mode)


def read_file(path: str | os.PathLike) -> bytes | str:
    """The file's bytes, or why they cannot be read (a pipe or device is refused: reading it could block)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "not a regular file (a pipe, socket or device)"
        with open(path, "rb") as handle:
            return handle.read()
    except PermissionError:
        return "unreadable (permission denied)"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"


def decode_file(path: str | os.PathLike, recipe: ResizeRecipe) -> DecodedImage | str:
    """Read and decode one file; unreadable files give a reason string like corrupt ones."""
    data = read_file(path)
    return data if isinstance(data, str) else decode(data, recipe)
