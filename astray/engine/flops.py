"""Per-sample forward and backward FLOPs, measured once with FlopCounterMode.

Executed FLOPs are then counted from the samples that really went through each pass,
so a strategy's compute saving is the executed work, not a formula.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class SampleFlops:
    forward: float  # FLOPs of one sample's forward pass
    backward: float  # FLOPs of one sample's backward pass
    scoring: float | None = None  # FLOPs of one sample's scoring forward (at the score scale); None = forward

    def executed(self, samples_forward: int, samples_backward: int, samples_scored: int = 0) -> float:
        """FLOPs of the passes run: ``samples_forward`` includes the ``samples_scored``
        scoring forwards, which cost :attr:`scoring` each."""
        scoring = self.forward if self.scoring is None else self.scoring
        return (self.forward * (samples_forward - samples_scored) + scoring * samples_scored
                + self.backward * samples_backward)

    def dense(self, samples: int) -> float:
        return (self.forward + self.backward) * samples


def measure_sample_flops(model: nn.Module, example: torch.Tensor, batch: int = 2) -> SampleFlops:
    """Count FLOPs of a training-mode forward and backward on ``batch`` copies of ``example``.

    Runs on a deep copy so BatchNorm statistics and gradients of the real model are
    untouched. Batch 2, not 1: a training-mode BatchNorm cannot take a batch of one.
    """
    probe = copy.deepcopy(model).train()
    x = example.unsqueeze(0).expand(batch, *example.shape).contiguous()
    with FlopCounterMode(display=False) as fwd:
        out = probe(x)
    with FlopCounterMode(display=False) as bwd:
        out.float().sum().backward()
    return SampleFlops(fwd.get_total_flops() / batch, bwd.get_total_flops() / batch)


def measure_forward_flops(model: nn.Module, example: torch.Tensor, batch: int = 2) -> float:
    """FLOPs of one sample's no-grad, train-mode forward on ``example`` (any size the
    model takes), on a deep copy of the model."""
    probe = copy.deepcopy(model).train()
    x = example.unsqueeze(0).expand(batch, *example.shape).contiguous()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        probe(x)
    return fwd.get_total_flops() / batch
