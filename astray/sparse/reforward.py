"""``reforward``: score the loaded batch without gradients, train the selected subset
(Selective-Backprop style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from astray.config.checks import in_range
from astray.config.run import ASTConfig
from astray.sparse.controller import PIController
from astray.sparse.method import MethodContext, SparseMethod, register
from astray.sparse.selection import EpochPlan, ShapeBuckets, select_active


@dataclass(frozen=True)
class ReforwardSettings:
    shape_buckets: int = 8  # round each step's trained count to one of this many sizes (error carried); 0 = exact
    score_scale: float = 1.0  # the scoring forward runs on the batch resized by this (antialiased); 1 = full size

    def __post_init__(self) -> None:
        in_range("ast.reforward.shape_buckets", self.shape_buckets, lo=0)
        in_range("ast.reforward.score_scale", self.score_scale, lo=0, hi=1, lo_open=True)


@register
class Reforward(SparseMethod):
    """A no-grad, train-mode scoring forward over the whole batch, then forward and
    backward on the samples above the controller's threshold, every step. With
    ``shape_buckets`` > 0 the subset's size is rounded to one of that many sizes
    (:class:`ShapeBuckets`, sized on the per-rank batch)."""

    name = "reforward"
    Settings = ReforwardSettings
    renamed = {"shape_buckets": "shape_buckets", "score_scale": "score_scale"}
    what = ("a no-grad **train-mode** scoring forward on the batch, resized by `ast.reforward.score_scale` = s, then "
            "forward + backward only on the selected samples (Selective-Backprop style); the PI controller moves the "
            "threshold every step")
    cost = "≈ s²/3 + a"
    weaknesses = ("the scoring forward is paid on every sample (at s = 1 it alone is 1/3 of dense); scores at s < 1 "
                  "rank samples less like full-size ones (docs/benchmarks.md); the backward batch is rounded to one "
                  "of `ast.reforward.shape_buckets` sizes (top-k by significance, rounding error carried), so kernel "
                  "plans are reused")
    scores_before_backward = True
    selects_by_significance = True
    uses_controller = True
    aims_at_target = True

    def __init__(self, ast: ASTConfig, ctx: MethodContext) -> None:
        super().__init__(ast, ctx)
        buckets = self.settings.shape_buckets
        self.buckets = ShapeBuckets(ctx.batch_size, buckets) if buckets > 0 and ctx.batch_size > 0 else None

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        if self.buckets is not None:
            self.buckets.reset()  # the carry lives within an epoch: a resumed run starts one at 0 too
        return super().plan_epoch(epoch, controller, dense)

    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        # The band's ceiling is the batch's own quantile: a uniform sample of the data,
        # scored by the current weights (a host read per step, only with the band on).
        return select_active(sig, threshold, self.ast.min_active_fraction, self.buckets, self.ceiling(sig))

    @property
    def bounded_shapes(self) -> bool:
        return self.buckets is not None

    @property
    def score_scale(self) -> float:
        return self.settings.score_scale

    def recalibrates_batchnorm(self, sparse: bool) -> bool:
        # Below scale 1 the running statistics come from the selected (biased) subset,
        # as stale's do, so precise BN recalibrates them (docs/design.md §12).
        return sparse and self.score_scale < 1
