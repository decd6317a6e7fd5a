"""Scale and start-up of the classify job: decode, model and end-to-end rates; memory and no-op
reruns at 10k and 100k files; time from launch to the first batch, cold and warm.

    make bench-scale     # or: .venv/bin/python benchmarks/bench_scale.py [--camera 480 --repeats 3]

Trees and bundles are made once under data/bench/ (the 100k-file tree is hard links of one small
PNG, so it costs seconds, not gigabytes). The 10k/100k figures use a small CNN at 16x16: they
measure the walk, resume and output, not the model. Prints JSON. Expected runtime: ~15 min.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import DATA, camera_tree, classify, lite0_bundle, machine, tiny_bundle

import classify_job
from classify_job.imageio import load_image


def link_tree(count: int) -> Path:
    """``count`` small PNGs, 1,000 to a folder: one real 24x24 file per folder, the rest hard
    links to it (file systems cap the links to one file near 65,000)."""
    from PIL import Image

    directory = DATA / f"links-{count}"
    if (directory / ".complete").is_file():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = directory / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
            source = folder / f"img_{i:07d}.png"
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(source)
        else:
            os.link(source, folder / f"img_{i:07d}.png")
    (directory / ".complete").write_text("ok\n")
    return directory


def decode_rate(tree: Path, repeats: int) -> float:
    """Images/s of the decode path alone (224x224, draft mode), on 2 threads."""
    paths = sorted(tree.rglob("*.jpg"))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: load_image(p, (224, 224)), paths))
        rates.append(len(paths) / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


def model_rate(bundle: Path, repeats: int, batch: int = 32) -> float:
    """Images/s of the Keras model alone on uint8 batches of 224x224, after a warm-up."""
    from classify_job.bundle import load_bundle

    model = load_bundle(bundle).model
    x = np.random.default_rng(0).integers(0, 255, (batch, 224, 224, 3)).astype(np.float32)
    model.predict_on_batch(x)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            model.predict_on_batch(x)
        rates.append(4 * batch / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


def end_to_end(tree: Path, bundle: Path, tmp: Path, repeats: int, *options: str) -> dict:
    """Whole-process images/s of ``classify`` (start-up, walk, decode, model, Parquet, report)."""
    files = sum(1 for _ in tree.rglob("*.jpg"))
    runs = [classify(tree, bundle, tmp / f"e2e-{i}", *options) for i in range(repeats)]
    walls = [r["wall_s"] for r in runs]
    return {
        "files": files,
        "images_per_second_median": round(files / statistics.median(walls), 1),
        "wall_s": walls,
        "runtime": runs[0]["facts"].get("runtime"),
    }


def scale(count: int, tmp: Path, repeats: int) -> dict:
    """First run and no-op reruns over ``count`` files with the tiny bundle."""
    tree, out = link_tree(count), tmp / f"scale-{count}"
    first = classify(tree, tiny_bundle(), out, "--batch-size", "256")
    reruns = [classify(tree, tiny_bundle(), out) for _ in range(repeats)]
    assert all(r["facts"]["classified"] == 0 for r in reruns)
    return {
        "files": count,
        "first_run_wall_s": first["wall_s"],
        "first_run_peak_rss_mib": first["peak_rss_mib"],
        "noop_rerun_wall_s_median": statistics.median(r["wall_s"] for r in reruns),
        "noop_rerun_wall_s": [r["wall_s"] for r in reruns],
        "noop_rerun_peak_rss_mib": max(r["peak_rss_mib"] for r in reruns),
    }


def start_up(tree: Path, bundle: Path, tmp: Path, *options: str) -> dict:
    """Launch to first batch with an empty XLA cache, then again with the cache it left."""
    env = {**os.environ, "CLASSIFY_JOB_CACHE": str(tmp / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    shutil.copytree(Path(classify_job.runtime.cache_directory()), tmp / "cache", dirs_exist_ok=True)
    shutil.rmtree(tmp / "cache" / "xla", ignore_errors=True)  # weights stay; compilations go
    runs = [classify(tree, bundle, tmp / f"startup-{i}", *options, env=env) for i in range(2)]
    return {
        "first_run_launch_to_first_batch_s": runs[0]["launch_to_first_batch_s"],
        "second_run_launch_to_first_batch_s": runs[1]["launch_to_first_batch_s"],
        "second_run_xla_cache": runs[1]["facts"].get("xla_cache"),
        "runtime": runs[1]["facts"].get("runtime"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera", type=int, default=480, help="1000x1200 JPEGs for the image rates")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000", help="tree sizes for memory and no-op reruns")
    parser.add_argument("--runtime", default=None, help="classify --runtime (default: the job's)")
    args = parser.parse_args()
    options = ("--runtime", args.runtime) if args.runtime else ()
    camera, bundle = camera_tree(args.camera), lite0_bundle()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report = {
            "machine": machine(),
            "decode_only_images_per_second": decode_rate(camera, args.repeats),
            "model_only_images_per_second_keras": model_rate(bundle, args.repeats),
            "end_to_end": end_to_end(camera, bundle, tmp, args.repeats, *options),
            "start_up": start_up(camera, bundle, tmp, *options),
            "scale": [scale(int(n), tmp, args.repeats) for n in args.sizes.split(",")],
        }
    small, large = report["scale"][0], report["scale"][-1]
    extra_files = large["files"] - small["files"]
    if extra_files:
        added = large["noop_rerun_wall_s_median"] - small["noop_rerun_wall_s_median"]
        report["noop_rerun_us_per_file"] = round(1e6 * added / extra_files, 2)
        report["peak_rss_ratio"] = round(large["first_run_peak_rss_mib"] / small["first_run_peak_rss_mib"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
