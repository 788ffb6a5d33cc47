"""A small single-object detector with SiLU activations (conv backbone + MLP head).

Input ``image [N, 1, 32, 32]`` float32 in [0, 1]; outputs ``(boxes, logits)``:
``boxes [N, 4]`` normalised (cx, cy, w, h) in (0, 1), ``logits [N, 10]`` digit class scores.
Every conv after the stem has >= 16 input channels and widths are multiples of 16, so 2:4
sparsity applies to them (the stem, with one input channel, stays dense).
"""

from __future__ import annotations

import torch
from torch import nn

CANVAS = 32  #: image side in pixels
NUM_CLASSES = 10


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class Detector(nn.Module):
    """Conv backbone (32 -> 4 px) and a head predicting one box and one class per image."""

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            _block(1, 16, 1),            # 32x32
            _block(16, width, 2),        # 16x16
            _block(width, width, 1),
            _block(width, 2 * width, 2),  # 8x8
            _block(2 * width, 2 * width, 2),  # 4x4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.SiLU())
        self.box = nn.Linear(128, 4)
        self.cls = nn.Linear(128, num_classes)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image [N,1,32,32]`` -> ``(boxes [N,4], logits [N,10])``."""
        h = self.head(self.backbone(image))
        return torch.sigmoid(self.box(h)), self.cls(h)


def make_detector() -> nn.Module:
    """Factory for trtopt (``byom_models.detector:make_detector``): random init, load weights after."""
    return Detector()
