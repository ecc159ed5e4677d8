"""``glyphs``: the letters A-J rendered from Debian's font packages, a notMNIST-like domain far from photos.

The fonts come from ``fonts-aenigma`` (465 decorative TrueType fonts by Brian Kent) and
``fonts-dustin`` (20 more), pinned by version and SHA-256, downloaded and unpacked like the other
Debian datasets (autotransfer/data/debian.py), never installed. Each (font, letter) gives exactly one
image, so no letter of a font can be in both the test and the training split. A letter is left out
where the font's character map lacks it (it would draw the font's "missing glyph" box), where it
draws nothing, and where it draws the same picture as another letter of the same font or the same
letter of another font (duplicate fonts). Each glyph is cropped to its ink, scaled so its longer side
is 60-80% of a 96-px white canvas and placed near the centre (a few pixels of offset): size and
position are seeded, so the set is the same on every machine. Grayscale, black on white.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont

from autotransfer.data.debian import debian_package

LETTERS = "ABCDEFGHIJ"
CANVAS = 96  # px, the side of every image
RENDER_SIZE = 128  # px em size the glyphs are drawn at before they are scaled down to the canvas
SCALE = (0.6, 0.8)  # the glyph's longer side, as a fraction of the canvas
SHIFT = 6  # px: the largest offset of the glyph's centre from the canvas's
MIN_INK_PX = 4  # a drawing smaller than this at RENDER_SIZE counts as blank


@dataclass(frozen=True)
class FontPackage:
    name: str
    version: str
    sha256: str


FONT_PACKAGES = (
    FontPackage(
        "fonts-aenigma", "0.0.20080511+dfsg-4", "c7f33a4e5932af82a92c81a5a993a1d117c4309b47532cb0d9c3ad34bc54f5a8"
    ),
    FontPackage("fonts-dustin", "20030517-14", "4f74523ed2f3987279478a06933694ea91dadbe607b1c4077a25ca48c52ad3a7"),
)


def font_files() -> list[Path]:
    """Every TrueType/OpenType file of the pinned packages, in a fixed order."""
    files = []
    for package in FONT_PACKAGES:
        root = debian_package(package.name, version=package.version, sha256=package.sha256)
        files += sorted(p for p in (root / "usr/share/fonts").rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return files


def _mapped_letters(path: Path) -> set[str]:
    """The letters the font's character map has; none when the file cannot be read as a font."""
    try:
        with TTFont(path, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, ValueError, KeyError, AssertionError):  # fontTools' errors on malformed tables
        return set()
    return {letter for letter in LETTERS if ord(letter) in cmap}


def _ink(font: ImageFont.FreeTypeFont, letter: str) -> Image.Image | None:
    """The letter drawn white on black and cropped to its ink; None when it draws (almost) nothing."""
    canvas = Image.new("L", (3 * RENDER_SIZE, 3 * RENDER_SIZE), 0)  # margins for glyphs that overhang their box
    ImageDraw.Draw(canvas).text((RENDER_SIZE, RENDER_SIZE), letter, font=font, fill=255)
    box = canvas.getbbox()
    if box is None or max(box[2] - box[0], box[3] - box[1]) < MIN_INK_PX:
        return None
    return canvas.crop(box)


def _place(ink: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """The cropped glyph scaled and placed on the canvas, black on white."""
    scale = rng.uniform(*SCALE) * CANVAS / max(ink.size)
    glyph = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.LANCZOS)
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    left, top = ((CANVAS - side) // 2 + int(rng.integers(-SHIFT, SHIFT + 1)) for side in glyph.size)
    canvas.paste(glyph, (min(max(left, 0), CANVAS - glyph.width), min(max(top, 0), CANVAS - glyph.height)))
    return 255 - np.asarray(canvas)


def render_glyphs(fonts: list[Path], seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images, labels, classes)``: one CANVAS x CANVAS uint8 image per usable (font, letter)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    seen: set[tuple[str, bytes]] = set()  # (letter, digest of its drawing): duplicate fonts count once
    for path in fonts:
        letters = _mapped_letters(path)
        if not letters:
            continue
        try:
            font = ImageFont.truetype(str(path), RENDER_SIZE)
            drawn = {letter: _ink(font, letter) for letter in sorted(letters)}
        except OSError:  # FreeType cannot rasterise it
            continue
        digests = {
            letter: hashlib.blake2b(ink.tobytes() + repr(ink.size).encode(), digest_size=16).digest()
            for letter, ink in drawn.items()
            if ink is not None
        }
        shared = {d for d in digests.values() if list(digests.values()).count(d) > 1}  # one picture, two letters
        for letter, digest in digests.items():
            if digest in shared or (letter, digest) in seen:
                continue
            seen.add((letter, digest))
            images.append(_place(drawn[letter], rng))
            labels.append(LETTERS.index(letter))
    stacked = np.stack(images) if images else np.zeros((0, CANVAS, CANVAS), dtype=np.uint8)
    return stacked, np.array(labels, dtype=np.int64), list(LETTERS)


def load_glyphs() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return render_glyphs(font_files())
