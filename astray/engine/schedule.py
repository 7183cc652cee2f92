"""What each epoch and step runs with: the optimizer and the learning rate. (Whether an
epoch is sparse is the method's to say: ``SparseMethod.is_sparse``.)"""

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
    """The learning rate at ``progress`` (epochs, fractional): a pure function of it.

    ``training.lr`` is the peak, per 256 samples of global batch, and scales linearly.
    Being a function of progress, a schedule has no state to checkpoint, and a
    stale-mode epoch with fewer steps still follows the same curve.

    - ``cosine``, ``step``, ``constant``: linear warm-up over ``lr_warmup_epochs``, then
      cosine decay to 0 at the last epoch / the peak times ``lr_gamma`` per milestone
      passed / the peak throughout.
    - ``onecycle``: PyTorch's ``OneCycleLR`` (cosine annealing both ways): from peak /
      ``onecycle_div_factor`` up to the peak over ``onecycle_pct_start`` of the epochs, then
      down to the start / ``onecycle_final_div_factor``; it is its own warm-up, so
      ``lr_warmup_epochs`` is not used.
    """
    t = cfg.training
    peak = t.lr * t.batch_size * t.grad_accum_steps * world / 256
    if t.schedule == "onecycle":
        return peak * _onecycle_factor(progress / t.epochs, t.onecycle_pct_start, t.onecycle_div_factor,
                                       t.onecycle_final_div_factor)
    if t.lr_warmup_epochs > 0 and progress < t.lr_warmup_epochs:
        return peak * max(progress, 1e-3) / t.lr_warmup_epochs
    if t.schedule == "constant":
        return peak
    if t.schedule == "step":
        return peak * t.lr_gamma ** sum(progress >= m for m in t.lr_milestones)
    span = max(t.epochs - t.lr_warmup_epochs, 1e-9)
    frac = min(1.0, (progress - t.lr_warmup_epochs) / span)
    return peak * 0.5 * (1 + math.cos(math.pi * frac))


def _onecycle_factor(frac: float, pct_start: float, div: float, final_div: float) -> float:
    start, end = 1.0 / div, 1.0 / (div * final_div)
    frac = min(max(frac, 0.0), 1.0)
    if frac <= pct_start:
        return _cos_anneal(start, 1.0, frac / pct_start)
    return _cos_anneal(1.0, end, (frac - pct_start) / (1.0 - pct_start))


def _cos_anneal(a: float, b: float, pct: float) -> float:
    return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
