"""What the methods share: an epoch's plan, the per-step selection, bounded shapes, the
per-sample score table, and the one seeded stream per (seed, epoch).

Every draw is deterministic given the run's seed and the epoch, which is what lets all
DDP ranks build the same plan without talking to each other, and a resumed run draw
what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

STREAM_PRIME = 1_000_003  # epochs of one seed never meet another seed's streams


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """The random stream of (seed, epoch, stream): the same on every rank and in every
    resumed run. ``stream`` separates independent draws of one epoch."""
    return torch.Generator().manual_seed(seed * STREAM_PRIME + epoch + stream * 0x5DEECE66D)


@dataclass
class EpochPlan:
    """The samples one epoch will load, in order, before they are split across ranks."""

    indices: torch.Tensor  # int64 dataset indices
    weights: torch.Tensor | None  # float32 loss weight per entry of ``indices``; None = all 1
    candidates: int  # samples the plan chose from (the dataset size)
    # The controller's updates while the plan was built (stale steps it per window):
    # (progress in epochs, rate fed, threshold, error, integral), for steps.parquet.
    trace: list[tuple[float, float, float, float, float]] = field(default_factory=list)

    @property
    def activation(self) -> float:
        return self.indices.numel() / max(1, self.candidates)


def full_plan(dataset_size: int, seed: int, epoch: int) -> EpochPlan:
    """Every sample once, in the epoch's order: a dense epoch."""
    return EpochPlan(torch.randperm(dataset_size, generator=epoch_generator(seed, epoch)), None, dataset_size)


class ShapeBuckets:
    """Round each step's selection count to a multiple of ``quantum`` (docs/design.md §10).

    Every distinct backward batch size costs new kernel plans (cuDNN autotuning, oneDNN
    primitives, compiled graphs); rounding bounds them to ``batch_size / quantum`` sizes.
    The rounding error is carried to the next step, so over an epoch the samples trained
    equal the samples the threshold chose; the samples added to fill a bucket are the next
    most significant ones, and they are trained and counted like any other. The carry
    starts at 0 each epoch and is held within one quantum. A count is never rounded
    below ``floor`` (the per-step minimum): that rounds up to the next bucket.
    """

    def __init__(self, batch_size: int, buckets: int) -> None:
        self.quantum = max(1, math.ceil(batch_size / max(1, buckets)))
        self.carry = 0.0

    def round(self, wanted: int, usable: int, floor: int = 0) -> int:
        desired = wanted + self.carry
        k = self.quantum * math.floor(desired / self.quantum + 0.5)
        k = max(self.quantum * math.ceil(floor / self.quantum), k)
        k = max(0, min(k, usable))  # a short last batch, or NaN scores, cap it off the grid
        self.carry = max(-self.quantum, min(self.quantum, desired - k))
        return k

    def reset(self) -> None:
        self.carry = 0.0


def select_active(sig: torch.Tensor, threshold: float, min_active_fraction: float,
                  buckets: ShapeBuckets | None = None, ceiling: float = math.inf) -> torch.Tensor:
    """Indices (sorted) of the samples that get a backward pass.

    Those whose significance exceeds ``threshold``; a floor of
    ``ceil(min_active_fraction * n)`` is filled with the most significant ones, and a
    non-empty selection never holds exactly one sample (a training-mode BatchNorm cannot
    normalise a batch of one). With ``buckets`` the count is rounded to a bucket first
    (never below the floor), and the selection is the top-k by significance.
    Selection is by index, never by multiplying with a mask, so NaN in an inactive
    sample cannot reach the gradient; a NaN sample is never selected while finite ones
    remain. A sample above ``ceiling`` (``ast.upper_quantile``'s band) is never
    selected: it ranks with the NaNs, and the floor is filled below the ceiling (a
    score of +inf, a sample never seen, is not above it: it is always kept).
    """
    n = sig.numel()
    ranked = torch.nan_to_num(sig.float(), nan=-math.inf, posinf=math.inf)  # NaN ranks below everything
    if ceiling < math.inf:
        ranked = torch.where((ranked > ceiling) & (ranked < math.inf), torch.full_like(ranked, -math.inf), ranked)
    # The one host read of a scored step: the selection's size decides a tensor shape.
    above, nans = torch.stack([(ranked > threshold).sum(), (ranked == -math.inf).sum()]).tolist()
    usable = n - nans
    floor = min(usable, math.ceil(min_active_fraction * n))
    k = max(above, floor)
    if buckets is not None:
        k = buckets.round(k, usable, floor)
    if k == 1 and usable >= 2:
        k = 2
    if k == n:
        return torch.arange(n, device=sig.device)
    return torch.topk(ranked, k, sorted=False).indices.sort().values


UNSTAMPED = -(2**62)  # ``scored_epoch`` of a score whose age is unknown (or of no score yet)


class ScoreTable:
    """The last significance measured for each sample, for methods that select before
    loading. Unseen samples score +inf; ``scored_epoch`` says when each score was
    measured (:data:`UNSTAMPED`: unknown), so a method can bound how stale a score may
    get. Observations are stamped with the epoch last passed to :meth:`at`."""

    def __init__(self, dataset_size: int) -> None:
        self.dataset_size = dataset_size
        self.scores = torch.full((dataset_size,), math.inf)
        self.scored_epoch = torch.full((dataset_size,), UNSTAMPED, dtype=torch.int64)
        self.epoch = 0

    def at(self, epoch: int) -> None:
        """Observations from now on were measured in ``epoch``."""
        self.epoch = epoch

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
