"""Selection strategies: which samples are loaded, and which of them get a backward pass.

Only strategies that cut *executed* work are offered (docs/design.md §1): a masked loss
runs the full forward and backward and saves nothing, so there is no such strategy.

- ``dense``: every sample, forward and backward. The baseline.
- ``reforward``: a no-grad scoring forward over the whole batch, then forward and
  backward on the selected subset only (Selective-Backprop style).
- ``stale``: choose each epoch's samples *before* loading them, from each sample's
  last known significance and the PI controller's threshold; only the kept samples are
  loaded, and each gets a forward and backward pass that also refreshes its score.
- ``random``: a uniform random ``target_activation`` share of the samples each epoch,
  chosen before loading; no scores. The null hypothesis every method must beat.
- ``infobatch``: InfoBatch's published rule (ICLR 2024): keep every sample whose last
  loss is at or above the mean, and a random ``1 - r`` share of the rest with loss
  weight ``1 / (1 - r)``; no controller. Dense after ``infobatch_anneal`` of the epochs.

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


class ShapeBuckets:
    """Round each step's selection count to a multiple of ``quantum`` (docs/design.md §10).

    Every distinct backward batch size costs new kernel plans (cuDNN autotuning, oneDNN
    primitives, compiled graphs); rounding bounds them to ``batch_size / quantum`` sizes.
    The rounding error is carried to the next step, so over an epoch the samples trained
    equal the samples the threshold chose; the samples added to fill a bucket are the next
    most significant ones, and they are trained and counted like any other. The carry
    starts at 0 each epoch and is held within one quantum.
    """

    def __init__(self, batch_size: int, buckets: int) -> None:
        self.quantum = max(1, math.ceil(batch_size / max(1, buckets)))
        self.carry = 0.0

    def round(self, wanted: int, usable: int) -> int:
        desired = wanted + self.carry
        k = self.quantum * math.floor(desired / self.quantum + 0.5)
        k = max(0, min(k, usable))  # a short last batch, or NaN scores, cap it off the grid
        self.carry = max(-self.quantum, min(self.quantum, desired - k))
        return k

    def reset(self) -> None:
        self.carry = 0.0


def select_active(sig: torch.Tensor, threshold: float, min_active_fraction: float,
                  buckets: ShapeBuckets | None = None) -> torch.Tensor:
    """Indices (sorted) of the samples that get a backward pass.

    Those whose significance exceeds ``threshold``; a floor of
    ``ceil(min_active_fraction * n)`` is filled with the most significant ones, and a
    non-empty selection never holds exactly one sample (a training-mode BatchNorm cannot
    normalise a batch of one). With ``buckets`` the count is rounded to a bucket first,
    and the selection is the top-k by significance.
    Selection is by index, never by multiplying with a mask, so NaN in an inactive
    sample cannot reach the gradient; a NaN sample is never selected while finite ones
    remain.
    """
    n = sig.numel()
    ranked = torch.nan_to_num(sig.float(), nan=-math.inf)  # NaN ranks below everything
    # The one host read of a scored step: the selection's size decides a tensor shape.
    above, nans = torch.stack([(ranked > threshold).sum(), torch.isnan(sig).sum()]).tolist()
    usable = n - nans
    floor = min(usable, math.ceil(min_active_fraction * n))
    k = max(above, floor)
    if buckets is not None:
        k = buckets.round(k, usable)
    if k == 1 and usable >= 2:
        k = 2
    if k == n:
        return torch.arange(n, device=sig.device)
    return torch.topk(ranked, k, sorted=False).indices.sort().values


def _generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    # One stream per (seed, epoch, stream): every rank and every resumed run draws the same.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch + stream * 0x5DEECE66D)


class SelectionStrategy:
    """Interface every strategy implements (see the contract tests in tests/)."""

    name: str = ""
    #: True when the step first scores the batch without gradients and then runs
    #: forward+backward on the selected subset only.
    scores_before_backward: bool = False
    #: True when the strategy selects by the PI controller's threshold, so dense epochs
    #: must calibrate it (one small all-reduce per step under DDP).
    uses_controller: bool = False
    #: True when the batches a sparse epoch trains on are a biased subset of the data
    #: (chosen by score before loading), so their forwards pull the BatchNorm running
    #: statistics off the data and the epoch ends with precise BN (docs/design.md §4).
    biased_batches: bool = False

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


UNSTAMPED = -(2**62)  # ``scored_epoch`` of a score whose age is unknown (or of no score yet)


class ScoreTable(SelectionStrategy):
    """A per-sample table of the last significance measured, for strategies that select
    before loading. Unseen samples score +inf; ``scored_epoch`` says when each score was
    measured (:data:`UNSTAMPED`: unknown), so a strategy can bound how stale a score may
    get."""

    def __init__(self, dataset_size: int, seed: int = 0, min_active_fraction: float = 0.0) -> None:
        super().__init__(dataset_size, seed, min_active_fraction)
        self.scores = torch.full((dataset_size,), math.inf)
        self.scored_epoch = torch.full((dataset_size,), UNSTAMPED, dtype=torch.int64)
        self.epoch = 0  # the epoch being planned and trained: observations are stamped with it

    def _draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's permutation and one uniform coin per sample, from (seed, epoch);
        observations from now on are stamped with ``epoch``."""
        self.epoch = epoch
        gen = _generator(self.seed, epoch)
        perm = torch.randperm(self.dataset_size, generator=gen)
        return perm, torch.rand(self.dataset_size, generator=gen)

    def observe(self, indices: torch.Tensor, sig: torch.Tensor) -> None:
        indices = indices.cpu()
        self.scores[indices] = sig.detach().float().cpu()
        self.scored_epoch[indices] = self.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores.clone(), "scored_epoch": self.scored_epoch.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scores = state["scores"]
        if scores.numel() != self.dataset_size:
            raise ValueError(f"score table has {scores.numel()} entries, dataset {self.dataset_size}")
        self.scores = scores.clone().float()
        # A table saved before scores were stamped has no ages: leave them unknown, so
        # those scores are never forced back in until the sample is trained again.
        unknown = torch.full((self.dataset_size,), UNSTAMPED, dtype=torch.int64)
        self.scored_epoch = state.get("scored_epoch", unknown).clone().long()


