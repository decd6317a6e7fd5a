"""Procedural stand-in for a product-photo dataset: men's and women's trousers and jeans.

Jeans differ from trousers by fabric (denim twill, fades, contrast stitching, rivets, scoop and
patch pockets); men's cuts differ from women's by shape (rise, waist-to-hip ratio, leg line).
Colour, background, framing and lighting are shared nuisances, so no single cue separates the
classes. Every photo comes from its own generator seeded by (seed, class, index), which makes a
dataset reproducible byte for byte on one machine, and lets callers render any part of it, in any
order or in parallel, with :func:`render_photo`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from classify_job import atomic
from classify_job.errors import InputError
from classify_job.sampledata.cut import pick_weighted, smooth_noise
from classify_job.sampledata.others import OTHER_KINDS, draw_other
from classify_job.sampledata.trousers import draw_trousers

CLASSES = ("male_trousers", "female_trousers", "male_jeans", "female_jeans")
MIN_IMAGE_SIZE = 64
_MESSY_STREAM = 1  # keeps the messy files' generators apart from the clean photos'
_OTHER_STREAM = 100  # and the other garments' apart from both

_BACKDROPS = {
    (246, 246, 246): 0.22,
    (236, 236, 233): 0.15,
    (250, 247, 242): 0.12,
    (226, 229, 234): 0.1,
    (212, 224, 238): 0.08,
    (232, 220, 204): 0.08,
    (238, 222, 222): 0.06,
    (214, 232, 222): 0.06,
    (168, 170, 172): 0.06,
    (52, 54, 58): 0.04,
    (120, 140, 170): 0.03,
}
_WOODS = ((190, 150, 105), (120, 82, 50), (222, 212, 196), (150, 146, 140), (170, 120, 80))


@dataclass(frozen=True)
class MessyFile:
    """One awkward file: what it is, the class drawn in it (None if no garment) and whether
    :func:`classify_job.imageio.load_image` should decode it."""

    path: Path
    kind: str
    label: str | None
    decodable: bool


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`write_sample_dataset` wrote: clean photos per class, plus any messy files and
    photos of other garments (``others``, in ``other_root``)."""

    root: Path
    classes: tuple[str, ...]
    counts: dict[str, int]
    images: tuple[Path, ...]
    messy: tuple[MessyFile, ...]
    seed: int
    image_size: int
    other_root: Path | None = None
    others: tuple[Path, ...] = ()


def default_other_dir(out: Path) -> Path:
    """``data/sample`` -> ``data/sample-other``: beside the dataset, never inside it."""
    out = Path(out)
    return out.with_name(f"{out.name}-other")


def write_sample_dataset(
    out: Path,
    per_class: int,
    seed: int = 0,
    image_size: int = 320,
    messy: bool = False,
    other: int = 0,
    other_dir: Path | None = None,
) -> SampleSummary:
    """Write ``per_class`` JPEG photos of each class to ``out/<class>/img_NNNNN.jpg``.

    The same arguments give the same bytes. With ``messy=True`` each class folder also gets the
    awkward files of :func:`write_messy_tree` (nested, unicode, corrupt, 16-bit, ...), their
    garments drawn in that folder's class, to exercise training-time error handling. With
    ``other=N``, N photos each of a skirt, a shirt and a shoe go to ``other_dir/<kind>/`` (default
    :func:`default_other_dir`), outside ``out`` so that training never takes them for a class.
    """
    _check_args(per_class, image_size, other)
    images, extras = [], []
    for label in CLASSES:
        for index in range(per_class):
            path = Path(out) / label / f"img_{index:05d}.jpg"
            _write(path, render_photo(label, index, seed, image_size))
            images.append(path)
        if messy:
            extras += _write_messy(Path(out) / label, [seed, CLASSES.index(label)], image_size, label)
    counts = {label: per_class for label in CLASSES}
    other_root = Path(other_dir or default_other_dir(out)) if other else None
    others = tuple(
        _write_other(other_root / kind / f"img_{index:05d}.jpg", kind, index, seed, image_size)
        for kind in OTHER_KINDS
        for index in range(other)
    )
    return SampleSummary(
        Path(out), CLASSES, counts, tuple(images), tuple(extras), seed, image_size, other_root, others
    )


def write_messy_tree(out: Path, seed: int = 0, image_size: int = 320) -> tuple[MessyFile, ...]:
    """Write an unlabelled tree of awkward files for trying a classify run's error handling.

    It holds nested folders, unicode names, upper-case extensions, a truncated JPEG, random
    bytes named ``.jpg``, a zero-byte file, ``.txt`` and ``.csv`` files, an RGBA PNG, a
    grayscale JPEG, an EXIF-rotated JPEG, a 16-bit PNG, a CMYK JPEG and a PNG named ``.jpg``.
    """
    _check_args(0, image_size)
    return tuple(_write_messy(Path(out), [seed, len(CLASSES)], image_size, None))


