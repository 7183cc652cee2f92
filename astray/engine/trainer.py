"""The training run: ``python -m astray.train CONFIG [--set key=value ...] [--resume]``.

Runs alone, under ``torchrun --nproc_per_node N -m astray.train CONFIG`` (DDP), or
inside a Ray Tune trial (``run(cfg, report=...)``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from astray import __version__
from astray import distributed as dist
from astray.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from astray.config import RunConfig, load_config, save_config
from astray.data import build_datasets
from astray.energy import create_meter, measure_idle_watts
from astray.errors import AstrayError, ConfigError, TrainingDiverged, cli_entry
from astray.flops import measure_sample_flops
from astray.metrics import macro_f1, read_metrics, write_metrics
from astray.models import check_model_name, create_model
from astray.sparse import PIController, create_strategy
from astray.step import StepSettings, optimizer_step, train_step

Report = Callable[[dict[str, Any], Path], None]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("training.device='cuda' but no CUDA device is available; use auto or cpu")
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


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


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.training
    # No weight decay on biases and normalisation weights (1-D parameters).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr)


def epoch_is_sparse(cfg: RunConfig, epoch: int) -> bool:
    """Dense for warm-up epochs, the final dense share, and the dense strategy."""
    a = cfg.ast
    final_dense = int(round(a.final_dense_fraction * cfg.training.epochs))
    return a.strategy != "dense" and epoch >= a.warmup_epochs and epoch < cfg.training.epochs - final_dense


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, num_classes: int,
             autocast: Callable[[], contextlib.AbstractContextManager], channels_last: bool) -> dict[str, float]:
    """Loss, accuracy and macro F1 over this rank's validation shard, summed over ranks."""
    net = dist.unwrap(model)
    net.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for x, y, _ in loader:
        x, y = _to_device(x, y, device, channels_last)
        with autocast():
            logits = net(x)
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum").cpu().double()
        pred = logits.argmax(1)
        confusion += torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes ** 2).view(
            num_classes, num_classes)
    net.train()
    bd = dist.backend_device()
    loss_sum = dist.all_reduce_sum(loss_sum.to(bd)).cpu()
    confusion = dist.all_reduce_sum(confusion.to(bd)).cpu()
    n = int(confusion.sum())
    return {"val_loss": float(loss_sum) / max(n, 1), "val_acc": float(confusion.diag().sum()) / max(n, 1),
            "val_macro_f1": macro_f1(confusion)}


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def _autocast_factory(cfg: RunConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    mp = cfg.training.mixed_precision
    if mp == "none" or device.type != "cuda":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mp == "bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


@dataclass
class RunResult:
    rows: list[dict[str, Any]]
    output_dir: Path
    stopped: str  # "completed" | "early_stop" | "max_minutes"


def _log(msg: str) -> None:
    if dist.is_primary():
        print(msg, flush=True)


def validate_for_run(cfg: RunConfig, resume: bool) -> Path:
    """Checks that need more than the config itself; all run before any work or write."""
    check_model_name(cfg.model.name)
    out = Path(cfg.logging.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"logging.output_dir={str(out)!r} exists and is not a directory")
    last = out / "last.pt"
    if resume and not last.exists():
        raise ConfigError(f"--resume: no checkpoint at {str(last)!r} (logging.output_dir={str(out)!r})")
    if not resume and last.exists():
        raise ConfigError(f"logging.output_dir={str(out)!r} already holds a run (last.pt); "
                          "pass --resume to continue it, or choose another output_dir")
    return out


def run(cfg: RunConfig, resume: bool = False, report: Report | None = None) -> RunResult:
    """Train per ``cfg``; write metrics.parquet, config.yaml, last.pt and best.pt.

    ``report(row, output_dir)`` is called on every rank after each epoch, once the
    primary has the row and the checkpoint on disk (Ray Tune and Ray Train use it).
    """
    out = validate_for_run(cfg, resume)
    device = resolve_device(cfg.training.device)
    created_group = dist.setup(device.type)
    try:
        return _run(cfg, resume, report, out, device)
    finally:
        dist.teardown(created_group)


def _run(cfg: RunConfig, resume: bool, report: Report | None, out: Path, device: torch.device) -> RunResult:
    t, a = cfg.training, cfg.ast
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    world = dist.world_size()
    started = time.perf_counter()

    data = build_datasets(cfg.dataset)
    model = create_model(cfg.model, data.num_classes).to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sample_flops = measure_sample_flops(model, data.train[0][0].to(device))
    optimizer = make_optimizer(cfg, model)
    strategy = create_strategy(a, len(data.train), t.seed, t.batch_size * world)
    controller = PIController.from_config(a)
    meter = create_meter(cfg.energy, device)
    energy_scope = ("process" if meter.source == "model"
                    else "device-shared" if cfg.energy.device_shared else "device")
    idle_w = 0.0
    if cfg.energy.subtract_idle and meter.source == "model":
        raise ConfigError("energy.subtract_idle=true needs a measured meter (nvml, rapl); "
                          "the model meter's power is a constant")
    if cfg.energy.subtract_idle:
        # Summed over this rank's devices; measured before any work so the device idles.
        idle_w = measure_idle_watts(meter, cfg.energy.idle_seconds)
    autocast = _autocast_factory(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if (t.mixed_precision == "fp16" and device.type == "cuda") else None
    settings = StepSettings(a.entropy_weight, t.label_smoothing, autocast, scaler, cfg.model.channels_last)

    rows: list[dict[str, Any]] = []
    start_epoch, best_acc, epochs_no_gain, elapsed_before = 0, -1.0, 0, 0.0
    if resume:
        ckpt = load_checkpoint(out / "last.pt", device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        controller.load_state_dict(ckpt["controller"])
        strategy.load_state_dict(ckpt["strategy"])
        set_rng_state(ckpt["rng"])
        start_epoch, best_acc, epochs_no_gain = ckpt["epoch"], ckpt["best_val_acc"], ckpt["epochs_without_gain"]
        elapsed_before = ckpt["time_s"]
        if (out / "metrics.parquet").exists():
            rows = [r for r in read_metrics(out / "metrics.parquet") if r["epoch"] <= start_epoch]
        _log(f"resuming {out} after epoch {start_epoch}")
    model = dist.wrap_model(model, device)

    if dist.is_primary():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    val_loader = DataLoader(data.val, batch_size=t.batch_size * 2,
                            sampler=list(range(dist.rank(), len(data.val), world)),
                            num_workers=cfg.dataset.num_workers, pin_memory=cfg.dataset.pin_memory)
    _log(f"astray {__version__}: {cfg.model.name} on {cfg.dataset.type} ({len(data.train)} train / "
         f"{len(data.val)} val), strategy {a.strategy}, {world} process(es) on {device}, "
         f"energy source {meter.source}" + (f" (idle {idle_w:.1f} W subtracted)" if idle_w else ""))

    stopped = "completed"
    for epoch in range(start_epoch, t.epochs):
        sparse = epoch_is_sparse(cfg, epoch)
        plan = strategy.plan_epoch(epoch, controller, dense=not sparse)
        positions = dist.shard(torch.arange(plan.indices.numel()))
        local = plan.indices[positions]
        if local.numel() % t.batch_size == 1 and local.numel() > 1:
            local = local[:-1]  # a last batch of one sample breaks training-mode BatchNorm
        weight_of = torch.ones(len(data.train))
        if plan.weights is not None:
            weight_of[plan.indices] = plan.weights
        loader = DataLoader(data.train, batch_size=t.batch_size, sampler=local.tolist(),
                            num_workers=cfg.dataset.num_workers, pin_memory=cfg.dataset.pin_memory)
        steps = len(loader)

        totals = dict(loaded=0, forward=0, backward=0, loss=0.0, correct=0, global_backward=0)
        seen_idx, seen_sig = [], []
        window_active, stop, nonfinite = 0, False, False
        meter.begin()
        t0 = time.perf_counter()
        for step, (x, y, idx) in enumerate(loader):
            x, y = _to_device(x, y, device, cfg.model.channels_last)
            progress = epoch + step / max(steps, 1)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, progress, world)
            over_time = t.max_minutes > 0 and (elapsed_before + time.perf_counter() - started) > 60 * t.max_minutes
            s = train_step(model, x, y, weight_of[idx].to(device), strategy, controller, settings,
                           sparse=sparse, progress=progress, stop_requested=over_time, nonfinite_seen=nonfinite,
                           calibrate=a.strategy != "dense")
            if s.diverged:
                raise TrainingDiverged(f"training loss became non-finite or exceeded training.max_loss="
                                       f"{t.max_loss:g} at epoch {epoch + 1} step {step} "
                                       f"(lr {lr_at(cfg, progress, world):.3g})")
            mean_loss = s.loss_sum / max(s.loaded, 1)
            nonfinite = not math.isfinite(mean_loss) or (t.max_loss > 0 and mean_loss > t.max_loss)
            window_active += s.global_active
            last_in_window = (step + 1) % t.grad_accum_steps == 0 or step + 1 == steps or s.stop
            if last_in_window:
                optimizer_step(model, optimizer, settings, window_active, t.grad_clip)
                window_active = 0
            totals["loaded"] += s.loaded
            totals["forward"] += s.forward
            totals["backward"] += s.backward
            totals["loss"] += s.loss_sum
            totals["correct"] += s.correct
            seen_idx.append(idx)
            seen_sig.append(s.sig)
            if cfg.logging.log_every_steps and (step + 1) % cfg.logging.log_every_steps == 0:
                _log(f"  epoch {epoch + 1} step {step + 1}/{steps} threshold {controller.threshold:.4g}")
            if s.stop:
                stop = True
                break
        train_time = time.perf_counter() - t0
        energy = meter.end()

        # Stale mode: every rank records every rank's fresh scores, so the score tables
        # (and so next epoch's kept lists) stay identical (DESIGN.md §3 rule 4).
        idx_all = dist.all_gather_cat(torch.cat(seen_idx).to(dist.backend_device())).cpu()
        sig_all = dist.all_gather_cat(torch.cat(seen_sig).to(dist.backend_device())).cpu()
        strategy.observe(idx_all, sig_all)
        dist.check_same_on_all_ranks(controller.threshold, "controller threshold")

        summed = dist.all_reduce_sum(torch.tensor(
            [totals["loaded"], totals["forward"], totals["backward"], totals["loss"], totals["correct"]],
            dtype=torch.float64, device=dist.backend_device())).cpu().tolist()
        loaded, fwd, bwd, loss_sum, correct = summed
        if not math.isfinite(loss_sum) or (t.max_loss > 0 and loss_sum / max(loaded, 1) > t.max_loss):
            raise TrainingDiverged(f"training loss became non-finite or exceeded training.max_loss="
                                   f"{t.max_loss:g} in epoch {epoch + 1}")
        meter.begin()
        val = evaluate(model, val_loader, device, data.num_classes, autocast, cfg.model.channels_last)
        val_energy = meter.end()
        # Slowest rank's times are the run's times.
        times = dist.all_reduce_max(torch.tensor([train_time, time.perf_counter() - started],
                                                 dtype=torch.float64, device=dist.backend_device())).cpu()
        if idle_w:
            energy = max(0.0, energy - idle_w * train_time)
        energy = dist.sum_over_devices(meter.device_keys, energy)
        val_energy = dist.sum_over_devices(meter.device_keys, val_energy)
        n_total = len(data.train)
        row = {
            "epoch": epoch + 1, "train_loss": loss_sum / max(loaded, 1), "train_acc": correct / max(loaded, 1),
            **val,
            "activation_rate": bwd / n_total, "threshold": controller.threshold,
            "samples_total": n_total, "samples_forward": int(fwd), "samples_backward": int(bwd),
            "flops": sample_flops.executed(int(fwd), int(bwd)), "flops_dense": sample_flops.dense(n_total),
            "train_time_s": float(times[0]), "time_s": elapsed_before + float(times[1]),
            "energy_j": energy, "val_energy_j": val_energy, "energy_source": meter.source,
            "energy_scope": energy_scope, "idle_w": idle_w,
            "lr": optimizer.param_groups[0]["lr"], "strategy": a.strategy if sparse else "dense",
        }
        rows.append(row)

        improved = row["val_acc"] > best_acc
        if improved:
            best_acc, epochs_no_gain = row["val_acc"], 0
        else:
            epochs_no_gain += 1
        if dist.is_primary():
            state = {
                "model": dist.unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "controller": controller.state_dict(), "strategy": strategy.state_dict(),
                "rng": rng_state(), "epoch": epoch + 1, "best_val_acc": best_acc,
                "epochs_without_gain": epochs_no_gain, "time_s": row["time_s"],
                "astray_version": __version__, "model_name": cfg.model.name, "num_classes": data.num_classes,
            }
            atomic_save(state, out / "last.pt")
            if improved:
                atomic_save(state, out / "best.pt")
            write_metrics(rows, out / "metrics.parquet")
        if report is not None:
            # Every rank reports the same (all-reduced) row: Ray Train's report is a
            # barrier all workers must reach; only the primary's files exist.
            report(row, out)
        _log(_progress_line(row, t.epochs))

        if stop:
            stopped = "max_minutes"
            _log(f"stopping: training.max_minutes={t.max_minutes:g} reached during epoch {epoch + 1}")
            break
        if t.early_stop_patience and epochs_no_gain >= t.early_stop_patience:
            stopped = "early_stop"
            _log(f"stopping: no val_acc gain for {epochs_no_gain} epochs (training.early_stop_patience)")
            break
    dist.barrier()
    return RunResult(rows, out, stopped)


def _progress_line(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs} [{row['strategy']}] "
            f"train_loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
            f"val_acc {row['val_acc']:.4f} f1 {row['val_macro_f1']:.4f} | "
            f"act {row['activation_rate']:.3f} thr {row['threshold']:.4g} | "
            f"bwd {row['samples_backward']}/{row['samples_total']} "
            f"flops {row['flops'] / row['flops_dense']:.2f}x dense | "
            f"{row['train_time_s']:.1f}s | {row['energy_j']:.1f} J ({row['energy_source']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m astray.train", description=__doc__.splitlines()[0])
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set ast.target_activation=0.3 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from <logging.output_dir>/last.pt")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    try:
        result = run(cfg, resume=args.resume)
    except AstrayError:
        raise
    except KeyboardInterrupt:
        _log("interrupted: the last finished epoch is in last.pt; continue with --resume")
        return 130
    except TrainingDiverged as exc:
        _log(f"diverged: {exc}; finished epochs are kept in {cfg.logging.output_dir}")
        return 1
    last = result.rows[-1] if result.rows else None
    if last is not None:
        _log(f"done ({result.stopped}): val_acc {last['val_acc']:.4f}, "
             f"results in {result.output_dir}/metrics.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
