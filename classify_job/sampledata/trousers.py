"""One pair of trousers or jeans as an RGBA cut-out: outline, fabric, details and an optional folded leg."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from classify_job.sampledata.cloth import fabric
from classify_job.sampledata.cut import (
    TOP,
    Cut,
    Look,
    bezier,
    body_half,
    leg_profile,
    rgb_tuple,
    sample_cut,
    sample_look,
    to_uint8,
    top_y,
)
from classify_job.sampledata.stitching import Pen, details


def _body_polygon(cut: Cut) -> np.ndarray:
    ys = np.linspace(0, cut.rise + 0.005, 20)
    half = body_half(cut, ys)
    xs = np.linspace(cut.waist, -cut.waist, 15)
    sides = [np.stack([-half, ys], 1), np.stack([half, ys], 1)[::-1]]
    return np.concatenate([*sides, np.stack([xs, top_y(cut, xs)], 1)])


def _leg_polygon(cut: Cut, side: int, y0: float, y1: float) -> np.ndarray:
    ys = np.linspace(y0, y1, 24)
    centre, width = leg_profile(cut, ys)
    outer, inner = side * (centre + width / 2), side * (centre - width / 2)
    return np.concatenate([np.stack([outer, ys], 1), np.stack([inner, ys], 1)[::-1]])


def _silhouette(cut: Cut, look: Look) -> list[np.ndarray]:
    ends = {-1: 1.0, 1: 1.0}
    if look.fold:
        ends[look.fold[0]] = look.fold[1]
    return [_body_polygon(cut)] + [_leg_polygon(cut, s, cut.rise - 0.01, ends[s]) for s in (-1, 1)]


def draw_trousers(rng: np.random.Generator, label: str, height: int) -> Image.Image:
    """An RGBA cut-out ``height`` pixels tall (plus a small margin)."""
    look = sample_look(rng, label)
    cut = sample_cut(rng, label, look.back)
    k = 2 * height / (1 + 2 * TOP)  # drawn at twice the size and halved, for smooth edges
    rgb = fabric(rng, cut, look, k)
    image = Image.fromarray(to_uint8(rgb))
    mask = Image.new("L", image.size, 0)
    pen = Pen(ImageDraw.Draw(image), ImageDraw.Draw(mask), k)
    for outline in _silhouette(cut, look):
        pen.mask.polygon(pen.xy(outline), fill=255)
    details(pen, rng, cut, look)
    if look.fold:
        _fold_leg(pen, image, mask, rgb, cut, look)
    image.putalpha(mask)
    return image.reduce(2)


def _fold_leg(pen: Pen, image: Image.Image, mask: Image.Image, rgb: np.ndarray, cut: Cut, look: Look):
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
    rows = (np.arange(rgb.shape[0]) + 0.5) / pen.k - TOP
    sheen = 0.78 + 0.14 * np.exp(-(((rows - fold_y + 0.004) / 0.012) ** 2))  # the rounded fold
    image.paste(Image.fromarray(to_uint8(rgb * sheen[:, None, None])), (0, 0), flap_mask)
    mask.paste(255, (0, 0), flap_mask)
    pen.shape(flap, outline=rgb_tuple(look.base * 0.4))
    if look.denim:
        centre, width = leg_profile(cut, 0.986)
        hem_y = 2 * fold_y - 0.986
        pen.stitch([(side * (centre - width / 2), hem_y), (side * (centre + width / 2), hem_y)], look.thread)


def _fold_flap(cut: Cut, side: int, fold_y: float) -> np.ndarray:
    flap = _leg_polygon(cut, side, fold_y, 1.0)
    flap[:, 1] = 2 * fold_y - flap[:, 1]
    inner, outer = flap[-1], flap[0]
    bulge = bezier(inner, ((inner[0] + outer[0]) / 2, fold_y + 0.03), outer)
    return np.concatenate([flap, bulge[1:-1]])
