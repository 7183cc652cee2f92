"""Irreducible losses for ``ast.significance=reducible`` (RHO-LOSS; docs/design.md §11).

Each training sample's irreducible loss is its loss under a model that never trained on
it. The training split is cut into ``ast.irreducible.folds`` stratified folds (fixed by
``dataset.seed``); for each fold a fresh model of ``model.name`` trains densely on the
other folds for ``ast.irreducible.epochs`` epochs (the run's optimizer, a cosine
schedule over those epochs), then scores its fold once, in eval mode, on the images
evaluation sees. The labels are the ones training sees, noisy ones included: a
mislabelled sample is one the held-out model also gets wrong, so its reducible loss
(training loss − irreducible loss) is small, where its training loss alone is large.

The work is executed, so it is counted: :class:`SetupCost` holds its FLOPs (the run's
per-sample forward and backward FLOPs times the samples each pass saw), its wall time
and its energy (the run's meter, over the whole computation), and the trainer charges it
to the first epoch as its own columns (``setup_flops``, ``setup_time_s``,
``setup_energy_j``), included in that epoch's totals.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from astray.config.run import RunConfig
from astray.engine import ddp
from astray.engine.data import IndexedDataset, _labels_of, _stratified_folds
from astray.engine.flops import SampleFlops
from astray.engine.models import create_model
from astray.engine.schedule import lr_at, make_optimizer


@dataclass(frozen=True)
class SetupCost:
    """Work a run did before its first epoch, on this rank."""

    flops: float = 0.0
    time_s: float = 0.0
    energy_j: float = 0.0


def irreducible_losses(cfg: RunConfig, train: IndexedDataset, scoring: IndexedDataset, num_classes: int,
                       device: torch.device, flops: SampleFlops, meter, log: Callable[[str], None],
                       to_device: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, SetupCost]:
    """Every training sample's irreducible loss (float32, by dataset index) and what it cost.

    ``train`` is the training split as training loads it (augmented), ``scoring`` the same
    samples through the evaluation transform. Under DDP every rank computes the losses
    (the same seeds) and rank 0's are kept, so every rank selects by the same numbers."""
    ir = cfg.ast.irreducible
    n = len(train)
    folds = _stratified_folds(_labels_of(train.base), ir.folds, cfg.dataset.seed)
    # The run's optimizer and lr, a schedule of its own over the irreducible epochs.
    sub_cfg = dataclasses.replace(cfg, training=dataclasses.replace(
        cfg.training, epochs=ir.epochs, lr_warmup_epochs=min(cfg.training.lr_warmup_epochs, ir.epochs / 2),
        schedule="cosine", lr_milestones=[]))
    losses = torch.full((n,), math.nan)
    forward = backward = 0
    meter.begin()
    t0 = time.perf_counter()
    for k, fold in enumerate(folds):
        rest = torch.cat([f for j, f in enumerate(folds) if j != k])
        # Its own seeded stream: the main run's RNG and the model's initialisation are untouched.
        gen = torch.Generator().manual_seed(cfg.training.seed * 7919 + k)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.training.seed * 7919 + k)
            model = create_model(cfg.model, num_classes).to(device)
            optimizer = make_optimizer(sub_cfg, model)
            model.train()
            batch = cfg.training.batch_size
            steps = math.ceil(rest.numel() / batch)
            for epoch in range(ir.epochs):
                order = rest[torch.randperm(rest.numel(), generator=gen)]
                if order.numel() % batch == 1:
                    order = order[:-1]  # a batch of one breaks training-mode BatchNorm
                loader = DataLoader(torch.utils.data.Subset(train, order.tolist()), batch_size=batch)
                for step, (x, y, _) in enumerate(loader):
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(sub_cfg, epoch + step / steps, 1)
                    loss = F.cross_entropy(model(to_device(x)).float(), y.to(device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    forward += y.numel()
                    backward += y.numel()
            model.eval()
            loader = DataLoader(torch.utils.data.Subset(scoring, fold.tolist()), batch_size=2 * batch)
            with torch.no_grad():
                for x, y, idx in loader:
                    logits = model(to_device(x)).float()
                    losses[idx] = F.cross_entropy(logits, y.to(device), reduction="none").cpu()
                    forward += y.numel()
        log(f"irreducible loss: model {k + 1}/{len(folds)} trained on {rest.numel()} samples for "
            f"{ir.epochs} epoch(s), scored {fold.numel()}: mean {float(losses[fold].mean()):.4f}")
    elapsed = time.perf_counter() - t0
    energy = meter.end()
    if ddp.is_distributed():  # rank 0's numbers on every rank
        losses = ddp.all_reduce_sum((losses * (ddp.rank() == 0)).to(ddp.backend_device())).cpu()
    return losses, SetupCost(flops.executed(forward, backward), elapsed, energy)
