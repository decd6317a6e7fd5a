"""What the benchmarks share: the machine's description, cached test trees and bundles, and a
whole-process classify run measured from outside (wall time, peak RSS, time to first batch)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bench"  # git-ignored; trees and bundles are made once and reused
CLASSIFY_JOB = [sys.executable, "-m", "classify_job"]


def machine() -> dict:
    """The processor and load, so figures are compared only with figures from the same machine."""
    model = next(
        (line.split(":", 1)[1].strip() for line in _lscpu().splitlines() if line.startswith("Model name")),
        platform.processor(),
    )
    return {"cpu": model, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def _lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


RENDERED = 480  # photos rendered per tree (2-7 s each on 2 cores); the rest are re-encoded variants


def camera_tree(count: int, width: int = 1000, height: int = 1200) -> Path:
    """``count`` product photos as ``width`` x ``height`` JPEGs (the four sample classes): the first
    :data:`RENDERED` rendered, the others re-encodings of those (mirrored, re-toned, another JPEG
    quality), each file distinct and as costly to decode, so a 2,000-image tree takes a minute to
    make instead of most of an hour."""
    directory = DATA / f"jpegs-{width}x{height}-{count}"
    if (directory / ".complete").is_file():
        return directory
    if count > RENDERED:  # the rendered photos come from the smaller tree (made once, cached)
        done = shutil.ignore_patterns(".complete")
        shutil.copytree(camera_tree(RENDERED, width, height), directory, dirs_exist_ok=True, ignore=done)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_variant, [directory] * (count - RENDERED), range(RENDERED, count)))
    else:
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_camera_photo, [directory] * count, range(count), [(width, height)] * count))
    (directory / ".complete").write_text("ok\n")
    return directory


def _photo_path(directory: Path, index: int) -> Path:
    from classify_job.sampledata.photos import CLASSES

    return directory / CLASSES[index % len(CLASSES)] / f"{index:05d}.jpg"


def _variant(directory: Path, index: int) -> None:
    """Photo ``index`` as a variant of rendered photo ``index % RENDERED`` (the same class)."""
    from PIL import Image, ImageEnhance, ImageOps

    round_ = index // RENDERED
    with Image.open(_photo_path(directory, index % RENDERED)) as source:
        photo = ImageOps.mirror(source) if round_ % 2 else source.copy()
    photo = ImageEnhance.Brightness(photo).enhance(1.0 + 0.04 * round_)
    photo.save(_photo_path(directory, index), quality=88 + round_)


def _camera_photo(directory: Path, index: int, size: tuple[int, int]) -> None:
    import io

    from PIL import Image

    from classify_job.sampledata.photos import CLASSES, render_photo

    label, side = CLASSES[index % len(CLASSES)], max(size)
    with Image.open(io.BytesIO(render_photo(label, index, seed=7, image_size=side))) as photo:
        left, top = (side - size[0]) // 2, (side - size[1]) // 2
        photo = photo.crop((left, top, left + size[0], top + size[1]))
        path = _photo_path(directory, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.save(path, quality=90)


def lite0_bundle() -> Path:
    """A 4-class EfficientNet-Lite0 bundle: ImageNet backbone, untrained head (speed does not
    depend on the head's weights)."""
    directory = DATA / "lite0-4class"
    if not (directory / "bundle.json").is_file():
        _run_python(
            "from classify_job.bundle import BundleSpec, save_bundle\n"
            "from classify_job.nets.efficientnet_lite import build_classifier\n"
            "from classify_job.nets.pretrained import pretrained_backbone\n"
            "from classify_job.sampledata.photos import CLASSES\n"
            "model = build_classifier(pretrained_backbone(224), len(CLASSES))\n"
            "spec = BundleSpec(tuple(CLASSES), (224, 224), 'rgb', 'efficientnet_lite0')\n"
            f"save_bundle({str(directory)!r}, model, spec)\n"
        )
    return directory


def fashion_subset(
    root: Path,
    train_per_class: int,
    test_per_class: int | None,
    seed: int = 0,
    classes: tuple[str, ...] | None = None,
) -> Path:
    """A stratified random subset of the official Fashion-MNIST splits as ``train/`` and ``test/``
    PNG folders (``test_per_class=None``: every test image of those classes); cached under ``root``."""
    import numpy as np
    from PIL import Image

    from classify_job.sampledata import fashion_mnist

    classes = classes or fashion_mnist.CLASSES
    marker = root / ".complete"
    wanted = f"{train_per_class} {test_per_class} {seed} {','.join(classes)}"
    if marker.is_file() and marker.read_text() == wanted:
        return root
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = fashion_mnist.load_split(split)
        chosen = [
            i
            for c in (fashion_mnist.CLASSES.index(name) for name in classes)
            for i in (
                np.flatnonzero(labels == c)
                if per_class is None
                else rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
            )
        ]
        paths = [root / split / fashion_mnist.CLASSES[labels[i]] / f"{i:05d}.png" for i in chosen]
        for path in {p.parent for p in paths}:
            path.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p, pixels: Image.fromarray(pixels).save(p), paths, images[chosen]))
    marker.write_text(wanted)
    return root


def tiny_bundle() -> Path:
    """A small CNN at 16x16: for measuring the walk, resume and output rather than a model."""
    directory = DATA / "tiny-cnn"
    if not (directory / "bundle.json").is_file():
        _run_python(
            "from classify_job.bundle import BundleSpec, save_bundle\n"
            "from classify_job.nets.cnn import cnn\n"
            "model = cnn(4, (16, 16), 3, top_width=32)\n"
            "spec = BundleSpec(('a', 'b', 'c', 'd'), (16, 16), 'rgb', 'cnn')\n"
            f"save_bundle({str(directory)!r}, model, spec)\n"
        )
    return directory


def _run_python(code: str) -> None:
    subprocess.run([sys.executable, "-c", "import classify_job\n" + code], check=True, cwd=ROOT)


def classify(tree: Path, bundle: Path, out: Path, *options: str, env: dict | None = None) -> dict:
    """One whole ``classify-job classify`` process: wall seconds, peak RSS (MiB, as the run measured
    it: see :func:`classify_job.runtime.peak_rss_mib`), and the run's facts
    (``launch_to_first_batch_s`` from process start to the first finished batch)."""
    command = [*CLASSIFY_JOB, "classify", str(tree), "--model", str(bundle), "--out", str(out), *options]
    launched = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"classify failed: {stderr[-2000:]}")
    facts = json.loads(max((out / "runs").glob("*.json")).read_text())
    first = facts["timings"].get("first_batch_at")
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mib": facts.get("peak_rss_mib"),
        "launch_to_first_batch_s": round(first - launched, 3) if first else None,
        "facts": facts,
    }
