"""Small JPEG thumbnails of image files as ``data:`` URIs, with a placeholder for unreadable ones."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

from PIL import ImageOps

from classify_job.errors import ImageDecodeError
from classify_job.imageio import flatten, open_image

_THUMB_WORKERS = 4  # PIL releases the GIL while decoding, so threads overlap file reads and decodes


def make_thumbnails(paths: list[str], px: int) -> dict[str, str]:
    """A ``data:`` URI for each path: a small JPEG, or a placeholder when the file cannot be read."""
    with ThreadPoolExecutor(_THUMB_WORKERS) as pool:
        return dict(zip(paths, pool.map(lambda p: thumbnail_uri(p, px), paths), strict=True))


def thumbnail_uri(path: str, px: int) -> str:
    """A JPEG thumbnail (longest side ``px``) as a ``data:`` URI, decoded with JPEG draft mode."""
    buffer = io.BytesIO()
    try:
        with open_image(path, draft=("RGB", (px, px))) as opened:
            img = ImageOps.exif_transpose(opened.image)
            img.thumbnail((px, px))
            flatten(img).convert("RGB").save(buffer, "JPEG", quality=70, optimize=True)
    except (ImageDecodeError, OSError):  # vanished, damaged or foreign since it was classified
        return _placeholder_uri(px)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _placeholder_uri(px: int) -> str:
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{px}" height="{px}">'
        f'<rect width="100%" height="100%" fill="#e5e7eb"/><text x="50%" y="50%" fill="#6b7280" '
        f'font-family="sans-serif" font-size="12" text-anchor="middle">unreadable</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
