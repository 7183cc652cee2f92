"""Small real models and a fixed selection policy for step-level tests."""

from __future__ import annotations

import torch
from torch import nn

from astray.sparse import SelectionStrategy


def tiny_mlp(in_features: int = 3 * 4 * 4, classes: int = 5, seed: int = 0) -> nn.Module:
    """A model without BatchNorm, so per-rank and whole-batch gradients are comparable."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, classes))


class FixedSelection(SelectionStrategy):
    """A reforward-style policy that selects given batch positions (for exact checks)."""

    name = "fixed"
    scores_before_backward = True

    def __init__(self, chosen: list[int]) -> None:
        super().__init__(dataset_size=1)
        self.chosen = torch.tensor(chosen, dtype=torch.int64)

    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        return self.chosen
