"""Export a 1000-class MobileNetV2 from PyTorch to ONNX, for benchmarks/onnx_import_bench.py.

Needs only ``torch`` (the architecture is written out here, as in torchvision's
``mobilenet_v2``: Sandler et al. 2018, Table 2), so a CPU torch wheel is enough:

    python benchmarks/_torch_mnv2.py OUT.onnx

Weights are random; one training-mode pass with momentum 1 sets every BatchNorm's running
statistics to those of a batch of smooth images, so activations and maps are not degenerate
(latency does not depend on the weights).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s)
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, relu6: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if relu6 else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, 1, relu6=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 2)], 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def make(path: str) -> None:
    torch.manual_seed(0)
    model = MobileNetV2()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.normal(size=(8, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        model.train()(batch)
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


if __name__ == "__main__":
    make(sys.argv[1])
