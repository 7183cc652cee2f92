"""What each epoch and step runs with: the optimizer, the learning rate, dense or sparse."""

from __future__ import annotations

import math

import torch

from astray.config.run import RunConfig


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.training
    # No weight decay on biases and normalisation weights (1-D parameters).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr)


def lr_at(cfg: RunConfig, progress: float, world: int) -> float:
    """Linear warm-up then cosine decay, as a pure function of progress in epochs.

    ``training.lr`` is per 256 samples of global batch and scales linearly. Being a
    function of progress, the schedule has no state to checkpoint, and a stale-mode
    epoch with fewer steps still follows the same curve.
    """
    t = cfg.training
    base = t.lr * t.batch_size * t.grad_accum_steps * world / 256
    if t.lr_warmup_epochs > 0 and progress < t.lr_warmup_epochs:
        return base * max(progress, 1e-3) / t.lr_warmup_epochs
    span = max(t.epochs - t.lr_warmup_epochs, 1e-9)
    frac = min(1.0, (progress - t.lr_warmup_epochs) / span)
    return base * 0.5 * (1 + math.cos(math.pi * frac))


def epoch_is_sparse(cfg: RunConfig, epoch: int) -> bool:
    """Dense for warm-up epochs, the final dense share, and the dense strategy.

    ``infobatch`` also trains dense from ``infobatch_anneal`` of the epochs on.
    """
    a, epochs = cfg.ast, cfg.training.epochs
    final_dense = math.floor(a.final_dense_fraction * epochs + 0.5)  # half up: 2.5 epochs -> 3
    if a.strategy == "infobatch" and epoch >= a.infobatch_anneal * epochs:
        return False
    return a.strategy != "dense" and epoch >= a.warmup_epochs and epoch < epochs - final_dense
