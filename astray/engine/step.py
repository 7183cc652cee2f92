"""One training step: score, select, forward, backward. Returns counts for the epoch.

The optimizer step is not here: under gradient accumulation it happens once per
window (see :func:`optimizer_step`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from astray.engine import batchnorm, ddp
from astray.sparse import PIController, SparseMethod, significance


@dataclass
class StepSettings:
    entropy_weight: float
    label_smoothing: float
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False


@dataclass
class StepStats:
    """What one step did. Counts decided by shapes are host ints; what the data decides
    (loss, correct count, scores, weight sum) stays a device tensor, so reading it is the
    caller's choice (once per epoch or per ``log_every_steps``), not a sync per step."""

    loaded: int  # samples in this rank's batch
    forward: int  # sample-forward passes run on this rank (scoring + training)
    backward: int  # sample-backward passes run on this rank
    global_active: int  # samples that got a backward pass, all ranks
    global_loaded: int
    global_weight: float | torch.Tensor  # sum of the loss weights of those samples, all ranks (rule 1's divisor)
    loss_sum: torch.Tensor  # cross-entropy summed over the loaded samples (device scalar)
    correct: torch.Tensor  # correctly classified loaded samples (device scalar)
    sig: torch.Tensor  # significance of every loaded sample (device), for the score table
    stop: bool  # some rank asked to stop (time budget)
    diverged: bool | torch.Tensor  # some rank saw a non-finite loss in the previous step (bool under DDP)
    synced: bool = True  # its backward all-reduced gradients (False: none ran, or under no_sync)
    trained: torch.Tensor | None = None  # positions in the batch that got a backward pass; None = all loaded
    scored: int = 0  # of ``forward``, the scoring forwards (at the method's score_scale)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The image size a scoring forward at ``scale`` sees: each side rounded, at least 1 px."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def downscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The batch resized by ``scale`` (bilinear, antialiased, so a smaller copy averages
    its pixels rather than skipping them); ``x`` itself when the scale keeps its size."""
    size = scaled_size(x.shape[-2], x.shape[-1], scale)
    if scale >= 1 or size == tuple(x.shape[-2:]):
        return x
    # In float (antialiasing wants it); the memory format (channels-last) carries over.
    return F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False).to(x.dtype)


def _score(model: nn.Module, x: torch.Tensor, settings: StepSettings, scale: float = 1.0) -> torch.Tensor:
    """No-grad forward in train mode on the unwrapped model (no DDP collective), on the
    batch resized by ``scale`` (``ast.reforward.score_scale``, docs/design.md §12).

    Train mode, because the threshold was calibrated on train-mode significance in the
    dense warm-up: eval mode normalises with running statistics that lag the weights,
    and its scores sit on another scale (docs/design.md §4). This forward also updates
    the BatchNorm running statistics from the *whole* batch; the training forward on
    the selected subset then leaves them alone (``batchnorm.frozen_statistics``). Below
    scale 1 it is the other way round: statistics of the smaller copy would not be those
    of the full-size images evaluation sees, so this forward leaves them alone and the
    training forward on the selected subset updates them (:func:`scores_keep_statistics`).
    """
    net = ddp.unwrap(model)
    with torch.no_grad():
        x = downscale(x, scale)
        with settings.autocast(), (contextlib.nullcontext() if scores_keep_statistics(scale)
                                   else batchnorm.frozen_statistics(net)):
            return net(x)


def scores_keep_statistics(scale: float) -> bool:
    """Whether the scoring forward at ``scale`` is the one that updates BatchNorm's
    running statistics (full size), rather than the training forward (docs/design.md §12)."""
    return scale >= 1


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor | None,
    method: SparseMethod,
    controller: PIController,
    settings: StepSettings,
    *,
    indices: torch.Tensor | None = None,
    sparse: bool,
    progress: float,
    stop_requested: bool = False,
    nonfinite_seen: bool | torch.Tensor = False,
    calibrate: bool = True,
    window_end: bool = True,
) -> StepStats:
    """Run one step of adaptive sparse training on this rank's batch.

    ``indices`` are the batch's dataset indices (on the batch's device or the host): the
    method's significance may depend on the sample (``SparseMethod.score``).
    ``sparse`` is False in dense epochs (warm-up, final dense epochs, the dense
    strategy): then every sample is trained, and, with ``calibrate``, the controller is
    still fed what *would* have been active so its threshold is calibrated when sparsity
    begins. ``weights`` are per-sample loss weights on the batch's device (1/p for
    randomly kept samples; None = all 1); the optimizer step divides the weighted sum
    by what the method says (``SparseMethod.step_divisor``). ``window_end`` is False on the micro-steps of an
    accumulation window that do not end it: their backward runs under DDP's ``no_sync``
    (rule 6), unless some rank asked to stop, which ends the window here.

    Host reads (device syncs on CUDA), each with its reason (docs/design.md §10):
    reforward's selection size (it is a tensor shape); under DDP, the step's one
    all-reduce of counts and flags (every rank must take the same branch); in dense
    epochs that calibrate the controller, the would-be active count. Nothing else.
    """
    n = y.numel()
    scoring = sparse and method.scores_before_backward
    if scoring:
        logits_all = _score(model, x, settings, method.score_scale)
        sig = method.score(significance(logits_all, y, settings.entropy_weight), indices)
        selected = method.select(sig, controller.threshold)
    else:
        selected = None  # every loaded sample
    n_selected = n if selected is None else selected.numel()
    ws = weights if (weights is None or selected is None) else weights[selected]
    weight_sum = float(n_selected) if ws is None else ws.sum()

    # Rules 1 and 3 of docs/design.md §3: one all-reduce for counts, weights and flags.
    global_active, global_loaded, global_weight, stop, diverged = ddp.step_counts(
        n_selected, n, weight_sum, stop_requested, nonfinite_seen)

    forward = n if scoring else 0
    backward = 0
    synced = False  # did a backward here all-reduce the window's gradients?
    if global_active > 0:
        if n_selected > 0:
            xs, ys = (x, y) if selected is None else (x[selected], y[selected])
            scale = 1.0
        else:
            xs, ys, ws = ddp.zero_weight_stand_in(x, y, weights)  # rule 2
            scale = 0.0
        synced = window_end or stop
        with ddp.gradient_sync(model, synced):  # forward and backward both inside, as DDP requires
            # A zero-weight stand-in (nothing selected on this rank) never moves them.
            frozen = scoring and (scores_keep_statistics(method.score_scale) or n_selected == 0)
            with settings.autocast(), (batchnorm.frozen_statistics(model) if frozen else contextlib.nullcontext()):
                logits = model(xs)
                per_sample = F.cross_entropy(logits.float(), ys, reduction="none",
                                             label_smoothing=settings.label_smoothing)
            # Sum, times world size: DDP averages over ranks, so the result is the sum over
            # all ranks; optimizer_step divides by the window's global weight sum (rule 1).
            loss = (per_sample if ws is None else per_sample * ws).sum() * (scale * ddp.loss_scale())
            (settings.scaler.scale(loss) if settings.scaler else loss).backward()
        forward += xs.shape[0]
        backward += xs.shape[0]
        if not scoring:
            logits_all = logits.detach()
            sig = method.score(significance(logits_all, y, settings.entropy_weight), indices)
    elif not scoring:
        # Nothing active anywhere and nothing scored: only possible for an empty batch.
        logits_all = torch.zeros(n, 1, device=x.device)
        sig = torch.zeros(n, device=x.device)

    if sparse and scoring:
        controller.update(global_active, global_loaded, progress)
    elif not sparse and calibrate:
        # Shadow update: what would have been active under the current threshold. Only the
        # dense epochs before a sparse one calibrate (the trainer says which); it costs a
        # host read and, under DDP, one more small all-reduce per step.
        would = ddp.sum_over_ranks([float((sig > controller.threshold).sum())])
        controller.update(int(would[0]), global_loaded, progress)

    with torch.no_grad():
        if logits_all.shape[1] > 1:
            ce = F.cross_entropy(logits_all.float(), y, reduction="sum")
            correct = (logits_all.argmax(1) == y).sum()
        else:
            ce = correct = torch.zeros((), device=x.device)
    return StepStats(n, forward, backward, global_active, global_loaded, global_weight, ce, correct,
                     sig.detach(), stop, diverged, synced, selected, n if scoring else 0)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, settings: StepSettings,
                   window_active: int, grad_clip: float,
                   divisor: float | torch.Tensor | None = None) -> bool:
    """Finish an accumulation window. Returns False when the step was skipped.

    Gradients hold the *weighted sum* over the window's active samples (all ranks); the
    step divides it by ``divisor``, the method's normalisation
    (``SparseMethod.step_divisor``; None: the active count). AST's methods pass the
    window's global weight sum, which gives the exact weighted mean over the samples that
    were really trained, however they were spread over micro-steps and ranks; dividing
    by the count instead would scale the step by the mean weight (3.2x at keep
    probability 0.05), which is what InfoBatch's rule does on purpose (docs/design.md §4).
    With nothing active anywhere the step is skipped: momentum and weight decay would
    otherwise still move the weights, and GradScaler would raise for lack of inf checks.
    """
    if window_active == 0:
        optimizer.zero_grad(set_to_none=True)
        return False
    if settings.scaler is not None:
        settings.scaler.unscale_(optimizer)
    divisor = window_active if divisor is None else divisor
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads:
        if isinstance(divisor, torch.Tensor):
            divisor = divisor.to(grads[0].device, grads[0].dtype)
        torch._foreach_div_(grads, divisor)  # one fused launch, not one per parameter
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if settings.scaler is not None:
        settings.scaler.step(optimizer)
        settings.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return True
