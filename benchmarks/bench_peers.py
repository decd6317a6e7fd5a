"""classify-job against the scripts an engineer would write instead, on the same trees and weights.

    make bench-peers     # or: .venv/bin/python benchmarks/bench_peers.py [--trees 480,2000 --repeats 3]

Peers (benchmarks/peers/, the [peers] extra: PyTorch, never imported by classify_job):
- ort_script.py: EfficientNet-Lite0 exported from PyTorch (NCHW) to ONNX, ONNX Runtime at full
  optimisation on 2 threads without spinning, Pillow draft decoding on a 2-thread pool 96 images
  ahead, batch 32, Parquet at the end;
- torch_eager.py: PyTorch eager with a DataLoader (2 workers), Parquet at the end.
classify-job runs a 4-class EfficientNet-Lite0 bundle fine-tuned on the sample photos (ImageNet
backbone; trained once, ~10 min, and cached), with its float32 and int8 graphs (issue 23), and
writes everything it always writes (rows, index, summary, HTML report): once with --runtime auto
(which takes int8 where the export measured it faster) and once with the float32 graph. Runs
alternate, whole process, 1000x1200 JPEGs; medians. Also: model-only images/s of both ONNX graphs
and of int8 against float32 (alternated), the int8 gate's figures on the bundle's test split and
on the 1000x1200 tree (labelled by folder), the rate decode plus model CPU time allows (each
measured per image on one core), and start-up. Prints JSON. Expected runtime: ~30 min with both
trees (--quick skips the thread split and start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DATA, ROOT, camera_tree, classify, machine

import classify_job  # noqa: F401
from classify_job.bundle import read_spec
from classify_job.classify.backends.cpu import describe_cpu
from classify_job.imageio import load_image

PEERS = ROOT / "benchmarks" / "peers"
PEER_ONNX = DATA / "peer_lite0.onnx"
PHOTOS = DATA / "sample-photos-600"
TRAINED = DATA / "lite0-sample-trained"
CLI = [sys.executable, "-m", "classify_job"]


def trained_bundle() -> Path:
    """EfficientNet-Lite0 fine-tuned on 600 sample photos (another seed than the camera trees), so
    the int8 gate judges a model that has learnt something."""
    if not (TRAINED / "bundle.json").is_file():
        subprocess.run([*CLI, "sample-data", str(PHOTOS), "--per-class", "150", "--seed", "3"], check=True)
        train = [*CLI, "train", str(PHOTOS), "--arch", "efficientnet_lite0", "--out", str(TRAINED)]
        subprocess.run([*train, "--augmented-views", "1", "--overwrite"], check=True)
    return TRAINED


def ensure_exports(tree: Path) -> Path:
    bundle = trained_bundle()
    formats = {e["format"] for e in read_spec(bundle).exports}
    if "onnx" not in formats:
        subprocess.run([*CLI, "export", str(bundle)], check=True)
    if "onnx-int8" not in formats:
        subprocess.run([*CLI, "export", str(bundle), "--int8"], check=True)
    if not PEER_ONNX.is_file():
        subprocess.run([sys.executable, str(PEERS / "export_onnx.py"), str(PEER_ONNX)], check=True)
    return bundle


def int8_against_float(bundle: Path, pixels: np.ndarray, rounds: int = 9) -> dict:
    """Model-only images/s of the int8 and float32 graphs, batch 32, 2 threads, one call of each
    in turn per round (so the machine's load hits both alike); medians."""
    sessions = {"float32": session(bundle / "model.onnx", 2), "int8": session(bundle / "model.int8.onnx", 2)}
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for infer in sessions.values():
        infer.run(None, {"pixels": pixels})
    for _ in range(rounds):
        for name, infer in sessions.items():
            start = time.perf_counter()
            infer.run(None, {"pixels": pixels})
            rates[name].append(len(pixels) / (time.perf_counter() - start))
    medians = {name: round(statistics.median(r), 1) for name, r in rates.items()}
    return {**medians, "ratio": round(medians["int8"] / medians["float32"], 2), "rounds": rounds}


def gate_figures(bundle: Path, tree: Path) -> dict:
    """The int8 gate's figures as the export recorded them (the bundle's test split) and on the
    camera tree (its folders are the same four classes)."""
    from classify_job.classify.backends import graph_outputs
    from classify_job.decisions.rule import DecisionRule
    from classify_job.train.int8_gate import gate_images, judge

    spec = read_spec(bundle)
    (entry,) = [e for e in spec.exports if e["format"] == "onnx-int8"]
    images = gate_images(spec, tree)
    outputs = [graph_outputs(bundle / name, images.pixels) for name in ("model.onnx", "model.int8.onnx")]
    rules = [DecisionRule.from_bundle(bundle, spec, runtime) for runtime in ("onnx", "onnx-int8")]
    verdict = judge(bundle, spec, images, *outputs, *rules)  # each graph under the rule it serves with
    return {
        "at_export": entry["verified"],
        "export_benchmark": entry["benchmark"],
        "on_tree": {**verdict.figures, "passed": verdict.passed, "reasons": list(verdict.reasons)},
    }


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def model_rate(path: Path, pixels: np.ndarray, threads: int, repeats: int = 5) -> float:
    """Images/s of one ONNX graph at batch 32 (median of ``repeats`` after a warm-up)."""
    infer = session(path, threads)
    name = infer.get_inputs()[0].name
    feed = (
        pixels
        if infer.get_inputs()[0].type == "tensor(uint8)"
        else pixels.transpose(0, 3, 1, 2).astype(np.float32)
    )
    infer.run(None, {name: feed})
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        infer.run(None, {name: feed})
        rates.append(len(pixels) / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


RUNTIME_RATE = """
import json, statistics, sys, time
from pathlib import Path
import numpy as np
import classify_job
from classify_job.bundle import read_spec
from classify_job.classify.backends import open_backend
bundle, runtime = Path(sys.argv[1]), sys.argv[2]
pixels = np.load(sys.argv[3])
backend = open_backend(bundle, read_spec(bundle), runtime, len(pixels), 2)
backend.predict(pixels)
rates = []
for _ in range(5):
    start = time.perf_counter()
    backend.predict(pixels)
    rates.append(len(pixels) / (time.perf_counter() - start))
print(json.dumps(round(statistics.median(rates), 1)))
"""


def runtime_rates(bundle: Path, pixels: np.ndarray, tmp: Path) -> dict:
    """Model-only images/s (batch 32, 2 threads, median of 5 after a warm-up) of each runtime
    classify can use, through classify-job's own back-ends, each in a fresh process: the figures
    behind --runtime auto's order."""
    np.save(tmp / "batch.npy", pixels)
    rates = {}
    for runtime in ("onnx-int8", "onnx", "openvino", "keras"):
        command = [sys.executable, "-c", RUNTIME_RATE, str(bundle), runtime, str(tmp / "batch.npy")]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rates[runtime] = json.loads(out.strip().splitlines()[-1])
    return rates


def decode_ms(paths: list[Path]) -> float:
    """Milliseconds of one core per image for the decode path (draft mode, 224x224)."""
    start = time.process_time()
    for path in paths:
        load_image(path, (224, 224))
    return 1000 * (time.process_time() - start) / len(paths)


def per_image_bounds(tree: Path, bundle: Path) -> dict:
    paths = sorted(tree.rglob("*.jpg"))[:64]
    pixels = np.stack([load_image(p, (224, 224)).pixels for p in paths[:32]])
    decode = statistics.median(decode_ms(paths) for _ in range(3))
    model = 1000 / model_rate(bundle / "model.onnx", pixels, threads=1)
    int8 = 1000 / model_rate(bundle / "model.int8.onnx", pixels, threads=1)
    return {
        "decode_ms_per_image_one_core": round(decode, 2),
        "model_ms_per_image_one_core": round(model, 2),
        "int8_model_ms_per_image_one_core": round(int8, 2),
        "images_per_second_allowed_on_2_cores": round(2000 / (decode + model), 1),
        "images_per_second_allowed_on_2_cores_int8": round(2000 / (decode + int8), 1),
        "model_only_images_per_second_ours": model_rate(bundle / "model.onnx", pixels, threads=2),
        "model_only_images_per_second_peer": model_rate(PEER_ONNX, pixels, threads=2),
    }


def race(tree: Path, bundle: Path, tmp: Path, repeats: int, torch: bool) -> dict:
    files = sum(1 for _ in tree.rglob("*.jpg"))
    walls: dict[str, list[float]] = {
        "classify_job": [],
        "classify_job_float32": [],
        "ort_script": [],
        "torch_eager": [],
    }
    loops = []
    for i in range(repeats):  # alternate, so drift in the machine's load hits everyone alike
        ours = classify(tree, bundle, tmp / f"ours-{tree.name}-{i}")
        walls["classify_job"].append(ours["wall_s"])
        loops.append(ours["facts"]["classified"] / ours["facts"]["timings"]["loop_s"])
        floats = classify(tree, bundle, tmp / f"float-{tree.name}-{i}", "--runtime", "onnx")
        walls["classify_job_float32"].append(floats["wall_s"])
        ort = [
            sys.executable,
            str(PEERS / "ort_script.py"),
            str(PEER_ONNX),
            str(tree),
            str(tmp / "ort.parquet"),
        ]
        walls["ort_script"].append(timed(ort))
        if torch:
            walls["torch_eager"].append(
                timed([sys.executable, str(PEERS / "torch_eager.py"), str(tree), str(tmp / "t.parquet")])
            )
    rates = {name: round(files / statistics.median(w), 1) for name, w in walls.items() if w}
    result = {"files": files, "images_per_second": rates, "wall_s": walls}
    result["inside_loop_images_per_second"] = round(statistics.median(loops), 1)
    result["runtime"] = ours["facts"]["runtime"]
    result["ratio_to_ort_script"] = round(rates["classify_job"] / rates["ort_script"], 2)
    result["float32_ratio_to_ort_script"] = round(rates["classify_job_float32"] / rates["ort_script"], 2)
    if torch:
        result["ratio_to_torch_eager"] = round(rates["classify_job"] / rates["torch_eager"], 2)
    return result


def thread_split(tree: Path, bundle: Path, tmp: Path) -> dict:
    """Images/s inside the loop for each split of the 2 cores between decoding threads (--workers)
    and the runtime's threads (--runtime-threads); median of 2 runs each."""
    rates = {}
    for workers, threads in ((1, 1), (1, 2), (2, 1), (2, 2), (3, 2)):
        runs = []
        for i in range(2):
            facts = classify(tree, bundle, tmp / f"split-{workers}-{threads}-{i}", "--workers", str(workers),
                             "--runtime-threads", str(threads))["facts"]  # fmt: skip
            runs.append(facts["classified"] / facts["timings"]["loop_s"])
        rates[f"workers={workers},runtime_threads={threads}"] = round(statistics.median(runs), 1)
    return rates


def start_up(tree: Path, bundle: Path, tmp: Path) -> dict:
    runs = [classify(tree, bundle, tmp / f"startup-{i}") for i in range(3)]
    return {"second_run_launch_to_first_batch_s": sorted(r["launch_to_first_batch_s"] for r in runs[1:])[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="480,2000", help="tree sizes (1000x1200 JPEGs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch-eager peer")
    parser.add_argument("--quick", action="store_true", help="skip the thread split and start-up")
    args = parser.parse_args()
    trees = [camera_tree(int(n)) for n in args.trees.split(",")]
    bundle = ensure_exports(trees[0])
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            "machine": {**machine(), "cpu_flags": describe_cpu()["flags"]},
            **per_image_bounds(trees[0], bundle),
        }
        pixels = np.stack([load_image(p, (224, 224)).pixels for p in sorted(trees[0].rglob("*.jpg"))[:32]])
        report["model_only_int8_against_float32"] = int8_against_float(bundle, pixels)
        report["model_only_images_per_second_by_runtime"] = runtime_rates(bundle, pixels, Path(tmp))
        report["int8_gate"] = gate_figures(bundle, trees[0])
        report["trees"] = [race(t, bundle, Path(tmp), args.repeats, not args.no_torch) for t in trees]
        if not args.quick:
            report.update(start_up(trees[0], bundle, Path(tmp)))
            report["inside_loop_images_per_second_by_thread_split"] = thread_split(
                trees[0], bundle, Path(tmp)
            )
    for tree in report["trees"]:  # against the bound of the graph the run used
        bound = "_int8" if tree["runtime"] == "onnx-int8" else ""
        allowed = report[f"images_per_second_allowed_on_2_cores{bound}"]
        tree["inside_loop_share_of_allowed"] = round(tree["inside_loop_images_per_second"] / allowed, 3)
    report["model_only_ratio"] = round(
        report["model_only_images_per_second_ours"] / report["model_only_images_per_second_peer"], 2
    )
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
