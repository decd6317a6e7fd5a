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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from classify_job.errors import InputError, OutputError

CLASSES = ("male_trousers", "female_trousers", "male_jeans", "female_jeans")
MIN_IMAGE_SIZE = 64
_TOP = 0.03  # canvas margin above the waistband, in garment heights
_MESSY_STREAM = 1  # keeps the messy files' generators apart from the clean photos'

_LEG_SHAPES = {  # name: (knee width / hip width, hem width / knee width)
    "straight": ((0.74, 0.82), (0.92, 1.0)),
    "tapered": ((0.7, 0.78), (0.78, 0.88)),
    "relaxed": ((0.8, 0.9), (0.96, 1.04)),
    "skinny": ((0.55, 0.64), (0.72, 0.85)),
    "bootcut": ((0.6, 0.7), (1.15, 1.3)),
    "flare": ((0.58, 0.66), (1.45, 1.8)),
    "wide": ((0.85, 0.95), (1.05, 1.2)),
}
_LEG_ODDS = {
    "male_trousers": {"straight": 0.4, "tapered": 0.45, "relaxed": 0.15},
    "male_jeans": {"straight": 0.4, "tapered": 0.4, "relaxed": 0.2},
    "female_trousers": {"wide": 0.3, "straight": 0.25, "flare": 0.15, "skinny": 0.15, "bootcut": 0.15},
    "female_jeans": {"skinny": 0.35, "bootcut": 0.2, "flare": 0.2, "straight": 0.15, "wide": 0.1},
}
# Denim warp colours (the weft and the fades are paler); a quarter of jeans are not blue.
_DENIM = {
    (22, 32, 62): 0.18,
    (38, 58, 105): 0.22,
    (60, 88, 135): 0.18,
    (105, 135, 175): 0.14,
    (32, 32, 36): 0.1,
    (88, 90, 96): 0.06,
    (95, 100, 60): 0.03,
    (110, 40, 45): 0.03,
    (180, 160, 120): 0.03,
    (225, 222, 212): 0.03,
}
# Trousers come in blues too (40 % of them), so "blue" alone cannot mean "jeans".
_CLOTH = {
    (28, 36, 68): 0.12,
    (40, 62, 130): 0.07,
    (70, 90, 125): 0.09,
    (125, 150, 185): 0.06,
    (45, 55, 100): 0.06,
    (24, 24, 27): 0.1,
    (55, 57, 62): 0.08,
    (115, 116, 120): 0.06,
    (175, 155, 115): 0.08,
    (200, 190, 168): 0.06,
    (90, 95, 58): 0.05,
    (95, 68, 45): 0.05,
    (95, 30, 40): 0.04,
    (222, 212, 190): 0.04,
    (160, 80, 50): 0.02,
    (195, 150, 150): 0.02,
}
_THREADS = {(205, 145, 55): 0.4, (220, 170, 70): 0.3, (190, 115, 45): 0.2, (205, 190, 155): 0.1}
_METALS = ((175, 115, 60), (190, 160, 90), (185, 185, 190), (90, 90, 95))
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
    """What :func:`write_sample_dataset` wrote: clean photos per class, plus any messy files."""

    root: Path
    classes: tuple[str, ...]
    counts: dict[str, int]
    images: tuple[Path, ...]
    messy: tuple[MessyFile, ...]
    seed: int
    image_size: int


def write_sample_dataset(
    out: Path, per_class: int, seed: int = 0, image_size: int = 320, messy: bool = False
) -> SampleSummary:
    """Write ``per_class`` JPEG photos of each class to ``out/<class>/img_NNNNN.jpg``.

    The same arguments give the same bytes. With ``messy=True`` each class folder also gets the
    awkward files of :func:`write_messy_tree` (nested, unicode, corrupt, 16-bit, ...), their
    garments drawn in that folder's class, to exercise training-time error handling.
    """
    _check_args(per_class, image_size)
    images, extras = [], []
    for label in CLASSES:
        for index in range(per_class):
            path = Path(out) / label / f"img_{index:05d}.jpg"
            _write(path, render_photo(label, index, seed, image_size))
            images.append(path)
        if messy:
            extras += _write_messy(Path(out) / label, [seed, CLASSES.index(label)], image_size, label)
    counts = {label: per_class for label in CLASSES}
    return SampleSummary(Path(out), CLASSES, counts, tuple(images), tuple(extras), seed, image_size)


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
    photo = _photo(rng, label, image_size)
    return _jpeg(photo, int(rng.integers(60, 96)))


