"""Quantise the exported float graph to int8 with ONNX Runtime's static post-training quantisation.

QDQ format, int8 weights per output channel, activation ranges calibrated (min/max) on the bundle's
own training images as classify decodes them: the graph's uint8 pixel input, so the calibration
sees exactly what the served graph will see. Only the operator types that pay are quantised (see
:data:`OP_TYPES`); the first convolution reads raw pixels and stays float if accuracy needs it.
Before quantising, ONNX Runtime's pre-processing runs symbolic shape inference, which the
quantiser needs to place the QuantizeLinear/DequantizeLinear pairs. The file written is standard
ONNX; ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear into an int8 convolution.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# Measured on AMD EPYC (Zen 4, AVX-512 VNNI), EfficientNet-Lite0, batch 32, 2 threads: see
# docs/benchmarks.md#int8. Quantising MatMul/Gemm (the 4-class head) and the element-wise ops
# besides Conv bought nothing measurable and adds QDQ pairs around float-only ops.
OP_TYPES = ("Conv",)
# Activations int8 too (S8S8): ONNX Runtime's recommended first choice for QDQ; U8S8 can saturate
# in the VPMADDUBSW path on AVX2/AVX-512 CPUs without VNNI (measured alike on this CPU).
ACTIVATIONS = "int8"
CALIBRATION_BATCH = 32
log = logging.getLogger(__name__)


class PixelBatches:
    """An ONNX Runtime CalibrationDataReader over decoded uint8 images, ``batch`` at a time."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.input_name = input_name
        self.batches = iter([pixels[i : i + batch] for i in range(0, len(pixels), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, np.uint8)}


def first_and_last(model: Any) -> tuple[str, str | None]:
    """The names of the graph's first Conv (it reads the normalised pixels) and of its last
    Conv, MatMul or Gemm (the classifier), the usual candidates to keep in float."""
    computing = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    convs = [n for n in computing if n.op_type == "Conv"]
    return convs[0].name, computing[-1].name if computing else None


def quantize_graph(
    source: Path,
    target: Path,
    pixels: np.ndarray,
    op_types: Sequence[str] = OP_TYPES,
    keep_float: Sequence[str] = (),
    activations: str = ACTIVATIONS,
) -> dict[str, Any]:
    """Write the int8 form of the float graph ``source`` to ``target``, calibrated on ``pixels``
    (uint8, N x H x W x C). ``keep_float``: "first" and/or "last" (see :func:`first_and_last`)
    or node names. Returns what was done, for the bundle's record."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(pixels) == 0:
        raise ValueError("no calibration images")
    model = onnx.load(str(source))
    first, last = first_and_last(model)
    named = {"first": first, "last": last}
    excluded = [named.get(k, k) for k in keep_float if named.get(k, k)]
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        with _quiet():
            quant_pre_process(str(source), str(prepared), skip_optimization=True)
            quantize_static(
                str(prepared),
                str(target),
                PixelBatches(model.graph.input[0].name, pixels),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types) or None,  # empty: every type the quantiser knows
                per_channel=True,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax,
            )
    return {
        "method": "onnxruntime quantize_static",
        "quant_format": "QDQ",
        "weights": "int8, per channel",
        "activations": activations,
        "op_types": list(op_types),
        "kept_float": excluded,
        "calibration": {"method": "minmax", "images": len(pixels)},
    }


@contextmanager
def _quiet() -> Iterator[None]:
    """The quantiser logs every tensor it calibrates at info level on the root logger."""
    root = logging.getLogger()
    level = root.level
    if level > logging.DEBUG:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)
