"""The digits CNN module, at module level so pruned/fine-tuned models can be pickled (``torch.save``)."""

from __future__ import annotations

import torch
import torch.nn as nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class DigitsCNN(nn.Module):
    """conv(1->w), conv(w->2w), conv(2w->4w) (3x3 + BN + ReLU), global pool, Linear(4w->4w), Linear(4w->10).

    Args:
        width: Channels of the first conv.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(*_block(1, w), *_block(w, 2 * w), *_block(2 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * w, 4 * w), nn.ReLU(), nn.Linear(4 * w, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``[N, 10]`` for images ``[N, 1, 8, 8]``."""
        return self.classifier(self.pool(self.features(x)))
