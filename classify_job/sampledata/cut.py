"""Trouser geometry in garment units (height 1 from waistband to hem, x = 0 at the fly): the cut and
look of one garment drawn at random for its class, the outline's curves, and units to pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

TOP = 0.03  # canvas margin above the waistband, in garment heights

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


def pick_weighted(rng: np.random.Generator, weighted: dict) -> np.ndarray:
    colours = list(weighted)
    p = np.array(list(weighted.values()))
    return np.array(colours[rng.choice(len(colours), p=p / p.sum())], np.float32)


@dataclass(frozen=True)
class Cut:
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
class Look:
    denim: bool
    female: bool
    back: bool
    base: np.ndarray  # fabric colour
    light: np.ndarray  # weft and faded colour for denim, sheen for cloth
    thread: tuple[int, int, int]
    metal: tuple[int, int, int]
    fold: tuple[int, float] | None  # (side, fold line y) when one leg is folded up


def sample_cut(rng: np.random.Generator, label: str, back: bool) -> Cut:
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
    return Cut(
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


def sample_look(rng: np.random.Generator, label: str) -> Look:
    denim = label.endswith("jeans")
    base = pick_weighted(rng, _DENIM if denim else _CLOTH) * rng.uniform(0.88, 1.12)
    base = np.clip(base * (1 + rng.normal(0, 0.04, 3)), 0, 255).astype(np.float32)
    blue = base[2] > base[0] + 15
    light = base + (np.array([210, 218, 232] if blue else [200, 200, 196]) - base) * (0.65 if denim else 0.35)
    if denim:
        thread = (
            rgb_tuple(pick_weighted(rng, _THREADS))
            if blue or rng.random() < 0.5
            else rgb_tuple(base * 0.7 + 40)
        )
    else:
        thread = rgb_tuple(base * 0.78)
    fold = (int(rng.choice([-1, 1])), rng.uniform(0.66, 0.8)) if rng.random() < 0.1 else None
    metal = _METALS[rng.integers(len(_METALS))]
    female, back = label.startswith("female"), rng.random() < 0.3
    return Look(denim, female, back, base, light.astype(np.float32), thread, metal, fold)


def top_y(cut: Cut, x):
    return cut.dip * (1 - np.clip(np.asarray(x) / cut.waist, -1, 1) ** 2)


def body_half(cut: Cut, y):
    return cut.waist + (cut.hip - cut.waist) * np.sin(np.pi / 2 * np.clip(np.asarray(y) / cut.hip_y, 0, 1))


def leg_profile(cut: Cut, y):
    """Centre (distance from x = 0) and width of a leg at height ``y``."""
    t = np.clip((np.asarray(y) - cut.rise) / (1 - cut.rise), 0, 1)
    width = np.interp(y, [cut.rise, cut.knee_y, 1.0], [cut.hip, cut.knee, cut.hem])
    return cut.hip / 2 + (cut.gap + cut.hem / 2 - cut.hip / 2) * t, width


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, rows: int = 0) -> np.ndarray:
    """Bicubic-upsampled random grid: ``cells`` across, ``rows`` down (``cells`` if 0)."""
    coarse = Image.fromarray(rng.random((rows or cells, cells), dtype=np.float32), mode="F")
    return np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def bezier(p0, p1, p2, n: int = 20) -> np.ndarray:
    """``n`` points along the quadratic Bezier curve from ``p0`` to ``p2`` pulled towards ``p1``."""
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


def to_pixels(k: float, pts) -> list[tuple[float, float]]:
    return [((float(x) + 0.5) * k, (float(y) + TOP) * k) for x, y in pts]


def rgb_tuple(colour) -> tuple[int, int, int]:
    r, g, b = np.clip(np.asarray(colour, dtype=np.float64), 0, 255).round().astype(int)
    return int(r), int(g), int(b)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, 0, 255).astype(np.uint8)
