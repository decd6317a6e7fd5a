"""Quantise the exported float graph to int8 with ONNX Runtime's static post-training quantisation.

QDQ format, int8 weights per output channel, activation ranges calibrated (min/max) on the bundle's
own training images as classify decodes them: the graph's uint8 pixel input, so the calibration
sees exactly what the served graph will see. Only the operator types that pay are quantised (see
:data:`OP_TYPES`); nodes can be kept float (the first or last convolution, the depthwise ones),
which on EfficientNet-Lite0 cost speed and bought no agreement.
Before quantising, ONNX Runtime's pre-processing runs symbolic shape inference, as its docs advise (the
quantiser places its QuantizeLinear/DequantizeLinear pairs by tensor shapes). The file written is standard
ONNX; ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear into an int8 convolution.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.runtime import quiet_root_logger

# Measured on AMD EPYC (Zen 4, AVX-512 VNNI), a fine-tuned EfficientNet-Lite0, batch 32, 2 threads,
# medians of 7-9 alternated rounds, top-1 agreement with the float graph on 256 of its images
# (docs/benchmarks.md#int8-where-it-pays): Conv alone 1.43x, 96% agreement (each convolution's
# output range is calibrated before ReLU6, and dequantised into a float Clip); Conv and Clip 2.10x,
# 100%; Conv, Clip and Add (the residual sums) 2.27x, 100%; every type the quantiser knows 2.18x.
OP_TYPES = ("Conv", "Clip", "Add")
# uint8 activations, int8 weights (U8S8): Conv alone ran 1.43x float32 with them against 1.03x with
# int8 activations (S8S8, ORT's default for QDQ): the VNNI dot product (VPDPBUSD) multiplies u8 by
# s8. ORT's docs warn that U8S8 can saturate on CPUs without VNNI; the gate catches what that costs.
ACTIVATIONS = "uint8"
CALIBRATION_BATCH = 16  # images per calibration run; their activations are held at once
log = logging.getLogger(__name__)


class PixelBatches:
    """An ONNX Runtime CalibrationDataReader over decoded uint8 images, ``batch`` at a time; with
    ``set_range`` the quantiser reads a few batches at a time (``CalibStridedMinMax``)."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.input_name = input_name
        self.all = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]
        self.batches = iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.batches = iter(self.all[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, np.uint8)}


def depthwise(model: Any) -> list[str]:
    """The names of the graph's depthwise convolutions (``group`` > 1)."""
    from onnx import helper

    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv"
        and any(a.name == "group" and helper.get_attribute_value(a) > 1 for a in n.attribute)
    ]


def first_and_last(model: Any) -> tuple[str, str]:
    """The names of the graph's first Conv (it reads the normalised pixels) and of its last (it
    makes the features the classifier and the unfamiliar score read), the usual ones kept float."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    return convs[0], convs[-1]


def quantize_graph(
    source: Path,
    target: Path,
    pixels: np.ndarray,
    op_types: Sequence[str] = OP_TYPES,
    keep_float: Sequence[str] = (),
    activations: str = ACTIVATIONS,
    calibration: str = "minmax",
) -> dict[str, Any]:
    """Write the int8 form of the float graph ``source`` to ``target``, calibrated on ``pixels``
    (uint8, N x H x W x C). ``keep_float``: "first", "last" (see :func:`first_and_last`),
    "depthwise" (:func:`depthwise`) or node names. Returns what was done, for the bundle's record."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(pixels) == 0:
        raise ValueError("no calibration images")
    model = onnx.load(str(source))
    first, last = first_and_last(model)
    named = {"first": [first], "last": [last], "depthwise": depthwise(model)}
    excluded = [name for k in keep_float for name in named.get(k, [k])]
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        with quiet_root_logger():
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
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "percentile": CalibrationMethod.Percentile,
                    "entropy": CalibrationMethod.Entropy,
                }[calibration],
                # Reduce each batch's activations to their ranges, merged as it goes: keeping every
                # intermediate output of 256 images at 224x224 took 10 GB.
                extra_options={"CalibStridedMinMax": 1},
            )
    return {
        "method": "onnxruntime quantize_static",
        "quant_format": "QDQ",
        "weights": "int8, per channel",
        "activations": activations,
        "op_types": list(op_types),
        "kept_float": list(keep_float),
        "nodes_kept_float": len(excluded),
        "calibration": {"method": calibration, "images": len(pixels)},
    }
