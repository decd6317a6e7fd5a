"""Garments that are none of the four sample classes: skirts, shirts and shoes as RGBA cut-outs.

They are photographed like the trousers (same backdrops, lighting and framing) so that a model can
tell them apart only by what they are. A classifier trained on the four classes has never seen
them: they test its "none of these" answer.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from classify_job.sampledata.cut import bezier, pick_weighted, rgb_tuple, smooth_noise, to_uint8

OTHER_KINDS = ("skirt", "shirt", "shoe")

_COLOURS = {
    (30, 32, 38): 0.15,
    (235, 232, 225): 0.12,
    (150, 30, 40): 0.08,
    (40, 60, 110): 0.12,
    (200, 170, 120): 0.1,
    (90, 100, 60): 0.08,
    (120, 70, 40): 0.1,
    (220, 150, 160): 0.07,
    (110, 110, 115): 0.1,
    (60, 120, 150): 0.08,
}


def draw_other(rng: np.random.Generator, kind: str, height: int) -> Image.Image:
    """An RGBA cut-out of a ``kind`` (one of :data:`OTHER_KINDS`) about ``height`` pixels tall."""
    k = 2 * height  # drawn at twice the size and halved, for smooth edges
    base = pick_weighted(rng, _COLOURS) * rng.uniform(0.85, 1.15)
    image = Image.fromarray(_cloth(rng, base, k))
    mask = Image.new("L", image.size, 0)
    draw, cut = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    shapes, lines = _DRAWERS[kind](rng)
    xy = lambda pts: [((x + 0.5) * k, y * k) for x, y in pts]  # noqa: E731
    for shape in shapes:
        cut.polygon(xy(shape), fill=255)
    edge = rgb_tuple(base * 0.55)
    for line in lines:
        draw.line(xy(line), fill=edge, width=max(1, round(k * 0.006)))
    image.putalpha(mask)
    return image.reduce(2)


def _cloth(rng: np.random.Generator, base: np.ndarray, k: int) -> np.ndarray:
    shade = 0.85 + 0.25 * smooth_noise(rng, (k, k), int(rng.integers(3, 7)))
    grain = 1 + 0.04 * (rng.random((k, k), dtype=np.float32) - 0.5)
    return to_uint8(base * (shade * grain)[..., None])


def _skirt(rng: np.random.Generator) -> tuple[list, list]:
    waist, length = rng.uniform(0.13, 0.18), rng.uniform(0.55, 0.95)
    hem = waist * (rng.uniform(1.05, 1.3) if rng.random() < 0.35 else rng.uniform(1.6, 2.6))
    top, bottom = 0.04, 0.04 + length
    flare = bezier((-hem, bottom), (0, bottom + rng.uniform(0.0, 0.06)), (hem, bottom))
    outline = [(-waist, top), (waist, top), *flare[::-1]]
    band = [(-waist, top + 0.05), (waist, top + 0.05)]
    pleats = int(rng.integers(0, 9))
    lines = [band] + [
        [(-waist + 2 * waist * t, top + 0.05), (-hem + 2 * hem * t, bottom)]
        for t in np.linspace(0, 1, pleats + 2)[1:-1]
    ]
    return [outline], lines


def _shirt(rng: np.random.Generator) -> tuple[list, list]:
    shoulder, body = rng.uniform(0.22, 0.28), rng.uniform(0.7, 0.9)
    sleeve = rng.uniform(0.25, 0.35) if rng.random() < 0.5 else rng.uniform(0.6, 0.8)
    top, bottom = 0.08, 0.08 + body
    torso = [(-shoulder, top), (-0.06, top - 0.02), (0.06, top - 0.02), (shoulder, top),
             (shoulder * 0.95, bottom), (-shoulder * 0.95, bottom)]  # fmt: skip
    arms = [
        [(s * shoulder, top), (s * (shoulder + sleeve * 0.45), top + sleeve),
         (s * (shoulder + sleeve * 0.45 - 0.11), top + sleeve + 0.03), (s * shoulder * 0.93, top + 0.2)]
        for s in (-1, 1)
    ]  # fmt: skip
    collar = [(-0.06, top - 0.02), (0, top + 0.12), (0.06, top - 0.02)]
    buttons = [[(0, y), (0.004, y + 0.004)] for y in np.linspace(top + 0.16, bottom - 0.05, 6)]
    return [torso, *arms], [collar, [(0, top + 0.12), (0, bottom)], *buttons]


def _shoe(rng: np.random.Generator) -> tuple[list, list]:
    boot = rng.random() < 0.4  # ankle boot, else a low shoe
    collar = rng.uniform(0.12, 0.25) if boot else rng.uniform(0.38, 0.46)
    heel, toe, sole = -0.42, 0.46, rng.uniform(0.7, 0.78)
    back = bezier((heel, sole), (heel - 0.06, (sole + collar) / 2), (heel + 0.03, collar), 12)
    instep = (rng.uniform(-0.08, 0.02), sole - rng.uniform(0.26, 0.32))
    shaft = [(instep[0] - 0.12, collar), instep] if boot else [(instep[0] - 0.1, instep[1])]
    vamp = bezier(instep, (0.3, sole - rng.uniform(0.2, 0.26)), (toe - 0.03, sole - 0.11), 16)
    nose = bezier((toe - 0.03, sole - 0.11), (toe + 0.03, sole - 0.07), (toe, sole), 6)
    upper = [*back, *shaft, *vamp, *nose[1:]]
    outsole = [(heel, sole), (toe, sole), (toe - 0.01, sole + 0.05), (heel + 0.01, sole + 0.05)]
    laces = [[tuple(p - (0.025, 0.03)), tuple(p + (0.025, 0.03))] for p in vamp[1:8:2]]
    return [upper, outsole], [[(heel, sole), (toe, sole)], *(laces if rng.random() < 0.7 else [])]


_DRAWERS = {"skirt": _skirt, "shirt": _shirt, "shoe": _shoe}
