"""``random``: a uniform random share of the samples each sparse epoch. The null
hypothesis every method must beat."""

from __future__ import annotations

import torch

from astray.sparse.controller import PIController
from astray.sparse.method import SparseMethod, register
from astray.sparse.selection import EpochPlan, epoch_generator


@register
class RandomSubset(SparseMethod):
    """A uniform random ``ast.target_activation`` share of the samples each sparse epoch,
    chosen before loading; no scores and no controller (its threshold stays where it
    started)."""

    name = "random"
    what = ("a uniform random `target_activation` share of the samples each epoch, chosen before loading; no scores, "
            "no controller. The null hypothesis every method must beat")
    cost = "≈ a"
    weaknesses = "none by design: it ignores what samples teach"
    aims_at_target = True

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        n = self.ctx.dataset_size
        perm = torch.randperm(n, generator=epoch_generator(self.ctx.seed, epoch))
        if dense:
            return EpochPlan(perm, None, n)
        keep = min(n, max(2, round(self.ast.target_activation * n)))
        return EpochPlan(perm[:keep], None, n)
