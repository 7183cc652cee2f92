"""All rank logic in one place: process group, rank facts, the collectives the DDP
rules need (docs/design.md §3), and model wrapping.

Nothing else in astray imports ``torch.distributed``; the step and the trainer call the
helpers here by what they mean (``step_counts``, ``gather_scores``, ``slowest``).
Every helper is a no-op (or the identity) in a single process, so the loop reads the
same with one rank or many.
"""

from __future__ import annotations

import contextlib

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_primary() -> bool:
    """Only the primary rank logs and writes files (also before/after the group exists)."""
    if is_distributed():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_type: str, timeout_s: float = 600.0) -> bool:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Returns True when this call created the group (so :func:`teardown` should end it).
    A group made by someone else (Ray Train) is left alone.
    """
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def teardown(created: bool) -> None:
    if created and is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _all_reduce(values: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    if not is_distributed():
        return values
    out = values.clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (on a copy); identity in one process."""
    return _all_reduce(values, dist.ReduceOp.SUM)


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    return _all_reduce(values, dist.ReduceOp.MAX)


def all_gather_cat(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor from every rank (lengths may differ), rank order."""
    if not is_distributed():
        return values
    device = values.device
    n = torch.tensor([values.numel()], device=device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=values.dtype, device=device)
    padded[: values.numel()] = values
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def average_(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over ranks, in place (e.g. BatchNorm buffers)."""
    if not is_distributed():
        return
    for t in tensors:
        out = all_reduce_sum(t.to(backend_device())) / world_size()
        t.copy_(out.to(t.device))


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum over ranks, in float64 (epoch totals)."""
    return all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=backend_device())).cpu().tolist()


def slowest(values: list[float]) -> list[float]:
    """Element-wise maximum over ranks: the slowest rank's times are the run's times."""
    return all_reduce_max(torch.tensor(values, dtype=torch.float64, device=backend_device())).cpu().tolist()


def step_counts(n_selected: int, n_loaded: int, weight_sum: float | torch.Tensor, stop: bool,
                nonfinite: bool | torch.Tensor) -> tuple[int, int, float | torch.Tensor, bool, bool | torch.Tensor]:
    """Rules 1 and 3: the step's one all-reduce.

    It gives the global active count and loss-weight sum for the loss normalisation,
    the global counts the (shared) controller is fed, and the stop and divergence flags,
    so every rank takes the same branch and stops together. Under DDP its result is read
    on the host (a sync on CUDA: the branch depends on it); in one process nothing is
    reduced and the device values pass through unread.
    Returns (active, loaded, weight sum, stop, diverged).
    """
    if not is_distributed():
        return n_selected, n_loaded, weight_sum, stop, nonfinite
    bd = backend_device()
    parts = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(bd) for v in
                         (n_selected, n_loaded, weight_sum, int(stop), nonfinite)])
    counts = all_reduce_sum(parts).tolist()
    return int(counts[0]), int(counts[1]), float(counts[2]), counts[3] > 0, counts[4] > 0


def loss_scale() -> int:
    """Rule 1: a rank's loss is its weighted *sum* times this, because DDP averages the
    gradients over ranks; the optimizer step then divides by the global weight sum."""
    return world_size()


def zero_weight_stand_in(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rule 2: a rank that selected nothing still runs forward and backward, on two
    samples whose loss is scaled to zero, so its gradient all-reduce meets its peers'."""
    return x[:2], y[:2], None if w is None else w[:2]


def gather_scores(indices: torch.Tensor, sig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rule 4: every rank's fresh (dataset index, significance) pairs, on every rank, so
    the stale score tables (and so the next epoch's plans) stay identical."""
    bd = backend_device()
    return all_gather_cat(indices.to(bd)).cpu(), all_gather_cat(sig.to(bd)).cpu()


def check_same_on_all_ranks(value: float, what: str) -> None:
    """Raise if ``value`` differs between ranks: an invariant, checked not assumed."""
    if not is_distributed():
        return
    t = torch.tensor([value, -value], dtype=torch.float64)
    if backend_device() == "cuda":
        t = t.cuda()
    t = all_reduce_max(t)
    hi, lo = t[0].item(), -t[1].item()
    if hi != lo:
        raise RuntimeError(f"{what} differs between ranks ({lo} .. {hi}); DDP state diverged")


def backend_device() -> str:
    """The device collectives must use: CUDA tensors for nccl, CPU for gloo."""
    if is_distributed() and dist.get_backend() == "nccl":
        return "cuda"
    return "cpu"


def shard(indices: torch.Tensor) -> torch.Tensor:
    """Rule 4: this rank's equal share of a global index list.

    The list is padded by wrapping around to a multiple of the world size, so every
    rank gets the same number of samples, runs the same number of steps, and no rank
    idles or waits in a collective the others never reach.
    """
    ws = world_size()
    if ws == 1:
        return indices
    n = indices.numel()
    total = -(-n // ws) * ws
    if total > n:
        reps = -(-total // max(n, 1))
        indices = indices.repeat(reps)[:total]
    return indices[rank()::ws]


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap in DDP when distributed; the model file itself knows nothing of ranks."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    # DDP syncs BatchNorm buffers from rank 0 in each training forward. Every rank
    # runs exactly one training forward per step (rule 2), so that collective always
    # pairs up; scoring and evaluation call the unwrapped module and sync nothing.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """DDP's gradient all-reduce on (the default) or off for one forward and backward
    (rule 6): off on the micro-steps of an accumulation window that do not end it."""
    if enabled or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def average_gradients_(model: nn.Module) -> None:
    """Average every gradient over ranks, in place, in one flat all-reduce (rule 6): for a
    window whose backward passes all ran under ``no_sync``, because its last micro-step
    trained nothing anywhere and so ran no backward to carry DDP's all-reduce."""
    if not is_distributed():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = all_reduce_sum(flat.to(backend_device())).to(flat.device) / world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gather_objects(value: Any) -> list[Any]:
    """Every rank's (picklable) value, in rank order: node names, RNG states."""
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def sum_over_devices(device_keys: list[str], joules: float) -> float:
    """Sum energy over ranks, counting each physical device once.

    Meters read whole devices: two ranks sharing a GPU (or a CPU package) would
    otherwise each report the same joules. Ranks with the same device set report the
    same window, so the first rank's reading stands for them.
    """
    if not is_distributed():
        return joules
    entries: list[tuple[tuple[str, ...], float]] = [((), 0.0)] * world_size()
    dist.all_gather_object(entries, (tuple(sorted(device_keys)), joules))
    seen: dict[tuple[str, ...], float] = {}
    for keys, value in entries:
        seen.setdefault(keys, value)
    return sum(seen.values())
