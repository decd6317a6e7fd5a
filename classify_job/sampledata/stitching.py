"""Construction details drawn on the fabric: waistband, belt loops, pockets, fly, rivets, hems."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from classify_job.sampledata.cut import Cut, Look, bezier, body_half, leg_profile, rgb_tuple, to_pixels, top_y


@dataclass(frozen=True)
class Pen:
    """Draws in garment units on the fabric image; ``mask`` receives parts that widen the outline."""

    image: ImageDraw.ImageDraw
    mask: ImageDraw.ImageDraw
    k: float

    def xy(self, pts) -> list[tuple[float, float]]:
        return to_pixels(self.k, pts)

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


def details(pen: Pen, rng: np.random.Generator, cut: Cut, look: Look) -> None:
    _waistband(pen, cut, look)
    if look.back:
        (_back_jeans if look.denim else _back_trousers)(pen, rng, cut, look)
    else:
        (_front_jeans if look.denim else _front_trousers)(pen, rng, cut, look)
    _belt_loops(pen, rng, cut, look)
    if look.denim:
        _hems(pen, cut, look)


def _waistband(pen: Pen, cut: Cut, look: Look) -> None:
    half = float(body_half(cut, cut.band))
    xs = np.linspace(-half, half, 20)
    pen.line(np.stack([xs, top_y(cut, xs) + cut.band], 1), rgb_tuple(look.base * 0.5))
    for row in (0.25, 0.75) if look.denim else (0.8,):
        pen.stitch(np.stack([xs * 0.98, top_y(cut, xs) + cut.band * row], 1), look.thread)


def _belt_loops(pen: Pen, rng: np.random.Generator, cut: Cut, look: Look) -> None:
    if look.female and not look.denim and rng.random() < 0.4:
        return
    spots = (0.0, 0.62) if look.back else (0.55, 0.96)
    for x in sorted({side * cut.waist * f for side in (-1, 1) for f in spots}):
        top, bottom = float(top_y(cut, x)) - 0.006, float(top_y(cut, x)) + cut.band + 0.016
        loop = [(x - 0.009, top), (x + 0.009, top), (x + 0.009, bottom), (x - 0.009, bottom)]
        pen.shape(loop, outline=rgb_tuple(look.base * 0.55), widen=True)
        if look.denim:  # bar tacks
            for y in (top + 0.005, bottom - 0.005):
                pen.line([(x - 0.007, y), (x + 0.007, y)], look.thread, 1.5)


def _front_jeans(pen: Pen, rng: np.random.Generator, cut: Cut, look: Look) -> None:
    inset = cut.waist * rng.uniform(0.42, 0.52)
    depth = cut.rise * rng.uniform(0.38, 0.46)
    for side in (-1, 1):
        _scoop_pocket(pen, cut, look, side, inset, depth)
    if not look.female or rng.random() < 0.5:
        _coin_pocket(pen, cut, look, inset)
    _fly(pen, cut, look, (0.0, 0.009))
    _button(pen, cut, look)


def _scoop_pocket(pen: Pen, cut: Cut, look: Look, side: int, inset: float, depth: float) -> None:
    x0 = cut.waist - inset
    start = np.array([side * x0, float(top_y(cut, x0)) + cut.band])
    ctrl = np.array([side * (cut.waist - inset * 0.8), depth * 0.95])
    end = np.array([side * (float(body_half(cut, depth)) - 0.004), depth])
    pen.line(bezier(start, ctrl, end), rgb_tuple(look.base * 0.42), 1.6)
    inner = bezier(start + (-side * 0.009, 0), ctrl + (-side * 0.007, 0.008), end + (0, 0.011))
    pen.stitch(inner, look.thread)
    for x, y in (start + (side * 0.004, 0.006), end + (-side * 0.008, -0.002)):
        pen.dot(x, y, 0.006, look.metal, outline=rgb_tuple(np.array(look.metal) * 0.6))


def _coin_pocket(pen: Pen, cut: Cut, look: Look, inset: float) -> None:
    x0, x1 = -(cut.waist - inset * 0.2), -(cut.waist - inset * 0.85)
    y0, y1 = float(top_y(cut, x0)) + cut.band + 0.002, cut.band + inset * 0.6
    pen.line([(x0, y1), (x1, y1), (x1, y0)], rgb_tuple(look.base * 0.5))
    pen.stitch([(x0, y1 - 0.005), (x1 + 0.005, y1 - 0.005), (x1 + 0.005, y0)], look.thread)
    pen.stitch([(x0, y0 + 0.007), (x1, y0 + 0.007)], look.thread)


def _fly(pen: Pen, cut: Cut, look: Look, rows: tuple[float, ...]) -> None:
    top, bottom = float(top_y(cut, 0)) + cut.band, cut.rise - 0.075
    pen.line([(0.0, top), (0.0, cut.rise - 0.01)], rgb_tuple(look.base * 0.45), 1.3)
    for offset in rows:
        x = 0.035 + offset
        curve = bezier(
            np.array((x, bottom)), np.array((x, bottom + 0.05 + offset)), np.array((0.0, cut.rise - 0.02))
        )
        pen.stitch(np.concatenate([[(x, top)], curve]), look.thread)


def _button(pen: Pen, cut: Cut, look: Look) -> None:
    y = float(top_y(cut, 0)) + cut.band / 2
    if look.denim:
        pen.dot(0.0, y, cut.band * 0.34, look.metal, outline=rgb_tuple(np.array(look.metal) * 0.55))
        pen.dot(0.0, y, cut.band * 0.12, rgb_tuple(np.array(look.metal) * 0.75))
    else:
        pen.dot(0.0, y, cut.band * 0.22, rgb_tuple(look.base * 0.8), outline=rgb_tuple(look.base * 0.5))


def _front_trousers(pen: Pen, rng: np.random.Generator, cut: Cut, look: Look) -> None:
    if not look.female or rng.random() < 0.55:
        inset, depth = cut.waist * rng.uniform(0.25, 0.35), cut.rise * rng.uniform(0.5, 0.6)
        for side in (-1, 1):
            x0 = cut.waist - inset
            edge = [
                (side * x0, float(top_y(cut, x0)) + cut.band),
                (side * float(body_half(cut, depth)), depth),
            ]
            pen.line(edge, rgb_tuple(look.base * 0.45), 1.5)
            pen.stitch(np.array(edge) + (-side * 0.008, 0), look.thread)
    if not look.female and rng.random() < 0.35:
        for side in (-1, 1):
            x = side * cut.hip * 0.5
            pen.line([(x, cut.band + 0.005), (x * 1.02, cut.band + 0.08)], rgb_tuple(look.base * 0.6), 1.2)
    _fly(pen, cut, look, (0.0,))
    _button(pen, cut, look)


def _back_jeans(pen: Pen, rng: np.random.Generator, cut: Cut, look: Look) -> None:
    side_y = cut.rise * rng.uniform(0.28, 0.34)
    mid_y = side_y + cut.rise * (rng.uniform(0.2, 0.3) if look.female else rng.uniform(0.1, 0.16))
    half = float(body_half(cut, side_y))
    yoke = np.array([(-half, side_y), (0.0, mid_y), (half, side_y)])
    pen.line(yoke, rgb_tuple(look.base * 0.45), 1.3)
    for offset in (0.006, 0.013):
        pen.stitch(yoke + (0, offset), look.thread)
    pen.line([(0.0, mid_y), (0.0, cut.rise - 0.01)], rgb_tuple(look.base * 0.45), 1.3)
    pen.stitch([(0.007, mid_y + 0.01), (0.007, cut.rise - 0.02)], look.thread)
    for side in (-1, 1):
        centre = side * cut.hip * (0.44 if look.female else 0.47)
        top = np.interp(abs(centre), [0, half], [mid_y, side_y]) + (0.03 if look.female else 0.015)
        _patch_pocket(pen, rng, cut, look, np.array((centre, top)), side)
    if not look.female or rng.random() < 0.4:
        x0, y0 = 0.05, float(top_y(cut, 0.05)) + 0.004
        patch = [(x0, y0), (x0 + 0.08, y0), (x0 + 0.08, y0 + cut.band - 0.006), (x0, y0 + cut.band - 0.006)]
        pen.shape(
            patch, fill=rgb_tuple(np.array((150, 105, 65)) * rng.uniform(0.75, 1.1)), outline=(70, 45, 30)
        )


def _patch_pocket(pen: Pen, rng, cut: Cut, look: Look, origin: np.ndarray, side: int) -> None:
    """A five-sided back pocket with an arcuate; women's are smaller and tilted outwards."""
    w = cut.hip * (0.52 if look.female else 0.6)
    h = w * rng.uniform(1.05, 1.2)
    tilt = side * math.radians(rng.uniform(4, 10) if look.female else rng.uniform(0, 3))
    rot = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
    outline = np.array([(-w / 2, 0), (w / 2, 0), (w / 2, 0.8 * h), (0, h), (-w / 2, 0.8 * h)])
    place = lambda pts: np.asarray(pts) @ rot.T + origin  # noqa: E731
    pen.shape(place(outline), outline=rgb_tuple(look.base * 0.4))
    pen.stitch(
        place(np.vstack([outline * 0.9 + (0, 0.05 * h), outline[:1] * 0.9 + (0, 0.05 * h)])), look.thread
    )
    for s in (-1, 1):
        arc = bezier(
            np.array((s * w * 0.36, 0.3 * h)), np.array((s * w * 0.18, 0.62 * h)), np.array((0, 0.45 * h))
        )
        pen.stitch(place(arc), look.thread)


