"""``infobatch``: InfoBatch (Qin et al., ICLR 2024) as its reference code runs it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from astray.config.checks import in_range
from astray.config.run import ASTConfig
from astray.sparse.controller import PIController
from astray.sparse.method import MethodContext, SparseMethod, register
from astray.sparse.selection import EpochPlan, ScoreTable, epoch_generator


@dataclass(frozen=True)
class InfoBatchSettings:
    prune_ratio: float = 0.5  # r: share of the below-mean samples pruned; the kept ones weigh 1/(1-r)
    anneal: float = 0.875  # delta: train dense from this share of the epochs on

    def __post_init__(self) -> None:
        in_range("ast.infobatch.prune_ratio", self.prune_ratio, lo=0, hi=1, hi_open=True)
        in_range("ast.infobatch.anneal", self.anneal, lo=0, hi=1)


@register
class InfoBatch(SparseMethod):
    """Before each sparse epoch: keep every sample whose last loss is at or above the
    mean of the known losses, and a random ``1 - r`` share of the rest, whose losses are
    weighted ``1 / (1 - r)``; unseen samples are kept. Dense from ``anneal`` of the
    epochs on. No controller: the realised activation follows the loss distribution
    (``r`` is not the saved share; the epoch rows record what was trained).

    Its step is the reference code's ``values.mul_(weights); values.mean()``: the
    weighted losses are averaged over the samples trained, not divided by the weights'
    sum, so a pruned sample's share of the update is carried by its kept peers and a
    pruned epoch's expected total update equals a dense epoch's (fewer steps, each
    larger). Its scores are plain losses (entropy weight 0), as published.
    """

    name = "infobatch"
    Settings = InfoBatchSettings
    renamed = {"infobatch_prune_ratio": "prune_ratio", "infobatch_anneal": "anneal"}
    what = ("InfoBatch (ICLR 2024) as its reference code: before loading, keep every sample whose last loss is at or "
            "above the mean loss, and a random (1 − r) share of the rest with loss weight 1/(1 − r) "
            "(`ast.infobatch.prune_ratio` r); each step is the mean of the weighted losses over the samples trained; "
            "dense from `ast.infobatch.anneal` δ of the epochs on; no controller")
    cost = "≈ realised activation"
    weaknesses = ("r is not the saved share: the activation follows the loss distribution (the epoch rows record it); "
                  "scores are plain losses, so `entropy_weight` is ignored")
    biased_batches = True

    def __init__(self, ast: ASTConfig, ctx: MethodContext) -> None:
        super().__init__(ast, ctx)
        self.prune_ratio = self.settings.prune_ratio
        self.table = ScoreTable(ctx.dataset_size)

    def is_sparse(self, epoch: int) -> bool:
        return epoch < self.settings.anneal * self.ctx.epochs and super().is_sparse(epoch)

    @property
    def entropy_weight(self) -> float:
        return 0.0

    def step_divisor(self, trained: int | torch.Tensor, weight_sum: float | torch.Tensor) -> int | torch.Tensor:
        return trained

    def observe(self, indices: torch.Tensor, sig: torch.Tensor) -> None:
        self.table.observe(indices, sig)

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        n = self.ctx.dataset_size
        self.table.at(epoch)
        gen = epoch_generator(self.ctx.seed, epoch)
        perm = torch.randperm(n, generator=gen)
        coins = torch.rand(n, generator=gen)
        if dense:
            return EpochPlan(perm, None, n)
        scores = self.table.scores[perm]
        known = torch.isfinite(scores)
        mean = float(scores[known].mean()) if bool(known.any()) else math.inf
        well_learned = known & (scores < mean)
        lucky = well_learned & (coins[perm] >= self.prune_ratio)
        chosen = ~well_learned | lucky
        weights = torch.ones(n)
        weights[lucky] = 1.0 / (1.0 - self.prune_ratio)
        return EpochPlan(perm[chosen], weights[chosen], n)

    def state_dict(self) -> dict[str, Any]:
        return self.table.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table.load_state_dict(state)
