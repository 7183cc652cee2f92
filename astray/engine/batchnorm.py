"""BatchNorm running statistics under sparse training (docs/design.md §4).

Sparse steps train on selected, hard subsets; running statistics fed only by those
describe the subsets, not the data the model is evaluated on. Two remedies, used
together: the training forward of a scored step leaves the statistics alone
(:func:`frozen_statistics`), and after each sparse epoch :func:`recalibrate` re-estimates
them from random training samples ("precise BN"), whose forwards are counted as work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from astray.engine import ddp


def layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that keep running statistics."""
    return [m for m in ddp.unwrap(model).modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def frozen_statistics(model: nn.Module):
    """BatchNorm layers normalise with their batch's statistics but do not update their
    running ones (momentum 0), so a biased subset cannot pull them off the data."""
    bns = layers(model)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum


@torch.no_grad()
def recalibrate(model: nn.Module, data: Dataset, indices: torch.Tensor, batch_size: int,
                to_device: Callable[[torch.Tensor], torch.Tensor],
                autocast: Callable[[], contextlib.AbstractContextManager]) -> int:
    """Re-estimate every BatchNorm layer's running statistics from ``data[indices]``.

    Each rank forwards its share (``indices`` are the same on every rank and are sharded
    here); the statistics are the average over batches (momentum ``None``), then averaged
    over ranks, so every rank ends with the same buffers. Returns this rank's forwards.
    """
    bns = layers(model)
    if not bns or indices.numel() == 0:
        return 0
    local = ddp.shard(indices)
    if local.numel() % batch_size == 1 and local.numel() > 1:
        local = local[:-1]  # a training-mode BatchNorm cannot take a batch of one
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    net = ddp.unwrap(model)
    forwards = 0
    try:
        for x, _, _ in DataLoader(data, batch_size=batch_size, sampler=local.tolist()):
            with autocast():
                net(to_device(x))
            forwards += x.shape[0]
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
    ddp.average_([t for m in bns for t in (m.running_mean, m.running_var)])
    return forwards
