"""``stale``: choose each epoch's samples before loading them, from each sample's last
known significance and the PI controller's threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from astray.config.checks import in_range
from astray.config.run import ASTConfig
from astray.errors import ConfigError
from astray.sparse.controller import PIController
from astray.sparse.method import MethodContext, SparseMethod, register
from astray.sparse.selection import UNSTAMPED, EpochPlan, ScoreTable, epoch_generator, select_active


@dataclass(frozen=True)
class StaleSettings:
    keep_prob: float = 0.0  # keep a below-threshold sample with this probability (weight 1/p)
    max_age: int = 5  # a sample unscored for this many epochs is kept (0 = no bound)

    def __post_init__(self) -> None:
        in_range("ast.stale.keep_prob", self.keep_prob, lo=0, hi=1, hi_open=True)
        in_range("ast.stale.max_age", self.max_age, lo=0)


@register
class Stale(SparseMethod):
    """Select from a per-sample score table before loading.

    Samples never seen have score +inf and are always kept. A below-threshold sample
    is kept anyway with probability ``keep_prob`` and its loss weighted ``1/keep_prob``,
    so the epoch's gradient stays unbiased in expectation and low scores get refreshed.
    A sample whose score is ``max_age`` epochs old or older is kept whatever its score:
    a score measured on much older weights says little about the sample now, and no
    sample may go untrained for ever (0 = no bound). These refreshes count inside the
    target: the controller is fed the realised share, refreshes included, and the
    scores choose the rest (see ``plan_epoch``). A dense epoch scores every sample at
    once, so the scores it stamps are backdated by 0 to ``max_age - 1`` epochs (a
    uniform draw per sample from (seed, epoch)): their refreshes spread over the next
    ``max_age`` epochs instead of all falling due in one, which no threshold could hold
    at the target. An epoch refreshes at most ``ceil(dataset_size / max_age)`` scores,
    oldest first (:meth:`_overdue`): a backlog beyond that (after an epoch that trained
    an unusually large share, say) waits an epoch or more instead of echoing as a burst.

    The controller is stepped while the plan is built: the epoch's permutation is
    walked in windows of one global batch of candidates, each window's kept share is
    fed to the PI controller, and the next window uses the new threshold. That is the
    same feedback loop as per-step selection, run on scores that are already known, so
    it costs a table lookup, not a forward pass.
    """

    name = "stale"
    Settings = StaleSettings
    renamed = {"stale_keep_prob": "keep_prob", "stale_max_age": "max_age"}
    what = ("the epoch's samples are chosen *before loading* from each sample's last known significance and the "
            "controller's threshold; only those are loaded, and their forward + backward refreshes their scores")
    cost = "≈ a"
    weaknesses = ("scores are as old as the last epoch that trained the sample (bounded by `ast.stale.max_age`); "
                  "needs one dense warm-up epoch")
    uses_controller = True
    aims_at_target = True
    biased_batches = True
    selects_by_significance = True

    def __init__(self, ast: ASTConfig, ctx: MethodContext) -> None:
        super().__init__(ast, ctx)
        self.keep_prob = self.settings.keep_prob
        self.max_age = self.settings.max_age
        self.window = max(1, ctx.global_batch)
        self.table = ScoreTable(ctx.dataset_size)
        self.backdate: torch.Tensor | None = None  # set while a dense epoch is planned and trained

    @classmethod
    def check(cls, ast: ASTConfig, settings: StaleSettings) -> None:
        if ast.warmup_epochs == 0:
            # Unseen samples score +inf: with no dense epoch first, every sample is "active",
            # and the controller would wind the threshold up to ast.max_threshold.
            raise ConfigError("ast.warmup_epochs=0 is not allowed with ast.strategy=stale: its score table "
                              "needs one dense epoch first; set ast.warmup_epochs >= 1")

    def observe(self, indices: torch.Tensor, sig: torch.Tensor) -> None:
        self.table.observe(indices, sig)
        if self.backdate is not None:  # a dense epoch's stamps, staggered (class docstring)
            indices = indices.cpu()
            self.table.scored_epoch[indices] -= self.backdate[indices]

    def _overdue(self, epoch: int) -> torch.Tensor:
        """The scores to refresh this epoch: those ``max_age`` epochs old or older, at most
        ``ceil(dataset_size / max_age)`` of them (the rate that measures every score once
        per ``max_age`` epochs), oldest first, ties broken at random (from (seed, epoch)),
        so the refreshes are spread over the epoch's windows, not packed into its first
        ones. The rest wait for a later epoch: a burst of due scores is spread out."""
        n, scored = self.ctx.dataset_size, self.table.scored_epoch
        age = epoch - scored
        due = (scored != UNSTAMPED) & (age >= self.max_age)
        cap = math.ceil(n / self.max_age)
        if int(due.sum()) <= cap:
            return due
        candidates = torch.nonzero(due).flatten()
        tie = torch.rand(n, generator=epoch_generator(self.ctx.seed, epoch, stream=2))[candidates]
        oldest = candidates[torch.argsort(age[candidates].double() + tie, descending=True)[:cap]]
        overdue = torch.zeros(n, dtype=torch.bool)
        overdue[oldest] = True
        return overdue

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        n, seed = self.ctx.dataset_size, self.ctx.seed
        self.table.at(epoch)
        gen = epoch_generator(seed, epoch)
        perm = torch.randperm(n, generator=gen)
        coins = torch.rand(n, generator=gen)
        self.backdate = None
        if dense:
            if self.max_age > 1:
                self.backdate = torch.randint(0, self.max_age, (n,), generator=epoch_generator(seed, epoch, stream=1))
            return EpochPlan(perm, None, n)
        overdue = self._overdue(epoch) if self.max_age > 0 else torch.zeros(n, dtype=torch.bool)
        # ast.upper_quantile's band, over the stored scores (never-seen samples excluded);
        # overdue refreshes still train a sample above it (that is how its score moves).
        ceiling = self.ceiling(self.table.scores)
        kept, weights, trace = [], [], []
        n_windows = math.ceil(n / self.window)
        for w in range(n_windows):
            idx = perm[w * self.window:(w + 1) * self.window]
            forced = overdue[idx]
            chosen = torch.zeros(idx.numel(), dtype=torch.bool)
            scores = self.table.scores[idx]
            chosen[select_active(scores, controller.threshold, self.ast.min_active_fraction, ceiling=ceiling)] = True
            weight = torch.ones(idx.numel())
            if self.keep_prob > 0:
                lucky = ~chosen & (coins[idx] < self.keep_prob) & ~((scores > ceiling) & (scores < math.inf))
                weight[lucky] = 1.0 / self.keep_prob
                chosen |= lucky
            # The controller holds the realised share, overdue refreshes included: they take
            # their place inside the target and the scores choose the rest. A window whose
            # refreshes alone reach the target is not fed (no threshold could lower its
            # share), so a burst of them cannot wind the threshold up.
            n_forced = int(forced.sum())
            chosen |= forced
            if n_forced < controller.target * idx.numel():
                progress, active = epoch + w / n_windows, int(chosen.sum())
                controller.update(active, idx.numel(), progress)
                trace.append((progress, active / idx.numel(), controller.threshold, controller.error,
                              controller.integral))
            weight[forced & (weight != 1.0)] = 1.0  # a forced sample was not kept by chance
            kept.append(idx[chosen])
            weights.append(weight[chosen])
        return EpochPlan(torch.cat(kept), torch.cat(weights), n, trace)

    def state_dict(self) -> dict[str, Any]:
        return self.table.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table.load_state_dict(state)
