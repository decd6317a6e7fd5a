"""Small test helpers shared by the test packages (fixtures live in conftest.py)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_image(
    path: Path, color: tuple[int, int, int], size: tuple[int, int] = (24, 20), fmt: str | None = None
) -> Path:
    """A small noisy image of a dominant colour (format from the suffix unless ``fmt``).

    The noise is seeded by the file name (CRC-32, not Python's salted ``hash``), so the same name
    gives the same pixels in every run.
    """
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    base = np.array(color, dtype=np.int16)
    pixels = np.clip(base + rng.integers(-20, 20, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def colour_folder(root: Path, per_class: int) -> Path:
    """``root/<colour>/<colour>_NNN.png``, ``per_class`` images for each of :data:`COLORS`."""
    for name, color in COLORS.items():
        for i in range(per_class):
            write_image(root / name / f"{name}_{i:03d}.png", color)
    return root


def break_int8_graph(monkeypatch) -> None:
    """Make the int8 graph get every image wrong (its probabilities rolled by one class), so its
    gate must refuse it; the float graphs answer as before."""
    from classify_job.train import int8_export

    outputs = int8_export.graph_outputs

    def broken(path, pixels, batch=32):
        probs, features = outputs(path, pixels, batch)
        return (
            (np.roll(probs, 1, axis=1), features)
            if Path(path).name == "model.int8.onnx"
            else (probs, features)
        )

    monkeypatch.setattr(int8_export, "graph_outputs", broken)
