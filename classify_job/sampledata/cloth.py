"""The fabric of a garment: denim twill with fades and whiskers, or smooth cloth; shading and wrinkles."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from classify_job.sampledata.cut import (
    TOP,
    Cut,
    Look,
    bezier,
    body_half,
    leg_profile,
    smooth_noise,
    to_pixels,
    top_y,
)


def fabric(rng: np.random.Generator, cut: Cut, look: Look, k: float) -> np.ndarray:
    w, h = round(k), round(k * (1 + 2 * TOP))
    x = ((np.arange(w, dtype=np.float32) + 0.5) / k - 0.5)[None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / k - TOP)[:, None]
    u_leg, u = _leg_coords(cut, x, y)
    t = _denim_weave(rng, (h, w), k) if look.denim else _cloth_weave(rng, (h, w), k)
    rgb = look.base + (look.light - look.base) * t[..., None]
    if look.denim:
        rgb += (look.light - rgb) * _fades(rng, cut, look, x, y, u_leg, k)[..., None]
    return rgb * _shading(rng, cut, look, x, y, u_leg, u)[..., None]


def _leg_coords(cut: Cut, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Across-leg position (-1 inner edge .. 1 outer edge), and across the body above the crotch."""
    centre, width = leg_profile(cut, y)
    u_leg = ((np.abs(x) - centre) / (width / 2)).astype(np.float32)
    return u_leg, np.where(y < cut.rise, x / body_half(cut, y), u_leg).astype(np.float32)


def _denim_weave(rng: np.random.Generator, shape: tuple[int, int], k: float) -> np.ndarray:
    h, w = shape
    spacing = max(5.0, k / 130)  # pixels between twill lines, never finer than the halved image shows
    yy, xx = np.ogrid[0:h, 0:w]
    phase = (2 * xx + yy).astype(np.float32) * (2 * math.pi / (math.sqrt(5) * spacing))
    slub = np.convolve(rng.standard_normal(w), np.ones(3) / 3, "same").astype(np.float32)[None, :]
    streaks = smooth_noise(rng, shape, max(12, w // 8), 4) - 0.5
    twill = np.clip(1.8 * np.sin(phase + 1.5 * streaks), -1, 1) * 0.5 + 0.5
    return 0.1 + 0.15 * twill + 0.05 * slub + 0.1 * streaks + 0.08 * rng.random(shape, np.float32)


def _cloth_weave(rng: np.random.Generator, shape: tuple[int, int], k: float) -> np.ndarray:
    kind = rng.choice(4, p=[0.45, 0.25, 0.1, 0.2])  # plain, chino twill, pinstripe, heather
    fine = rng.random(shape, np.float32)
    t = 0.04 * fine + rng.uniform(0.03, 0.2) * smooth_noise(rng, shape, 6)  # washed-out patches
    yy, xx = np.ogrid[0 : shape[0], 0 : shape[1]]
    if kind == 1:  # same-colour yarns, so the twill is faint unlike denim's white weft
        t = t + 0.04 * np.sin((xx + yy).astype(np.float32) * (2 * math.pi / max(4.0, k / 160)))
    elif kind == 2:
        t = t + 0.45 * (xx % max(6, int(k * 0.035)) < max(1, int(k * 0.002)))
    elif kind == 3:  # heather or chambray: pale yarns through the colour, but no diagonal
        t = t + rng.uniform(0.1, 0.35) * fine
    return t.astype(np.float32)


def _fades(rng, cut: Cut, look: Look, x, y, u_leg, k: float) -> np.ndarray:
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
    mottle = smooth_noise(rng, fade.shape, 8) - 0.5
    return np.clip(rng.uniform(0.15, 0.6) * fade + 0.15 * mottle, 0, 0.85)


def _whiskers(rng: np.random.Generator, cut: Cut, shape: tuple[int, int], k: float) -> np.ndarray:
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
            curve = bezier(np.array((x0, y0)), np.array(bend), np.array(end))
            draw.line(to_pixels(k, curve), fill=int(rng.uniform(120, 255)), width=max(1, int(k * 0.006)))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(k * 0.004)), np.float32) / 255 * 0.8


def _shading(rng, cut: Cut, look: Look, x, y, u_leg, u) -> np.ndarray:
    shade = 1 - rng.uniform(0.12, 0.28) * np.clip(np.abs(u), 0, 1.3) ** 3
    shade = shade - 0.05 * (y < top_y(cut, x) + cut.band)  # the double-layer waistband
    if not look.denim:
        ridge = 0.1 * np.exp(-((u_leg / 0.04) ** 2)) - 0.06 * np.exp(-(((u_leg + 0.1) / 0.07) ** 2))
        shade = shade + ridge * np.clip((y - cut.hip_y) / 0.1, 0, 1)  # pressed creases
    return shade + _wrinkles(rng, cut, x, y, u_leg)


def _wrinkles(rng: np.random.Generator, cut: Cut, x, y, u_leg) -> np.ndarray:
    out = np.zeros(u_leg.shape, np.float32)
    for _ in range(rng.integers(2, 7)):
        side, y0, slope = rng.choice([-1, 1]), rng.uniform(cut.rise + 0.05, 0.98), rng.uniform(-0.06, 0.06)
        width, depth = rng.uniform(0.004, 0.012), rng.uniform(-0.08, 0.05)
        lo, hi = np.searchsorted(y[:, 0], [y0 - 0.1, y0 + 0.1])  # only rows the fold can reach
        u = u_leg[lo:hi]
        band = np.exp(-(((y[lo:hi] - y0 - slope * u) / width) ** 2))
        out[lo:hi] += depth * band * (np.sign(x) == side) * np.exp(-(u**2))
    return out
