"""Robust image decoding: the one way the project opens an image file.

Training, evaluation and prediction all call :func:`load_image`, so the pixels a model sees in
production are computed exactly as they were in training; thumbnails and ``check-data`` open files
with :func:`open_image`, so every reader gets the same guards and the same one-line reasons.
Every failure is an ImageDecodeError; callers turn it into an error row or a skipped file.

Memory is bounded by what is actually decoded: a JPEG is first reduced in the DCT domain (draft
mode, down to 1/8), and only then is its size checked against :data:`MAX_DECODED_PIXELS`. So a
60-megapixel camera JPEG decodes in a few megabytes, while a PNG, TIFF or GIF that declares
gigapixels is refused before a byte of it is decoded. HEIC/HEIF (pillow-heif) and AVIF decode
here too, EXIF orientation included.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from classify_job.errors import ImageDecodeError, InputError

# A decompression bomb is an error row, not a crash or a 10 GB allocation. Pillow's own check
# looks at the declared size, which would refuse camera JPEGs that draft mode decodes at 1/8;
# open_image checks the size that will really be decoded instead.
MAX_DECODED_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None
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


@dataclass(frozen=True)
class OpenedImage:
    """An image opened (not yet decoded) by :func:`open_image`, and its size as stored in the
    file with EXIF orientation applied (before any draft reduction)."""

    image: Image.Image
    width: int
    height: int


@contextmanager
def open_image(
    source: str | os.PathLike | BinaryIO, draft: tuple[str, tuple[int, int]] | None = None
) -> Iterator[OpenedImage]:
    """Open ``source`` with Pillow inside the project's guards.

    ``draft`` = (mode, (width, height)) lets a JPEG decode at the smallest scale that still
    covers that size. The size left to decode is then checked against MAX_DECODED_PIXELS.
    Anything that goes wrong while the block runs (unknown format, truncated data, a bomb, a
    vanished file) leaves it as an ImageDecodeError with a one-line reason.
    """
    _register_plugins()
    try:
        with ExitStack() as stack:
            file = source if hasattr(source, "read") else stack.enter_context(_open_file(source))
            img = stack.enter_context(Image.open(file))
            opened = OpenedImage(img, *_oriented_size(img))
            if draft is not None:
                img.draft(*draft)
            _check_decoded_size(img)
            yield opened
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError("file vanished before it could be read") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
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
    with open_image(path, draft=(COLOR_MODES[color_mode][0], (size[1], size[0]))) as opened:
        pixels = _to_array(ImageOps.exif_transpose(opened.image), size, color_mode)
    return DecodedImage(pixels=pixels, width=opened.width, height=opened.height)


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


def _check_decoded_size(img: Image.Image) -> None:
    width, height = img.size
    if width * height > MAX_DECODED_PIXELS:
        raise ImageDecodeError(
            f"image too large: {width}x{height} pixels to decode, over the limit of "
            f"{MAX_DECODED_PIXELS // 1_000_000} megapixels"
        )


@functools.cache
def _register_plugins() -> None:
    """HEIC/HEIF through pillow-heif; registered on first use, so runs that decode nothing skip it."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _open_file(path: str | os.PathLike) -> BinaryIO:
    """``open(path, "rb")``, or, for a path longer than PATH_MAX, one directory at a time."""
    try:
        return open(path, "rb")  # closed by the caller's ExitStack
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    parts = os.fsencode(path).split(b"/")
    fd = os.open(b"/" if not parts[0] else b".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in (p for p in parts[:-1] if p):
            fd, parent = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
        return os.fdopen(os.open(parts[-1], os.O_RDONLY, dir_fd=fd), "rb")
    finally:
        os.close(fd)


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
