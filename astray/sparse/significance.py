"""Per-sample significance: how much a sample still has to teach the model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def significance(logits: torch.Tensor, targets: torch.Tensor, entropy_weight: float) -> torch.Tensor:
    """``loss_i + entropy_weight * H(softmax(logits_i)) / log(C)`` for each sample.

    The loss is plain cross-entropy (no label smoothing: smoothing puts a floor under
    every loss and blurs the ranking). Entropy is divided by ``log(C)`` so it lies in
    [0, 1] whatever the number of classes, and ``entropy_weight`` means the same on
    digits and on ImageNet. Computed in float32 and without gradients.
    """
    with torch.no_grad():
        logits = logits.detach().float()
        loss = F.cross_entropy(logits, targets, reduction="none")
        if entropy_weight == 0.0:
            return loss
        logp = F.log_softmax(logits, dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1)
        return loss + entropy_weight * entropy / math.log(logits.shape[1])
