"""The peer's ONNX file: the PyTorch EfficientNet-Lite0 (NCHW, float32 input) exported by torch.

python benchmarks/peers/export_onnx.py OUT.onnx
"""

import sys

import torch
from lite0_torch import pretrained


def main(out: str) -> None:
    model = pretrained()
    example = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(
        model, (example,), out, input_names=["pixels"], output_names=["probabilities", "features"],
        dynamic_axes={"pixels": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
