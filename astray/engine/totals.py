"""What a training epoch adds up: its running totals, and each accumulation window's.

Counts decided by shapes are host ints; what the data decides (loss, correct count,
scores, the divergence flag) stays a device tensor and is read when the loop chooses
(docs/design.md §10).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from astray.engine import ddp
from astray.engine.step import StepStats, optimizer_step


class EpochTotals:
    """One rank's running totals of an epoch, and the samples' measured significance."""

    def __init__(self, device: torch.device, noisy_of: torch.Tensor | None = None) -> None:
        self.loaded = self.forward = self.backward = self.scored = 0
        # dataset.label_noise: True per flipped training sample (on the device); the count
        # of flipped samples trained stays a device scalar until the epoch's end.
        self.noisy_of = noisy_of
        self.noisy = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)  # a step's loss was non-finite or too high
        # Under DDP the flag rides on the next step's all-reduce instead (it is read every step there).
        self.distributed = ddp.is_distributed()
        self.pending: bool | torch.Tensor = False
        self.indices: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []

    def add(self, s: StepStats, indices: torch.Tensor, step_bad: torch.Tensor) -> None:
        self.loaded += s.loaded
        self.forward += s.forward
        self.backward += s.backward
        self.scored += s.scored
        self.loss_sum += s.loss_sum
        self.correct += s.correct
        if self.distributed:
            self.pending = step_bad
        else:
            self.bad |= step_bad
        self.indices.append(indices)
        self.scores.append(s.sig)
        if self.noisy_of is not None and s.backward > 0:
            on_device = indices.to(self.noisy_of.device, non_blocking=True)
            trained = on_device if s.trained is None else on_device[s.trained]
            self.noisy += self.noisy_of[trained].sum()

    def check(self, diverged: Callable[[], Exception]) -> None:
        """Raise ``diverged()`` if some step's loss went bad (a read of a device flag)."""
        if bool(self.bad):
            raise diverged()

    def mean_loss(self) -> float:
        return float(self.loss_sum) / max(self.loaded, 1)

    def measured(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dataset indices, significance) of every sample this rank trained or scored."""
        if not self.scores:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
        return torch.cat(self.indices), torch.cat(self.scores).float().cpu()

    def over_ranks(self) -> tuple[float, float, float, float, float, float, float]:
        """(loaded, forward, backward, loss sum, correct, noisy trained, scored), summed over ranks."""
        return tuple(ddp.sum_over_ranks([self.loaded, self.forward, self.backward, float(self.loss_sum),
                                         float(self.correct), float(self.noisy), self.scored]))


class GradientWindow:
    """One accumulation window: the samples trained and their weight sum over its
    micro-steps and all ranks, and whether one of its backwards ran under ``no_sync``."""

    def __init__(self) -> None:
        self.active, self.weight, self.unsynced = 0, 0.0, False

    def add(self, s: StepStats) -> None:
        self.active += s.global_active
        self.weight = self.weight + s.global_weight
        self.unsynced |= s.global_active > 0 and not s.synced

    def close(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings, divisor: Callable,
              grad_clip: float, last_synced: bool) -> None:
        """The optimizer step; ``divisor(trained, weight_sum)`` is the method's normalisation."""
        if self.unsynced and not last_synced:
            ddp.average_gradients_(model)  # the last micro-step ran no backward (rule 6)
        optimizer_step(model, optimizer, settings, self.active, grad_clip, divisor(self.active, self.weight))
        self.active, self.weight, self.unsynced = 0, 0.0, False