def render_photo(label: str, index: int, seed: int = 0, image_size: int = 320) -> bytes:
    """JPEG bytes of photo ``index`` of class ``label``; depends on nothing but its arguments."""
    if label not in CLASSES:
        raise InputError(f"label must be one of {CLASSES}. Received: {label!r}")
    rng = np.random.default_rng([seed, CLASSES.index(label), index])
    photo = _photo(rng, lambda r, height: draw_trousers(r, label, height), image_size)
    return _jpeg(photo, int(rng.integers(60, 96)))


def render_other(kind: str, index: int, seed: int = 0, image_size: int = 320) -> bytes:
    """JPEG bytes of photo ``index`` of a garment of another ``kind`` (see :data:`OTHER_KINDS`)."""
    if kind not in OTHER_KINDS:
        raise InputError(f"kind must be one of {OTHER_KINDS}. Received: {kind!r}")
    rng = np.random.default_rng([seed, _OTHER_STREAM + OTHER_KINDS.index(kind), index])
    photo = _photo(rng, lambda r, height: draw_other(r, kind, height), image_size)
    return _jpeg(photo, int(rng.integers(60, 96)))


def _write_other(path: Path, kind: str, index: int, seed: int, image_size: int) -> Path:
    _write(path, render_other(kind, index, seed, image_size))
    return path


def _check_args(per_class: int, image_size: int, other: int = 0) -> None:
    for name, count in (("per_class", per_class), ("other", other)):
        if count < 0:
            raise InputError(f"{name} must be 0 or more. Received: {name}={count}")
    if image_size < MIN_IMAGE_SIZE:
        raise InputError(f"image_size must be at least {MIN_IMAGE_SIZE}. Received: {image_size}")


def _write(path: Path, data: bytes) -> None:
    atomic.write_bytes(path, data)


# ---------------------------------------------------------------- photo: garment on a backdrop


Garment = Callable[[np.random.Generator, int], Image.Image]  # an RGBA cut-out of a given height


def _photo(rng: np.random.Generator, garment_of: Garment, size: int) -> Image.Image:
    crop = rng.choice(["none", "hems", "side"], p=[0.88, 0.07, 0.05])  # partly out of frame
    height = size * (rng.uniform(1.15, 1.45) if crop == "hems" else rng.uniform(0.72, 0.93))
    garment = garment_of(rng, int(height))
    garment = garment.rotate(rng.uniform(-12, 12), Image.Resampling.BICUBIC, expand=True)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(garment, _placement(rng, garment.size, size, crop))
    rgba = np.asarray(layer, dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    backdrop = _background(rng, size) * _drop_shadow(rng, layer.getchannel("A"))[..., None]
    pixels = _lighting(rng, backdrop * (1 - alpha) + rgba[..., :3] * alpha)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _placement(rng: np.random.Generator, garment: tuple[int, int], size: int, crop: str) -> tuple[int, int]:
    w, h = garment
    x = (size - w) / 2 + rng.uniform(-0.07, 0.07) * size
    y = (size - h) / 2 + rng.uniform(-0.05, 0.05) * size
    if crop == "hems":
        y = rng.uniform(-0.05, 0.06) * size
    elif crop == "side":
        x = (size - w) / 2 + rng.choice([-1, 1]) * rng.uniform(0.25, 0.35) * size
    return int(x), int(y)


def _drop_shadow(rng: np.random.Generator, alpha: Image.Image) -> np.ndarray:
    size = alpha.size[0]
    if rng.random() < 0.2:
        return np.ones((size, size), np.float32)  # flat cut-out photo, no shadow
    shadow = Image.new("L", alpha.size, 0)
    shadow.paste(alpha, (int(rng.uniform(-0.02, 0.04) * size), int(rng.uniform(0.0, 0.05) * size)))
    shadow = shadow.filter(ImageFilter.GaussianBlur(rng.uniform(0.008, 0.03) * size))
    return 1 - rng.uniform(0.1, 0.45) * np.asarray(shadow, np.float32) / 255


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.3)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gain = 1 + strength * (ramp[None, :] * math.cos(angle) + ramp[:, None] * math.sin(angle))
    gain += rng.uniform(-0.1, 0.08)
    white_balance = 1 + rng.normal(0, 0.03, 3).astype(np.float32)
    img = img * gain[..., None] * white_balance
    return img + rng.standard_normal(img.shape, np.float32) * rng.uniform(0, 5)


def _jpeg(img: Image.Image, quality: int, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **options)
    return buf.getvalue()


# ---------------------------------------------------------------- backgrounds


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    maker = (_plain, _gradient, _paper, _wood)[rng.choice(4, p=[0.35, 0.3, 0.15, 0.2])]
    return maker(rng, size)


