"""Training loss of the detector, shared by ``train.py`` and trtopt's fine-tune.

(``[finetune] loss = "byom_models.losses:detection_loss"`` / ``trtopt prune --loss ...``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def detection_loss(outputs, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the class + 5 x smooth-L1 on the normalised box.

    Args:
        outputs: ``(boxes [B, 4], logits [B, 10])`` as the model returns them (a dict with
            ``boxes``/``logits`` also works).
        labels: ``[B, 5]``: class, cx, cy, w, h.

    Returns:
        Scalar loss tensor.
    """
    if isinstance(outputs, dict):
        boxes, logits = outputs["boxes"], outputs["logits"]
    else:
        boxes, logits = outputs
    labels = labels.to(boxes.dtype)
    return F.cross_entropy(logits, labels[:, 0].long()) + 5.0 * F.smooth_l1_loss(boxes, labels[:, 1:], beta=0.05)
