"""The OpenVINO back-end: the exported graph compiled for the CPU, in full float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classify_job.bundle import loader_error


class OpenVinoBackend:
    """uint8 batches of any size in; probabilities and features out."""

    name = "openvino"

    def __init__(self, path: Path, threads: int) -> None:
        import openvino

        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # On CPUs with bfloat16 units OpenVINO would compute in bf16, off by ~1e-2.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        try:
            self.model = openvino.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # a damaged .xml or .bin is a RuntimeError with OpenVINO's report
            raise loader_error(path, exc) from exc

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.model(pixels)
        return outputs["probabilities"], outputs["features"]
