"""The ONNX Runtime back-end: the exported graph (float32, or its int8 form), fully optimised, on a
fixed number of threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classify_job.bundle import loader_error


class OnnxBackend:
    """uint8 batches of any size in; probabilities and features out."""

    def __init__(self, path: Path, threads: int, name: str = "onnx") -> None:
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Threads that spin while waiting would steal the cores the decoders need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
        except Exception as exc:  # ONNX Runtime raises its own types for a damaged or foreign graph
            raise loader_error(path, exc) from exc

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, features = self.session.run(["probabilities", "features"], {self.input: pixels})
        return probs, features