def _plain(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.broadcast_to(pick_weighted(rng, _BACKDROPS), (size, size, 3)).astype(np.float32)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    top = pick_weighted(rng, _BACKDROPS)
    bottom = top * rng.uniform(0.75, 0.97)
    yy, xx = np.ogrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    vignette = np.clip(0.12 * (xx**2 + yy**2), 0, 1) if rng.random() < 0.5 else 0 * xx
    t = np.clip((yy + 1) / 2 + vignette, 0, 1)[..., None]
    return (top * (1 - t) + bottom * t).astype(np.float32)


def _paper(rng: np.random.Generator, size: int) -> np.ndarray:
    mottle = smooth_noise(rng, (size, size), int(rng.integers(4, 12))) - 0.5
    grain = rng.random((size, size), dtype=np.float32) - 0.5
    shade = 1 + rng.uniform(0.03, 0.08) * mottle + rng.uniform(0.01, 0.04) * grain
    return pick_weighted(rng, _BACKDROPS) * shade[..., None]


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    across = np.linspace(0, 1, size, dtype=np.float32)[None, :]
    plank_w, start = rng.uniform(0.12, 0.25), rng.uniform(0, 1)
    plank = np.floor(across / plank_w + start).astype(int)
    tones = rng.normal(0, 0.05, plank.max() + 1)[plank]
    wobble = 2 * smooth_noise(rng, (size, size), 4) + plank * 1.7
    rings = np.sin(2 * math.pi * (across * rng.uniform(6, 16) + wobble)) ** 2
    streaks = smooth_noise(rng, (size, size), max(8, size // 3), 3) - 0.5
    seam = np.where((across / plank_w + start) % 1 < 0.01, 0.7, 1.0)
    shade = (0.9 + 0.07 * rings + 0.14 * streaks + tones) * seam
    shade = shade.T if rng.random() < 0.5 else shade  # planks run down or across
    return np.array(_WOODS[rng.integers(len(_WOODS))], np.float32) * shade[..., None]


# ---------------------------------------------------------------- messy files

_MESSY_KINDS = (  # kind, relative path, decodable by classify_job.imageio.load_image
    ("nested", "shoot 2019/day-2/raw/IMG_0001.jpg", True),
    ("unicode_name", "ünïcødé/Größe_34_ジーンズ.jpg", True),
    ("uppercase_ext", "IMG_0002.JPG", True),
    ("uppercase_ext", "IMG_0003.JPEG", True),
    ("png_alpha", "cutout_alpha.png", True),
    ("grayscale", "scan_gray.jpg", True),
    ("exif_rotated", "phone_exif_rotated.jpg", True),
    ("png_16bit", "export_16bit.png", True),
    ("cmyk_jpeg", "print_cmyk.jpg", True),
    ("png_named_jpg", "really_a_png.jpg", True),
    ("truncated_jpeg", "upload_interrupted.jpg", False),
    ("random_bytes", "not_an_image.jpg", False),
    ("zero_bytes", "empty.jpg", False),
    ("text", "notes.txt", False),
    ("csv", "labels.csv", False),
)
_NO_GARMENT = {"random_bytes": None, "zero_bytes": None, "text": None, "csv": None}


def _write_messy(folder: Path, key: list[int], size: int, label: str | None) -> list[MessyFile]:
    files = []
    for number, (kind, name, decodable) in enumerate(_MESSY_KINDS):
        rng = np.random.default_rng([*key, number, _MESSY_STREAM])
        drawn = label or CLASSES[int(rng.integers(len(CLASSES)))]
        _write(folder / name, _messy_bytes(kind, rng, drawn, size))
        files.append(MessyFile(folder / name, kind, None if kind in _NO_GARMENT else drawn, decodable))
    return files


def _messy_bytes(kind: str, rng: np.random.Generator, label: str, size: int) -> bytes:
    if kind in _NO_GARMENT:
        text = {"text": "re-shoot rolls 3-5 on Monday\n", "csv": "file,label\nIMG_0001.jpg,male_jeans\n"}
        return rng.bytes(4096) if kind == "random_bytes" else text.get(kind, "").encode()
    if kind == "png_alpha":
        return _png(draw_trousers(rng, label, int(size * 0.9)))
    photo = _photo(rng, lambda r, height: draw_trousers(r, label, height), size)
    if kind == "grayscale":
        return _jpeg(photo.convert("L"), 85)
    if kind == "cmyk_jpeg":
        return _jpeg(photo.convert("CMYK"), 85)
    if kind == "png_named_jpg":
        return _png(photo)
    if kind == "png_16bit":
        return _png(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257))
    if kind == "exif_rotated":
        return _exif_rotated(photo)
    data = _jpeg(photo, 88)
    return data[: len(data) // 2] if kind == "truncated_jpeg" else data


def _exif_rotated(photo: Image.Image) -> bytes:
    """A portrait photo stored on its side with EXIF orientation 6, as phones write them."""
    w, h = photo.size
    upright = photo.crop((w // 8, 0, w - w // 8, h))  # portrait, so a missed rotation shows in the size
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(upright.transpose(Image.Transpose.ROTATE_90), 88, exif=exif)


# ---------------------------------------------------------------- small helpers


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
