"""Robust image decoding: the one way the project opens an image file.

Training, evaluation and prediction all call :func:`load_image`, so the pixels a model sees in
production are computed exactly as they were in training; thumbnails and ``check-data`` open files
with :func:`open_image`, so every reader gets the same guards and the same one-line reasons.
Every failure is an ImageDecodeError; callers turn it into an error row or a skipped file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from classify_job.errors import ImageDecodeError, InputError

# A decompression bomb is an error row, not a crash or a 10 GB allocation.
Image.MAX_IMAGE_PIXELS = 50_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False

COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1)}
RESIZE = "bilinear-squash"
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodedImage:
    """Model-ready pixels (uint8, HxWxC) plus the original size after EXIF rotation."""

    pixels: np.ndarray
    width: int
    height: int


def channels_for(color_mode: str) -> int:
    """Number of channels a colour mode gives (3 for rgb, 1 for grayscale)."""
    _check_mode(color_mode)
    return COLOR_MODES[color_mode][1]


@contextmanager
def open_image(source: str | os.PathLike | BinaryIO) -> Iterator[Image.Image]:
    """Open ``source`` with Pillow inside the project's guards.

    Anything that goes wrong while the block runs (unknown format, truncated data, a
    decompression bomb, a vanished file) leaves it as an ImageDecodeError with a one-line reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                yield img
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError("file vanished before it could be read") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large: {one_line(exc)}") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageDecodeError(f"{type(exc).__name__}: {one_line(exc)}") from exc
    except Exception as exc:  # a decoder bug on one odd file must not stop a million-file run
        raise ImageDecodeError(f"unexpected {type(exc).__name__}: {one_line(exc)}") from exc


def load_image(path: str | os.PathLike, size: tuple[int, int], color_mode: str = "rgb") -> DecodedImage:
    """Decode ``path`` and resize it to ``size`` = (height, width) in ``color_mode``.

    Handles EXIF orientation, palette and alpha images (composited on white), 16-bit and CMYK
    modes, and uses JPEG draft mode so large photos are downscaled in the DCT domain first.
    """
    _check_mode(color_mode)
    with open_image(path) as img:
        width, height = _oriented_size(img)
        img.draft(COLOR_MODES[color_mode][0], (size[1], size[0]))
        img = ImageOps.exif_transpose(img)
        pixels = _to_array(img, size, color_mode)
    return DecodedImage(pixels=pixels, width=width, height=height)


def flatten(img: Image.Image) -> Image.Image:
    """Bring any Pillow mode to RGB or L: alpha on white, 16/32-bit scaled to 8 bits."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("RGB", "L"):
        return img
    return img.convert("RGB")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 300 characters (its type when it has none)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    # Read before draft() shrinks the decoder; EXIF orientations 5-8 swap width and height.
    width, height = img.size
    if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
        return height, width
    return width, height


def _to_array(img: Image.Image, size: tuple[int, int], color_mode: str) -> np.ndarray:
    img = flatten(img)
    pil_mode, channels = COLOR_MODES[color_mode]
    img = img.convert(pil_mode)
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(size[0], size[1], channels)


def _check_mode(color_mode: str) -> None:
    if color_mode not in COLOR_MODES:
        raise InputError(f"color mode must be one of {sorted(COLOR_MODES)}. Received: {color_mode!r}")
