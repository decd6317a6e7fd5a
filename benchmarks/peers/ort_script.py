"""Peer: the 60-line script an engineer who knows CPU inference would write: EfficientNet-Lite0
exported from PyTorch (NCHW) to ONNX, ONNX Runtime with full graph optimisation on 2 threads (no
spinning), Pillow decoding in draft mode on a 2-thread pool running up to 96 images ahead,
batches of 32, Parquet written at the end.

    python benchmarks/peers/ort_script.py MODEL.onnx TREE OUT.parquet
"""

import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps

LABELS = ["male_trousers", "female_trousers", "male_jeans", "female_jeans"]
BATCH, AHEAD = 32, 96


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("RGB", (224, 224))
        image = ImageOps.exif_transpose(image).convert("RGB").resize((224, 224), Image.BILINEAR)
        return np.asarray(image, np.float32).transpose(2, 0, 1)


def session(model: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main(model: str, root: str, out: str) -> None:
    infer = session(model)
    name = infer.get_inputs()[0].name
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    rows = {"path": [], "label": [], "confidence": []}
    with ThreadPoolExecutor(2) as pool:
        pending = deque()
        queued = iter(paths)
        for path in queued:
            pending.append((path, pool.submit(decode, path)))
            if len(pending) < AHEAD:
                continue
            flush(infer, name, [pending.popleft() for _ in range(BATCH)], rows)
        while pending:
            flush(infer, name, [pending.popleft() for _ in range(min(BATCH, len(pending)))], rows)
    pq.write_table(pa.table(rows), out)


def flush(infer, name, batch, rows) -> None:
    pixels = np.stack([future.result() for _, future in batch])
    probs = infer.run(None, {name: pixels})[0]
    rows["path"] += [str(path) for path, _ in batch]
    rows["label"] += [LABELS[i] for i in probs.argmax(1)]
    rows["confidence"] += probs.max(1).tolist()


if __name__ == "__main__":
    main(*sys.argv[1:4])
