"""Selection strategies: which samples are loaded, and which of them get a backward pass.

Only strategies that cut *executed* work are offered (docs/design.md §1): a masked loss
runs the full forward and backward and saves nothing, so there is no such strategy.

- ``dense``: every sample, forward and backward. The baseline.
- ``reforward``: a no-grad scoring forward over the whole batch, then forward and
  backward on the selected subset only (Selective-Backprop style).
- ``stale``: choose each epoch's samples *before* loading them, from each sample's
  last known significance (InfoBatch style); only the kept samples are loaded, and
  each gets a forward and backward pass that also refreshes its score.

Every strategy is deterministic given its seed and the epoch, which is what lets all
DDP ranks build the same plan without talking to each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from astray.config.run import ASTConfig
from astray.errors import ConfigError
from astray.sparse.controller import PIController


@dataclass
class EpochPlan:
    """The samples one epoch will load, in order, before they are split across ranks."""

    indices: torch.Tensor  # int64 dataset indices
    weights: torch.Tensor | None  # float32 loss weight per entry of ``indices``; None = all 1
    candidates: int  # samples the plan chose from (the dataset size)

    @property
    def activation(self) -> float:
        return self.indices.numel() / max(1, self.candidates)


def select_active(sig: torch.Tensor, threshold: float, min_active_fraction: float) -> torch.Tensor:
    """Indices (sorted) of samples whose significance exceeds ``threshold``.

    A floor of ``ceil(min_active_fraction * n)`` samples is filled with the most
    significant ones (top-k), and a non-empty selection never holds exactly one sample:
    a training-mode BatchNorm cannot normalise a batch of one.
    Selection is by index, never by multiplying with a mask, so NaN in an inactive
    sample cannot reach the gradient.
    """
    n = sig.numel()
    active = torch.nonzero(sig > threshold).flatten()
    usable = n - int(torch.isnan(sig).sum())  # a NaN sample is never trained
    floor = min(usable, math.ceil(min_active_fraction * n))
    if max(active.numel(), floor) == 1 and usable >= 2:
        floor = 2
    if active.numel() < floor:
        # topk ranks NaN above everything: rank it below everything instead.
        ranked = torch.nan_to_num(sig.float(), nan=-math.inf)
        active = torch.topk(ranked, floor, sorted=False).indices.sort().values
    return active


def _generator(seed: int, epoch: int) -> torch.Generator:
    # One stream per (seed, epoch): every rank and every resumed run draws the same.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class SelectionStrategy:
    """Interface every strategy implements (see the contract tests in tests/)."""

    name: str = ""
    #: True when the step first scores the batch without gradients and then runs
    #: forward+backward on the selected subset only.
    scores_before_backward: bool = False

    def __init__(self, dataset_size: int, seed: int = 0, min_active_fraction: float = 0.0) -> None:
        if dataset_size <= 0:
            raise ValueError("dataset_size must be positive")
        self.dataset_size = dataset_size
        self.seed = seed
        self.min_active_fraction = min_active_fraction

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        """Which samples to load this epoch. ``dense`` forces every sample in."""
        perm = torch.randperm(self.dataset_size, generator=_generator(self.seed, epoch))
        return EpochPlan(perm, None, self.dataset_size)

    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        """Which of a loaded batch get a backward pass (indices into the batch)."""
        return torch.arange(sig.numel())

    def observe(self, indices: torch.Tensor, sig: torch.Tensor) -> None:
        """Record significance measured for dataset ``indices`` during training."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class DenseSelection(SelectionStrategy):
    name = "dense"


class ReforwardSelection(SelectionStrategy):
    name = "reforward"
    scores_before_backward = True

    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        return select_active(sig, threshold, self.min_active_fraction)


class StaleSelection(SelectionStrategy):
    """Select from a per-sample score table before loading.

    Samples never seen have score +inf and are always kept. A below-threshold sample
    is kept anyway with probability ``keep_prob`` and its loss weighted ``1/keep_prob``,
    so the epoch's gradient stays unbiased in expectation and low scores get refreshed.

    The controller is stepped while the plan is built: the epoch's permutation is
    walked in windows of ``window`` candidates (one global batch), each window's
    kept share is fed to the PI controller, and the next window uses the new
    threshold. That is the same feedback loop as per-step selection, run on scores
    that are already known, so it costs a table lookup, not a forward pass.
    """

    name = "stale"

    def __init__(self, dataset_size: int, seed: int = 0, min_active_fraction: float = 0.0,
                 keep_prob: float = ASTConfig.stale_keep_prob, window: int = 256) -> None:
        super().__init__(dataset_size, seed, min_active_fraction)
        self.keep_prob = keep_prob
        self.window = max(1, window)
        self.scores = torch.full((dataset_size,), math.inf)

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        gen = _generator(self.seed, epoch)
        perm = torch.randperm(self.dataset_size, generator=gen)
        if dense:
            return EpochPlan(perm, None, self.dataset_size)
        coins = torch.rand(self.dataset_size, generator=gen)
        kept, weights = [], []
        n_windows = math.ceil(self.dataset_size / self.window)
        for w in range(n_windows):
            idx = perm[w * self.window:(w + 1) * self.window]
            sig = self.scores[idx]
            chosen = torch.zeros(idx.numel(), dtype=torch.bool)
            chosen[select_active(sig, controller.threshold, self.min_active_fraction)] = True
            weight = torch.ones(idx.numel())
            if self.keep_prob > 0:
                lucky = ~chosen & (coins[idx] < self.keep_prob)
                weight[lucky] = 1.0 / self.keep_prob
                chosen |= lucky
            kept.append(idx[chosen])
            weights.append(weight[chosen])
            controller.update(int(chosen.sum()), idx.numel(), epoch + w / n_windows)
        return EpochPlan(torch.cat(kept), torch.cat(weights), self.dataset_size)

    def observe(self, indices: torch.Tensor, sig: torch.Tensor) -> None:
        self.scores[indices.cpu()] = sig.detach().float().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scores = state["scores"]
        if scores.numel() != self.dataset_size:
            raise ValueError(f"score table has {scores.numel()} entries, dataset {self.dataset_size}")
        self.scores = scores.clone().float()


STRATEGIES: dict[str, type[SelectionStrategy]] = {
    cls.name: cls for cls in (DenseSelection, ReforwardSelection, StaleSelection)
}


def create_strategy(cfg: ASTConfig, dataset_size: int, seed: int, global_batch: int) -> SelectionStrategy:
    """Build the strategy named by ``ast.strategy``; unknown names list the valid ones."""
    cls = STRATEGIES.get(cfg.strategy)
    if cls is None:
        raise ConfigError(f"ast.strategy={cfg.strategy!r} is not allowed; choose one of {', '.join(STRATEGIES)}")
    if cls is StaleSelection:
        return StaleSelection(dataset_size, seed, cfg.min_active_fraction, cfg.stale_keep_prob, global_batch)
    return cls(dataset_size, seed, cfg.min_active_fraction)