def _back_trousers(pen: Pen, rng: np.random.Generator, cut: Cut, look: Look) -> None:
    pen.line(
        [(0.0, float(top_y(cut, 0)) + cut.band), (0.0, cut.rise - 0.01)], rgb_tuple(look.base * 0.5), 1.2
    )
    welts = 2 if not look.female else int(rng.choice([0, 1, 2], p=[0.4, 0.2, 0.4]))
    y = cut.band + cut.rise * rng.uniform(0.22, 0.3)
    for side in (-1, 1)[:welts] if welts else ():
        x0, x1 = side * cut.hip * 0.22, side * cut.hip * (0.62 if look.female else 0.72)
        pen.line([(x0, y), (x1, y)], rgb_tuple(look.base * 0.3), 1.8)
        pen.line([(x0, y + 0.006), (x1, y + 0.006)], rgb_tuple(np.minimum(look.base * 1.25 + 10, 255)), 0.8)
        if not look.female and rng.random() < 0.6:
            pen.dot(
                (x0 + x1) / 2,
                y + 0.02,
                0.007,
                rgb_tuple(look.base * 0.8),
                outline=rgb_tuple(look.base * 0.45),
            )
    for side in (-1, 1):
        x = side * cut.hip * 0.45
        pen.line([(x, cut.band + 0.004), (x, y - 0.01)], rgb_tuple(look.base * 0.7), 0.8)  # darts


def _hems(pen: Pen, cut: Cut, look: Look) -> None:
    for side in (-1, 1):
        centre, width = leg_profile(cut, 0.986)
        inner, outer = side * (centre - width / 2 + 0.004), side * (centre + width / 2 - 0.004)
        pen.stitch([(inner, 0.986), (outer, 0.986)], look.thread)
        pen.line([(inner, 0.975), (outer, 0.975)], rgb_tuple(look.base * 0.6), 0.8)
        if not look.back:  # flat-felled inseam, topstitched twice
            ys = np.linspace(cut.rise + 0.01, 0.97, 16)
            centre, width = leg_profile(cut, ys)
            pen.stitch(np.stack([side * (centre - width / 2 + 0.007), ys], 1), look.thread)