def _check_args(per_class: int, image_size: int) -> None:
    if per_class < 0:
        raise InputError(f"per_class must be 0 or more. Received: per_class={per_class}")
    if image_size < MIN_IMAGE_SIZE:
        raise InputError(f"image_size must be at least {MIN_IMAGE_SIZE}. Received: {image_size}")


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------- photo: garment on a backdrop


def _photo(rng: np.random.Generator, label: str, size: int) -> Image.Image:
    crop = rng.choice(["none", "hems", "side"], p=[0.88, 0.07, 0.05])  # partly out of frame
    height = size * (rng.uniform(1.15, 1.45) if crop == "hems" else rng.uniform(0.72, 0.93))
    garment = _garment(rng, label, int(height))
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
    return np.broadcast_to(_pick(rng, _BACKDROPS), (size, size, 3)).astype(np.float32)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    top = _pick(rng, _BACKDROPS)
    bottom = top * rng.uniform(0.75, 0.97)
    yy, xx = np.ogrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    vignette = np.clip(0.12 * (xx**2 + yy**2), 0, 1) if rng.random() < 0.5 else 0 * xx
    t = np.clip((yy + 1) / 2 + vignette, 0, 1)[..., None]
    return (top * (1 - t) + bottom * t).astype(np.float32)


def _paper(rng: np.random.Generator, size: int) -> np.ndarray:
    mottle = _smooth_noise(rng, (size, size), int(rng.integers(4, 12))) - 0.5
    grain = rng.random((size, size), dtype=np.float32) - 0.5
    shade = 1 + rng.uniform(0.03, 0.08) * mottle + rng.uniform(0.01, 0.04) * grain
    return _pick(rng, _BACKDROPS) * shade[..., None]


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    across = np.linspace(0, 1, size, dtype=np.float32)[None, :]
    plank_w, start = rng.uniform(0.12, 0.25), rng.uniform(0, 1)
    plank = np.floor(across / plank_w + start).astype(int)
    tones = rng.normal(0, 0.05, plank.max() + 1)[plank]
    wobble = 2 * _smooth_noise(rng, (size, size), 4) + plank * 1.7
    rings = np.sin(2 * math.pi * (across * rng.uniform(6, 16) + wobble)) ** 2
    streaks = _smooth_noise(rng, (size, size), max(8, size // 3), 3) - 0.5
    seam = np.where((across / plank_w + start) % 1 < 0.01, 0.7, 1.0)
    shade = (0.9 + 0.07 * rings + 0.14 * streaks + tones) * seam
    shade = shade.T if rng.random() < 0.5 else shade  # planks run down or across
    return np.array(_WOODS[rng.integers(len(_WOODS))], np.float32) * shade[..., None]


def _pick(rng: np.random.Generator, weighted: dict) -> np.ndarray:
    colours = list(weighted)
    p = np.array(list(weighted.values()))
    return np.array(colours[rng.choice(len(colours), p=p / p.sum())], np.float32)


# ---------------------------------------------------------------- garment: shape and look


@dataclass(frozen=True)
class _Cut:
    """Flat-laid trousers in garment units: height 1 from waistband to hem, x = 0 at the fly."""

    waist: float  # half-width at the waistband
    hip: float  # half-width at the hip line, which is also one leg's width at the crotch
    hip_y: float
    rise: float  # waistband to crotch
    knee_y: float
    knee: float  # leg width at the knee
    hem: float
    gap: float  # space between a hem's inner edge and the centre line
    dip: float  # how far the waistband's centre sits below its sides (negative: above)
    band: float  # waistband height


@dataclass(frozen=True)
class _Look:
    denim: bool
    female: bool
    back: bool
    base: np.ndarray  # fabric colour
    light: np.ndarray  # weft and faded colour for denim, sheen for cloth
    thread: tuple[int, int, int]
    metal: tuple[int, int, int]
    fold: tuple[int, float] | None  # (side, fold line y) when one leg is folded up


def _sample_cut(rng: np.random.Generator, label: str, back: bool) -> _Cut:
    female = label.startswith("female")
    high_rise = female and rng.random() < 0.3
    if female:  # narrower waist over similar hips, and a shorter rise unless high-waisted
        waist = rng.uniform(0.135, 0.155) if high_rise else rng.uniform(0.15, 0.175)
        hip = waist * rng.uniform(1.4, 1.65)
        rise = rng.uniform(0.28, 0.31) if high_rise else rng.uniform(0.2, 0.26)
    else:
        waist = rng.uniform(0.185, 0.215)
        hip, rise = waist * rng.uniform(1.08, 1.2), rng.uniform(0.28, 0.33)
    odds = _LEG_ODDS[label]
    knee_ratio, hem_ratio = _LEG_SHAPES[list(odds)[rng.choice(len(odds), p=list(odds.values()))]]
    knee = hip * rng.uniform(*knee_ratio)
    return _Cut(
        waist=waist,
        hip=hip,
        hip_y=rise * rng.uniform(0.55, 0.7),
        rise=rise,
        knee_y=rise + (1 - rise) * rng.uniform(0.42, 0.5),
        knee=knee,
        hem=knee * rng.uniform(*hem_ratio),
        gap=rng.uniform(0.012, 0.045),
        dip=-rng.uniform(0.008, 0.02) if back else rng.uniform(0.0, 0.02 if female else 0.008),
        band=rng.uniform(0.026, 0.04) if female else rng.uniform(0.032, 0.045),
    )


def _sample_look(rng: np.random.Generator, label: str) -> _Look:
    denim = label.endswith("jeans")
    base = _pick(rng, _DENIM if denim else _CLOTH) * rng.uniform(0.88, 1.12)
    base = np.clip(base * (1 + rng.normal(0, 0.04, 3)), 0, 255).astype(np.float32)
    blue = base[2] > base[0] + 15
    light = base + (np.array([210, 218, 232] if blue else [200, 200, 196]) - base) * (0.65 if denim else 0.35)
    if denim:
        thread = _rgb(_pick(rng, _THREADS)) if blue or rng.random() < 0.5 else _rgb(base * 0.7 + 40)
    else:
        thread = _rgb(base * 0.78)
    fold = (int(rng.choice([-1, 1])), rng.uniform(0.66, 0.8)) if rng.random() < 0.1 else None
    metal = _METALS[rng.integers(len(_METALS))]
    female, back = label.startswith("female"), rng.random() < 0.3
    return _Look(denim, female, back, base, light.astype(np.float32), thread, metal, fold)


def _top_y(cut: _Cut, x):
    return cut.dip * (1 - np.clip(np.asarray(x) / cut.waist, -1, 1) ** 2)


def _body_half(cut: _Cut, y):
    return cut.waist + (cut.hip - cut.waist) * np.sin(np.pi / 2 * np.clip(np.asarray(y) / cut.hip_y, 0, 1))


def _leg_profile(cut: _Cut, y):
    """Centre (distance from x = 0) and width of a leg at height ``y``."""
    t = np.clip((np.asarray(y) - cut.rise) / (1 - cut.rise), 0, 1)
    width = np.interp(y, [cut.rise, cut.knee_y, 1.0], [cut.hip, cut.knee, cut.hem])
    return cut.hip / 2 + (cut.gap + cut.hem / 2 - cut.hip / 2) * t, width


def _body_polygon(cut: _Cut) -> np.ndarray:
    ys = np.linspace(0, cut.rise + 0.005, 20)
    half = _body_half(cut, ys)
    xs = np.linspace(cut.waist, -cut.waist, 15)
    sides = [np.stack([-half, ys], 1), np.stack([half, ys], 1)[::-1]]
    return np.concatenate([*sides, np.stack([xs, _top_y(cut, xs)], 1)])


def _leg_polygon(cut: _Cut, side: int, y0: float, y1: float) -> np.ndarray:
    ys = np.linspace(y0, y1, 24)
    centre, width = _leg_profile(cut, ys)
    outer, inner = side * (centre + width / 2), side * (centre - width / 2)
    return np.concatenate([np.stack([outer, ys], 1), np.stack([inner, ys], 1)[::-1]])


def _silhouette(cut: _Cut, look: _Look) -> list[np.ndarray]:
    ends = {-1: 1.0, 1: 1.0}
    if look.fold:
        ends[look.fold[0]] = look.fold[1]
    return [_body_polygon(cut)] + [_leg_polygon(cut, s, cut.rise - 0.01, ends[s]) for s in (-1, 1)]


# ---------------------------------------------------------------- garment: fabric


def _garment(rng: np.random.Generator, label: str, height: int) -> Image.Image:
    """An RGBA cut-out ``height`` pixels tall (plus a small margin)."""
    look = _sample_look(rng, label)
    cut = _sample_cut(rng, label, look.back)
    k = 2 * height / (1 + 2 * _TOP)  # drawn at twice the size and halved, for smooth edges
    rgb = _fabric(rng, cut, look, k)
    image = Image.fromarray(_to_uint8(rgb))
    mask = Image.new("L", image.size, 0)
    pen = _Pen(ImageDraw.Draw(image), ImageDraw.Draw(mask), k)
    for outline in _silhouette(cut, look):
        pen.mask.polygon(pen.xy(outline), fill=255)
    _details(pen, rng, cut, look)
    if look.fold:
        _fold_leg(pen, image, mask, rgb, cut, look)
    image.putalpha(mask)
    return image.reduce(2)


def _fabric(rng: np.random.Generator, cut: _Cut, look: _Look, k: float) -> np.ndarray:
    w, h = round(k), round(k * (1 + 2 * _TOP))
    x = ((np.arange(w, dtype=np.float32) + 0.5) / k - 0.5)[None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / k - _TOP)[:, None]
    u_leg, u = _leg_coords(cut, x, y)
    t = _denim_weave(rng, (h, w), k) if look.denim else _cloth_weave(rng, (h, w), k)
    rgb = look.base + (look.light - look.base) * t[..., None]
    if look.denim:
        rgb += (look.light - rgb) * _fades(rng, cut, look, x, y, u_leg, k)[..., None]
    return rgb * _shading(rng, cut, look, x, y, u_leg, u)[..., None]


def _leg_coords(cut: _Cut, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Across-leg position (-1 inner edge .. 1 outer edge), and across the body above the crotch."""
    centre, width = _leg_profile(cut, y)
    u_leg = ((np.abs(x) - centre) / (width / 2)).astype(np.float32)
    return u_leg, np.where(y < cut.rise, x / _body_half(cut, y), u_leg).astype(np.float32)


def _denim_weave(rng: np.random.Generator, shape: tuple[int, int], k: float) -> np.ndarray:
    h, w = shape
    spacing = max(5.0, k / 130)  # pixels between twill lines, never finer than the halved image shows
    yy, xx = np.ogrid[0:h, 0:w]
    phase = (2 * xx + yy).astype(np.float32) * (2 * math.pi / (math.sqrt(5) * spacing))
    slub = np.convolve(rng.standard_normal(w), np.ones(3) / 3, "same").astype(np.float32)[None, :]
    streaks = _smooth_noise(rng, shape, max(12, w // 8), 4) - 0.5
    twill = np.clip(1.8 * np.sin(phase + 1.5 * streaks), -1, 1) * 0.5 + 0.5
    return 0.1 + 0.15 * twill + 0.05 * slub + 0.1 * streaks + 0.08 * rng.random(shape, np.float32)


def _cloth_weave(rng: np.random.Generator, shape: tuple[int, int], k: float) -> np.ndarray:
    kind = rng.choice(4, p=[0.45, 0.25, 0.1, 0.2])  # plain, chino twill, pinstripe, heather
    fine = rng.random(shape, np.float32)
    t = 0.04 * fine + rng.uniform(0.03, 0.2) * _smooth_noise(rng, shape, 6)  # washed-out patches
    yy, xx = np.ogrid[0 : shape[0], 0 : shape[1]]
    if kind == 1:  # same-colour yarns, so the twill is faint unlike denim's white weft
        t = t + 0.04 * np.sin((xx + yy).astype(np.float32) * (2 * math.pi / max(4.0, k / 160)))
    elif kind == 2:
        t = t + 0.45 * (xx % max(6, int(k * 0.035)) < max(1, int(k * 0.002)))
    elif kind == 3:  # heather or chambray: pale yarns through the colour, but no diagonal
        t = t + rng.uniform(0.1, 0.35) * fine
    return t.astype(np.float32)


def _fades(rng, cut: _Cut, look: _Look, x, y, u_leg, k: float) -> np.ndarray:
    """Where denim has worn lighter: thighs, knees, seat, and whiskers at the crotch."""
    legs = np.clip((y - cut.rise + 0.1) / 0.2, 0, 1)  # no hard line at the crotch
    thigh = np.exp(-(u_leg**2) / 0.3 - ((y - cut.rise - 0.1) / 0.12) ** 2)
    knee = np.exp(-(u_leg**2) / 0.2 - ((y - cut.knee_y) / 0.07) ** 2)
    fade = (thigh + 0.6 * knee) * legs
    if look.back:
        fade = fade + np.exp(
            -(((np.abs(x) - cut.hip * 0.45) / 0.09) ** 2) - ((y - cut.rise * 0.7) / 0.08) ** 2
        )
    elif rng.random() < 0.7:
        fade = fade + _whiskers(rng, cut, fade.shape, k)
    mottle = _smooth_noise(rng, fade.shape, 8) - 0.5
    return np.clip(rng.uniform(0.15, 0.6) * fade + 0.15 * mottle, 0, 0.85)


def _whiskers(rng: np.random.Generator, cut: _Cut, shape: tuple[int, int], k: float) -> np.ndarray:
    img = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(img)
    for side in (-1, 1):
        for _ in range(rng.integers(2, 6)):
            x0, y0, length = (
                side * rng.uniform(0.01, 0.04),
                cut.rise - rng.uniform(0, 0.06),
                rng.uniform(0.06, 0.13),
            )
            bend = (x0 + side * length * 0.5, y0 + rng.uniform(-0.01, 0.01))
            end = (x0 + side * length, y0 - rng.uniform(0.0, 0.05))
            curve = _bezier(np.array((x0, y0)), np.array(bend), np.array(end))
            draw.line(_xy(k, curve), fill=int(rng.uniform(120, 255)), width=max(1, int(k * 0.006)))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(k * 0.004)), np.float32) / 255 * 0.8


def _shading(rng, cut: _Cut, look: _Look, x, y, u_leg, u) -> np.ndarray:
    shade = 1 - rng.uniform(0.12, 0.28) * np.clip(np.abs(u), 0, 1.3) ** 3
    shade = shade - 0.05 * (y < _top_y(cut, x) + cut.band)  # the double-layer waistband
    if not look.denim:
        ridge = 0.1 * np.exp(-((u_leg / 0.04) ** 2)) - 0.06 * np.exp(-(((u_leg + 0.1) / 0.07) ** 2))
        shade = shade + ridge * np.clip((y - cut.hip_y) / 0.1, 0, 1)  # pressed creases
    return shade + _wrinkles(rng, cut, x, y, u_leg)


def _wrinkles(rng: np.random.Generator, cut: _Cut, x, y, u_leg) -> np.ndarray:
    out = np.zeros(u_leg.shape, np.float32)
    for _ in range(rng.integers(2, 7)):
        side, y0, slope = rng.choice([-1, 1]), rng.uniform(cut.rise + 0.05, 0.98), rng.uniform(-0.06, 0.06)
        width, depth = rng.uniform(0.004, 0.012), rng.uniform(-0.08, 0.05)
        lo, hi = np.searchsorted(y[:, 0], [y0 - 0.1, y0 + 0.1])  # only rows the fold can reach
        u = u_leg[lo:hi]
        band = np.exp(-(((y[lo:hi] - y0 - slope * u) / width) ** 2))
        out[lo:hi] += depth * band * (np.sign(x) == side) * np.exp(-(u**2))
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, rows: int = 0) -> np.ndarray:
    """Bicubic-upsampled random grid: ``cells`` across, ``rows`` down (``cells`` if 0)."""
    coarse = Image.fromarray(rng.random((rows or cells, cells), dtype=np.float32), mode="F")
    return np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------- garment: construction details


@dataclass(frozen=True)
class _Pen:
    """Draws in garment units on the fabric image; ``mask`` receives parts that widen the outline."""

    image: ImageDraw.ImageDraw
    mask: ImageDraw.ImageDraw
    k: float

    def xy(self, pts) -> list[tuple[float, float]]:
        return _xy(self.k, pts)

    def line(self, pts, fill, weight: float = 1.0) -> None:
        width = max(1, round(self.k * 0.0035 * weight))
        self.image.line(self.xy(pts), fill=fill, width=width, joint="curve")

    def stitch(self, pts, fill, dash: float = 0.009, gap: float = 0.005) -> None:
        p = np.array(self.xy(pts))
        along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(p, axis=0).T))])
        starts = np.arange(0, along[-1], (dash + gap) * self.k)
        ends = np.minimum(starts + dash * self.k, along[-1])
        ax, ay, bx, by = (np.interp(s, along, p[:, i]) for s in (starts, ends) for i in (0, 1))
        for dash_xy in zip(ax, ay, bx, by, strict=True):
            self.image.line(dash_xy, fill=fill, width=max(1, round(self.k * 0.003)))

    def shape(self, pts, fill=None, outline=None, widen: bool = False) -> None:
        self.image.polygon(self.xy(pts), fill=fill, outline=outline, width=max(1, round(self.k * 0.003)))
        if widen:
            self.mask.polygon(self.xy(pts), fill=255)

    def dot(self, x: float, y: float, r: float, fill, outline=None) -> None:
        (cx, cy), rr = self.xy([(x, y)])[0], r * self.k
        self.image.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=fill, outline=outline)


def _details(pen: _Pen, rng: np.random.Generator, cut: _Cut, look: _Look) -> None:
    _waistband(pen, cut, look)
    if look.back:
        (_back_jeans if look.denim else _back_trousers)(pen, rng, cut, look)
    else:
        (_front_jeans if look.denim else _front_trousers)(pen, rng, cut, look)
    _belt_loops(pen, rng, cut, look)
    if look.denim:
        _hems(pen, cut, look)


def _waistband(pen: _Pen, cut: _Cut, look: _Look) -> None:
    half = float(_body_half(cut, cut.band))
    xs = np.linspace(-half, half, 20)
    pen.line(np.stack([xs, _top_y(cut, xs) + cut.band], 1), _rgb(look.base * 0.5))
    for row in (0.25, 0.75) if look.denim else (0.8,):
        pen.stitch(np.stack([xs * 0.98, _top_y(cut, xs) + cut.band * row], 1), look.thread)


def _belt_loops(pen: _Pen, rng: np.random.Generator, cut: _Cut, look: _Look) -> None:
    if look.female and not look.denim and rng.random() < 0.4:
        return
    spots = (0.0, 0.62) if look.back else (0.55, 0.96)
    for x in sorted({side * cut.waist * f for side in (-1, 1) for f in spots}):
        top, bottom = float(_top_y(cut, x)) - 0.006, float(_top_y(cut, x)) + cut.band + 0.016
        loop = [(x - 0.009, top), (x + 0.009, top), (x + 0.009, bottom), (x - 0.009, bottom)]
        pen.shape(loop, outline=_rgb(look.base * 0.55), widen=True)
        if look.denim:  # bar tacks
            for y in (top + 0.005, bottom - 0.005):
                pen.line([(x - 0.007, y), (x + 0.007, y)], look.thread, 1.5)


def _front_jeans(pen: _Pen, rng: np.random.Generator, cut: _Cut, look: _Look) -> None:
    inset = cut.waist * rng.uniform(0.42, 0.52)
    depth = cut.rise * rng.uniform(0.38, 0.46)
    for side in (-1, 1):
        _scoop_pocket(pen, cut, look, side, inset, depth)
    if not look.female or rng.random() < 0.5:
        _coin_pocket(pen, cut, look, inset)
    _fly(pen, cut, look, (0.0, 0.009))
    _button(pen, cut, look)


def _scoop_pocket(pen: _Pen, cut: _Cut, look: _Look, side: int, inset: float, depth: float) -> None:
    x0 = cut.waist - inset
    start = np.array([side * x0, float(_top_y(cut, x0)) + cut.band])
    ctrl = np.array([side * (cut.waist - inset * 0.8), depth * 0.95])
    end = np.array([side * (float(_body_half(cut, depth)) - 0.004), depth])
    pen.line(_bezier(start, ctrl, end), _rgb(look.base * 0.42), 1.6)
    inner = _bezier(start + (-side * 0.009, 0), ctrl + (-side * 0.007, 0.008), end + (0, 0.011))
    pen.stitch(inner, look.thread)
    for x, y in (start + (side * 0.004, 0.006), end + (-side * 0.008, -0.002)):
        pen.dot(x, y, 0.006, look.metal, outline=_rgb(np.array(look.metal) * 0.6))


def _coin_pocket(pen: _Pen, cut: _Cut, look: _Look, inset: float) -> None:
    x0, x1 = -(cut.waist - inset * 0.2), -(cut.waist - inset * 0.85)
    y0, y1 = float(_top_y(cut, x0)) + cut.band + 0.002, cut.band + inset * 0.6
    pen.line([(x0, y1), (x1, y1), (x1, y0)], _rgb(look.base * 0.5))
    pen.stitch([(x0, y1 - 0.005), (x1 + 0.005, y1 - 0.005), (x1 + 0.005, y0)], look.thread)
    pen.stitch([(x0, y0 + 0.007), (x1, y0 + 0.007)], look.thread)


def _fly(pen: _Pen, cut: _Cut, look: _Look, rows: tuple[float, ...]) -> None:
    top, bottom = float(_top_y(cut, 0)) + cut.band, cut.rise - 0.075
    pen.line([(0.0, top), (0.0, cut.rise - 0.01)], _rgb(look.base * 0.45), 1.3)
    for offset in rows:
        x = 0.035 + offset
        curve = _bezier(
            np.array((x, bottom)), np.array((x, bottom + 0.05 + offset)), np.array((0.0, cut.rise - 0.02))
        )
        pen.stitch(np.concatenate([[(x, top)], curve]), look.thread)


def _button(pen: _Pen, cut: _Cut, look: _Look) -> None:
    y = float(_top_y(cut, 0)) + cut.band / 2
    if look.denim:
        pen.dot(0.0, y, cut.band * 0.34, look.metal, outline=_rgb(np.array(look.metal) * 0.55))
        pen.dot(0.0, y, cut.band * 0.12, _rgb(np.array(look.metal) * 0.75))
    else:
        pen.dot(0.0, y, cut.band * 0.22, _rgb(look.base * 0.8), outline=_rgb(look.base * 0.5))


def _front_trousers(pen: _Pen, rng: np.random.Generator, cut: _Cut, look: _Look) -> None:
    if not look.female or rng.random() < 0.55:
        inset, depth = cut.waist * rng.uniform(0.25, 0.35), cut.rise * rng.uniform(0.5, 0.6)
        for side in (-1, 1):
            x0 = cut.waist - inset
            edge = [
                (side * x0, float(_top_y(cut, x0)) + cut.band),
                (side * float(_body_half(cut, depth)), depth),
            ]
            pen.line(edge, _rgb(look.base * 0.45), 1.5)
            pen.stitch(np.array(edge) + (-side * 0.008, 0), look.thread)
    if not look.female and rng.random() < 0.35:
        for side in (-1, 1):
            x = side * cut.hip * 0.5
            pen.line([(x, cut.band + 0.005), (x * 1.02, cut.band + 0.08)], _rgb(look.base * 0.6), 1.2)
    _fly(pen, cut, look, (0.0,))
    _button(pen, cut, look)


def _back_jeans(pen: _Pen, rng: np.random.Generator, cut: _Cut, look: _Look) -> None:
    side_y = cut.rise * rng.uniform(0.28, 0.34)
    mid_y = side_y + cut.rise * (rng.uniform(0.2, 0.3) if look.female else rng.uniform(0.1, 0.16))
    half = float(_body_half(cut, side_y))
    yoke = np.array([(-half, side_y), (0.0, mid_y), (half, side_y)])
    pen.line(yoke, _rgb(look.base * 0.45), 1.3)
    for offset in (0.006, 0.013):
        pen.stitch(yoke + (0, offset), look.thread)
    pen.line([(0.0, mid_y), (0.0, cut.rise - 0.01)], _rgb(look.base * 0.45), 1.3)
    pen.stitch([(0.007, mid_y + 0.01), (0.007, cut.rise - 0.02)], look.thread)
    for side in (-1, 1):
        centre = side * cut.hip * (0.44 if look.female else 0.47)
        top = np.interp(abs(centre), [0, half], [mid_y, side_y]) + (0.03 if look.female else 0.015)
        _patch_pocket(pen, rng, cut, look, np.array((centre, top)), side)
    if not look.female or rng.random() < 0.4:
        x0, y0 = 0.05, float(_top_y(cut, 0.05)) + 0.004
        patch = [(x0, y0), (x0 + 0.08, y0), (x0 + 0.08, y0 + cut.band - 0.006), (x0, y0 + cut.band - 0.006)]
        pen.shape(patch, fill=_rgb(np.array((150, 105, 65)) * rng.uniform(0.75, 1.1)), outline=(70, 45, 30))


def _patch_pocket(pen: _Pen, rng, cut: _Cut, look: _Look, origin: np.ndarray, side: int) -> None:
    """A five-sided back pocket with an arcuate; women's are smaller and tilted outwards."""
    w = cut.hip * (0.52 if look.female else 0.6)
    h = w * rng.uniform(1.05, 1.2)
    tilt = side * math.radians(rng.uniform(4, 10) if look.female else rng.uniform(0, 3))
    rot = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
    outline = np.array([(-w / 2, 0), (w / 2, 0), (w / 2, 0.8 * h), (0, h), (-w / 2, 0.8 * h)])
    place = lambda pts: np.asarray(pts) @ rot.T + origin  # noqa: E731
    pen.shape(place(outline), outline=_rgb(look.base * 0.4))
    pen.stitch(
        place(np.vstack([outline * 0.9 + (0, 0.05 * h), outline[:1] * 0.9 + (0, 0.05 * h)])), look.thread
    )
    for s in (-1, 1):
        arc = _bezier(
            np.array((s * w * 0.36, 0.3 * h)), np.array((s * w * 0.18, 0.62 * h)), np.array((0, 0.45 * h))
        )
        pen.stitch(place(arc), look.thread)


def _back_trousers(pen: _Pen, rng: np.random.Generator, cut: _Cut, look: _Look) -> None:
    pen.line([(0.0, float(_top_y(cut, 0)) + cut.band), (0.0, cut.rise - 0.01)], _rgb(look.base * 0.5), 1.2)
    welts = 2 if not look.female else int(rng.choice([0, 1, 2], p=[0.4, 0.2, 0.4]))
    y = cut.band + cut.rise * rng.uniform(0.22, 0.3)
    for side in (-1, 1)[:welts] if welts else ():
        x0, x1 = side * cut.hip * 0.22, side * cut.hip * (0.62 if look.female else 0.72)
        pen.line([(x0, y), (x1, y)], _rgb(look.base * 0.3), 1.8)
        pen.line([(x0, y + 0.006), (x1, y + 0.006)], _rgb(np.minimum(look.base * 1.25 + 10, 255)), 0.8)
        if not look.female and rng.random() < 0.6:
            pen.dot((x0 + x1) / 2, y + 0.02, 0.007, _rgb(look.base * 0.8), outline=_rgb(look.base * 0.45))
    for side in (-1, 1):
        x = side * cut.hip * 0.45
        pen.line([(x, cut.band + 0.004), (x, y - 0.01)], _rgb(look.base * 0.7), 0.8)  # darts


def _hems(pen: _Pen, cut: _Cut, look: _Look) -> None:
    for side in (-1, 1):
        centre, width = _leg_profile(cut, 0.986)
        inner, outer = side * (centre - width / 2 + 0.004), side * (centre + width / 2 - 0.004)
        pen.stitch([(inner, 0.986), (outer, 0.986)], look.thread)
        pen.line([(inner, 0.975), (outer, 0.975)], _rgb(look.base * 0.6), 0.8)
        if not look.back:  # flat-felled inseam, topstitched twice
            ys = np.linspace(cut.rise + 0.01, 0.97, 16)
            centre, width = _leg_profile(cut, ys)
            pen.stitch(np.stack([side * (centre - width / 2 + 0.007), ys], 1), look.thread)


def _fold_leg(pen: _Pen, image: Image.Image, mask: Image.Image, rgb: np.ndarray, cut: _Cut, look: _Look):
    """Fold one leg's lower part up over its thigh: seen from behind, rounded at the fold, casting
    a shadow on the thigh."""
    side, fold_y = look.fold
    flap = _fold_flap(cut, side, fold_y)
    flap_mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(flap_mask).polygon(pen.xy(flap), fill=255)
    shadow = Image.new("L", image.size, 0)
    shadow.paste(flap_mask.point(lambda v: v // 2), (round(side * pen.k * 0.008), round(pen.k * 0.012)))
    shadow = shadow.filter(ImageFilter.GaussianBlur(pen.k * 0.008))
    image.paste(image.point(lambda v: int(v * 0.55)), (0, 0), shadow)
    rows = (np.arange(rgb.shape[0]) + 0.5) / pen.k - _TOP
    sheen = 0.78 + 0.14 * np.exp(-(((rows - fold_y + 0.004) / 0.012) ** 2))  # the rounded fold
    image.paste(Image.fromarray(_to_uint8(rgb * sheen[:, None, None])), (0, 0), flap_mask)
    mask.paste(255, (0, 0), flap_mask)
    pen.shape(flap, outline=_rgb(look.base * 0.4))
    if look.denim:
        centre, width = _leg_profile(cut, 0.986)
        hem_y = 2 * fold_y - 0.986
        pen.stitch([(side * (centre - width / 2), hem_y), (side * (centre + width / 2), hem_y)], look.thread)


def _fold_flap(cut: _Cut, side: int, fold_y: float) -> np.ndarray:
    flap = _leg_polygon(cut, side, fold_y, 1.0)
    flap[:, 1] = 2 * fold_y - flap[:, 1]
    inner, outer = flap[-1], flap[0]
    bulge = _bezier(inner, ((inner[0] + outer[0]) / 2, fold_y + 0.03), outer)
    return np.concatenate([flap, bulge[1:-1]])


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
        return _png(_garment(rng, label, int(size * 0.9)))
    photo = _photo(rng, label, size)
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


def _bezier(p0, p1, p2, n: int = 20) -> np.ndarray:
    """``n`` points along the quadratic Bezier curve from ``p0`` to ``p2`` pulled towards ``p1``."""
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


def _xy(k: float, pts) -> list[tuple[float, float]]:
    return [((float(x) + 0.5) * k, (float(y) + _TOP) * k) for x, y in pts]


def _rgb(colour) -> tuple[int, int, int]:
    r, g, b = np.clip(np.asarray(colour, dtype=np.float64), 0, 255).round().astype(int)
    return int(r), int(g), int(b)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, 0, 255).astype(np.uint8)