class DenseSelection(SelectionStrategy):
    name = "dense"


class ReforwardSelection(SelectionStrategy):
    """Score the loaded batch without gradients, train the selected subset. With
    ``shape_buckets`` > 0 the subset's size is rounded to one of that many sizes
    (:class:`ShapeBuckets`, sized on the per-rank ``batch_size``)."""

    name = "reforward"
    scores_before_backward = True
    uses_controller = True

    def __init__(self, dataset_size: int, seed: int = 0, min_active_fraction: float = 0.0,
                 shape_buckets: int = 0, batch_size: int = 0) -> None:
        super().__init__(dataset_size, seed, min_active_fraction)
        self.buckets = ShapeBuckets(batch_size, shape_buckets) if shape_buckets > 0 and batch_size > 0 else None

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        if self.buckets is not None:
            self.buckets.reset()  # the carry lives within an epoch: a resumed run starts one at 0 too
        return super().plan_epoch(epoch, controller, dense)

    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        return select_active(sig, threshold, self.min_active_fraction, self.buckets)


class StaleSelection(ScoreTable):
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
    walked in windows of ``window`` candidates (one global batch), each window's
    kept share is fed to the PI controller, and the next window uses the new
    threshold. That is the same feedback loop as per-step selection, run on scores
    that are already known, so it costs a table lookup, not a forward pass.
    """

    name = "stale"
    uses_controller = True
    biased_batches = True

    def __init__(self, dataset_size: int, seed: int = 0, min_active_fraction: float = 0.0,
                 keep_prob: float = ASTConfig.stale_keep_prob, window: int = 256,
                 max_age: int = ASTConfig.stale_max_age) -> None:
        super().__init__(dataset_size, seed, min_active_fraction)
        self.keep_prob = keep_prob
        self.window = max(1, window)
        self.max_age = max_age
        self.backdate: torch.Tensor | None = None  # set while a dense epoch is planned and trained

    def observe(self, indices: torch.Tensor, sig: torch.Tensor) -> None:
        super().observe(indices, sig)
        if self.backdate is not None:  # a dense epoch's stamps, staggered (class docstring)
            indices = indices.cpu()
            self.scored_epoch[indices] -= self.backdate[indices]

    def _overdue(self, epoch: int) -> torch.Tensor:
        """The scores to refresh this epoch: those ``max_age`` epochs old or older, at most
        ``ceil(dataset_size / max_age)`` of them (the rate that measures every score once
        per ``max_age`` epochs), oldest first, ties broken at random (from (seed, epoch)),
        so the refreshes are spread over the epoch's windows, not packed into its first
        ones. The rest wait for a later epoch: a burst of due scores is spread out."""
        age = epoch - self.scored_epoch
        due = (self.scored_epoch != UNSTAMPED) & (age >= self.max_age)
        cap = math.ceil(self.dataset_size / self.max_age)
        if int(due.sum()) <= cap:
            return due
        candidates = torch.nonzero(due).flatten()
        tie = torch.rand(self.dataset_size, generator=_generator(self.seed, epoch, stream=2))[candidates]
        oldest = candidates[torch.argsort(age[candidates].double() + tie, descending=True)[:cap]]
        overdue = torch.zeros(self.dataset_size, dtype=torch.bool)
        overdue[oldest] = True
        return overdue

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        perm, coins = self._draws(epoch)
        self.backdate = None
        if dense:
            if self.max_age > 1:
                self.backdate = torch.randint(0, self.max_age, (self.dataset_size,),
                                              generator=_generator(self.seed, epoch, stream=1))
            return EpochPlan(perm, None, self.dataset_size)
        overdue = torch.zeros(self.dataset_size, dtype=torch.bool)
        if self.max_age > 0:
            overdue = self._overdue(epoch)
        kept, weights = [], []
        n_windows = math.ceil(self.dataset_size / self.window)
        for w in range(n_windows):
            idx = perm[w * self.window:(w + 1) * self.window]
            forced = overdue[idx]
            chosen = torch.zeros(idx.numel(), dtype=torch.bool)
            chosen[select_active(self.scores[idx], controller.threshold, self.min_active_fraction)] = True
            weight = torch.ones(idx.numel())
            if self.keep_prob > 0:
                lucky = ~chosen & (coins[idx] < self.keep_prob)
                weight[lucky] = 1.0 / self.keep_prob
                chosen |= lucky
            # The controller holds the realised share, overdue refreshes included: they take
            # their place inside the target and the scores choose the rest. A window whose
            # refreshes alone reach the target is not fed (no threshold could lower its
            # share), so a burst of them cannot wind the threshold up.
            n_forced = int(forced.sum())
            chosen |= forced
            if n_forced < controller.target * idx.numel():
                controller.update(int(chosen.sum()), idx.numel(), epoch + w / n_windows)
            weight[forced & (weight != 1.0)] = 1.0  # a forced sample was not kept by chance
            kept.append(idx[chosen])
            weights.append(weight[chosen])
        return EpochPlan(torch.cat(kept), torch.cat(weights), self.dataset_size)


class RandomSelection(SelectionStrategy):
    """A uniform random ``target`` share of the samples each sparse epoch, chosen before
    loading; no scores and no controller (its threshold stays where it started)."""

    name = "random"

    def __init__(self, dataset_size: int, seed: int = 0, min_active_fraction: float = 0.0,
                 target: float = ASTConfig.target_activation) -> None:
        super().__init__(dataset_size, seed, min_active_fraction)
        self.target = target

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        perm = torch.randperm(self.dataset_size, generator=_generator(self.seed, epoch))
        if dense:
            return EpochPlan(perm, None, self.dataset_size)
        keep = min(self.dataset_size, max(2, round(self.target * self.dataset_size)))
        return EpochPlan(perm[:keep], None, self.dataset_size)


class InfoBatchSelection(ScoreTable):
    """InfoBatch: keep samples whose last loss is at or above the mean of the known
    losses; keep a random ``1 - prune_ratio`` share of the rest, weighted
    ``1 / (1 - prune_ratio)``. Unseen samples are kept. The realised activation depends
    on the loss distribution: ``prune_ratio`` is not the saved share (the epoch rows
    record what was really trained). Its scores are plain losses: the trainer runs it
    with ``entropy_weight`` 0."""

    name = "infobatch"
    biased_batches = True

    def __init__(self, dataset_size: int, seed: int = 0, min_active_fraction: float = 0.0,
                 prune_ratio: float = ASTConfig.infobatch_prune_ratio) -> None:
        super().__init__(dataset_size, seed, min_active_fraction)
        self.prune_ratio = prune_ratio

    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        perm, coins = self._draws(epoch)
        if dense:
            return EpochPlan(perm, None, self.dataset_size)
        scores = self.scores[perm]
        known = torch.isfinite(scores)
        mean = float(scores[known].mean()) if bool(known.any()) else math.inf
        well_learned = known & (scores < mean)
        lucky = well_learned & (coins[perm] >= self.prune_ratio)
        chosen = ~well_learned | lucky
        weights = torch.ones(self.dataset_size)
        weights[lucky] = 1.0 / (1.0 - self.prune_ratio)
        return EpochPlan(perm[chosen], weights[chosen], self.dataset_size)


STRATEGIES: dict[str, type[SelectionStrategy]] = {
    cls.name: cls for cls in (DenseSelection, ReforwardSelection, StaleSelection, RandomSelection, InfoBatchSelection)
}


def create_strategy(cfg: ASTConfig, dataset_size: int, seed: int, global_batch: int,
                    batch_size: int = 0) -> SelectionStrategy:
    """Build the strategy named by ``ast.strategy``; unknown names list the valid ones.
    ``batch_size`` is the per-rank batch (for reforward's shape buckets)."""
    cls = STRATEGIES.get(cfg.strategy)
    if cls is None:
        raise ConfigError(f"ast.strategy={cfg.strategy!r} is not allowed; choose one of {', '.join(STRATEGIES)}")
    if cls is StaleSelection:
        return StaleSelection(dataset_size, seed, cfg.min_active_fraction, cfg.stale_keep_prob, global_batch,
                              cfg.stale_max_age)
    if cls is RandomSelection:
        return RandomSelection(dataset_size, seed, cfg.min_active_fraction, cfg.target_activation)
    if cls is InfoBatchSelection:
        return InfoBatchSelection(dataset_size, seed, cfg.min_active_fraction, cfg.infobatch_prune_ratio)
    if cls is ReforwardSelection:
        return ReforwardSelection(dataset_size, seed, cfg.min_active_fraction, cfg.shape_buckets, batch_size)
    return cls(dataset_size, seed, cfg.min_active_fraction)
