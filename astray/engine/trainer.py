"""The training engine: a :class:`Trainer` per run, and :func:`run`, which drives it.

``run(cfg, resume, report=callback)`` trains alone, under ``torchrun`` (DDP), or inside a
Ray trial: the engine knows nothing of Ray, and every rank rule it follows is a call
into ``astray.engine.ddp`` (docs/design.md §3). The command is ``astray.cli.train``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from astray import __version__
from astray.config.load import save_config
from astray.config.run import RunConfig
from astray.engine import batchnorm, ddp
from astray.engine.data import IndexedDataset, PlanSampler, build_datasets
from astray.engine.energy import create_meter, measure_idle_watts
from astray.engine.flops import SampleFlops, measure_forward_flops, measure_sample_flops
from astray.engine.irreducible import SetupCost, irreducible_losses
from astray.engine.models import check_model_name, create_model
from astray.engine.records import (
    EpochRow,
    macro_f1,
    read_metrics,
    read_steps,
    write_flips,
    write_metrics,
    write_steps,
)
from astray.engine.schedule import lr_at, make_optimizer
from astray.engine.state import (
    BEST,
    CONFIG,
    LABEL_NOISE,
    LAST,
    METRICS,
    STEPS,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from astray.engine.step import StepSettings, StepStats, downscale, train_step
from astray.engine.steplog import StepLog
from astray.engine.totals import EpochTotals, GradientWindow
from astray.errors import ConfigError, TrainingDiverged
from astray.schema import SCOPE_DEVICE, SCOPE_DEVICE_SHARED, SCOPE_PROCESS
from astray.sparse import MethodContext, PIController, create_method
from astray.sparse.dense import Dense
from astray.sparse.selection import epoch_generator
from astray.extras import require_extra
from astray.trackers import RunTensorBoard

# report(row, output_dir, improved=..., final=..., steps=...): called on every rank after
# each epoch, once the primary has the row and the checkpoint on disk (the sweep's trial
# hands them to Ray). ``improved``: best.pt was written this epoch; ``final``: no epoch
# follows; ``steps``: the epoch's rows of steps.parquet.
Report = Callable[..., None]


@dataclass
class RunResult:
    rows: list[dict[str, Any]]  # one EpochRow (as a dict) per finished epoch, resumed ones included
    output_dir: Path
    stopped: str  # "completed" | "early_stop" | "max_minutes"


@dataclass
class EpochWork:
    """The training part of one epoch, summed over ranks."""

    loaded: float
    forward: float
    backward: float
    loss_sum: float
    correct: float
    train_time_s: float  # this rank's
    energy_j: float  # this rank's meter window
    stop: bool  # training.max_minutes ran out during the epoch
    steps: list[dict[str, Any]]  # the epoch's rows of steps.parquet
    noisy: float = 0.0  # samples trained whose label dataset.label_noise flipped, all ranks
    scored: float = 0.0  # of ``forward``, the scoring forwards (at the method's score_scale), all ranks

    def flops(self, per_sample: SampleFlops) -> float:
        """The epoch's executed training FLOPs."""
        return per_sample.executed(int(self.forward), int(self.backward), int(self.scored))


def intra_op_threads(configured: int) -> tuple[int, str]:
    """torch's intra-op threads for this process and where the number comes from:
    ``training.threads``, else ``OMP_NUM_THREADS`` (Ray trials get it from their CPU
    request), else the CPUs this process may run on (its affinity mask, not the
    machine's count) shared among the processes of this node. torch's own default is
    one thread per core of the machine, and on a shared node every step then waits
    for the thread whose core another job took (docs/design.md §12)."""
    if configured > 0:
        return configured, "training.threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    where = f"{cpus} CPUs in this process's affinity" + (f" / {local} processes on this node" if local > 1 else "")
    return max(1, cpus // local), where


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("training.device='cuda' but no CUDA device is available; use auto or cpu")
        return torch.device("cuda", ddp.local_rank())
    return torch.device("cpu")


def validate_for_run(cfg: RunConfig, resume: bool) -> Path:
    """Checks that need more than the config itself; all run before any work or write."""
    check_model_name(cfg.model.name)
    if cfg.logging.tensorboard:
        require_extra("tensorboard", "tensorboard", "logging.tensorboard=true")
    out = Path(cfg.logging.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"logging.output_dir={str(out)!r} exists and is not a directory")
    last = out / LAST
    if resume and not last.exists():
        raise ConfigError(f"--resume: no checkpoint at {str(last)!r} (logging.output_dir={str(out)!r})")
    if not resume and last.exists():
        raise ConfigError(f"logging.output_dir={str(out)!r} already holds a run (last.pt); "
                          "pass --resume to continue it, or choose another output_dir")
    return out


def run(cfg: RunConfig, resume: bool = False, report: Report | None = None) -> RunResult:
    """Train per ``cfg``; write metrics.parquet, config.yaml, last.pt and best.pt."""
    out = validate_for_run(cfg, resume)
    device = resolve_device(cfg.training.device)
    created_group = ddp.setup(device.type)
    try:
        return Trainer(cfg, out, device, resume).fit(report)
    finally:
        ddp.teardown(created_group)


_PREFIX = [""]  # what every line of this process starts with (a sweep trial: its configuration and replicate)


def set_log_prefix(prefix: str) -> None:
    """Start every line :func:`log` prints with ``prefix`` (``astray.sweep.trainable`` sets
    ``[search-0003 r1] ``, so a sweep's interleaved trial lines say whose they are)."""
    _PREFIX[0] = prefix


def log(msg: str) -> None:
    """Print from the primary rank only."""
    if ddp.is_primary():
        print(_PREFIX[0] + msg, flush=True)


class Trainer:
    """One training run: built (and resumed) by the constructor, then :meth:`fit`.

    :meth:`run_epoch` trains one epoch, :meth:`evaluate` scores the validation split,
    :meth:`state_dict` is what ``last.pt``/``best.pt`` hold.
    """

    def __init__(self, cfg: RunConfig, out: Path, device: torch.device, resume: bool) -> None:
        t, a = cfg.training, cfg.ast
        self.cfg, self.out, self.device = cfg, out, device
        # The order below fixes how the global RNG is consumed: a resumed run and an
        # uninterrupted one must draw the same numbers.
        self.threads, threads_from = intra_op_threads(t.threads)
        torch.set_num_threads(self.threads)
        # Each rank its own stream (augmentation, loader workers); DDP broadcasts rank
        # 0's initial weights, and the strategies draw their plans from (seed, epoch).
        seed_everything(t.seed + ddp.rank())
        self.world = ddp.world_size()
        self.started = time.perf_counter()

        self.data = build_datasets(cfg.dataset)
        self.recalibration_data = IndexedDataset(self.data.train.base, self.data.val.transform)
        noisy = self.data.noisy_mask()
        self.noisy_of = None if noisy is None else noisy.to(device)
        model = create_model(cfg.model, self.data.num_classes).to(device)
        if cfg.model.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.sample_flops = measure_sample_flops(model, self.data.train[0][0].to(device))
        self.optimizer = make_optimizer(cfg, model)
        self.method = create_method(a, MethodContext(len(self.data.train), t.seed, t.epochs, t.batch_size, self.world))
        if self.method.scores_before_backward and self.method.score_scale < 1:
            self.sample_flops = self._scoring_flops(model, self.data.train[0][0].to(device))
        if device.type == "cuda":
            # Autotune kernels per shape only where shapes are bounded (docs/design.md §10).
            torch.backends.cudnn.benchmark = self.method.bounded_shapes
        self.controller = PIController.from_config(a)
        self.meter = create_meter(cfg.energy, device)
        self.energy_scope = (SCOPE_PROCESS if self.meter.source == "model"
                             else SCOPE_DEVICE_SHARED if cfg.energy.device_shared else SCOPE_DEVICE)
        self.idle_w = 0.0
        if cfg.energy.subtract_idle and self.meter.source == "model":
            raise ConfigError("energy.subtract_idle=true needs a measured meter (nvml, rapl); "
                              "the model meter's power is a constant")
        if cfg.energy.subtract_idle:
            # Summed over this rank's devices; measured before any work so the device idles.
            self.idle_w = measure_idle_watts(self.meter, cfg.energy.idle_seconds)
        self.autocast = _autocast_factory(cfg, device)
        self.scaler = torch.amp.GradScaler("cuda") if (t.mixed_precision == "fp16" and device.type == "cuda") else None
        self.settings = StepSettings(self.method.entropy_weight, t.label_smoothing, self.autocast, self.scaler,
                                     cfg.model.channels_last)

        self.rows: list[dict[str, Any]] = []
        self.step_rows: list[dict[str, Any]] = []  # steps.parquet
        self.start_epoch, self.best_acc, self.epochs_no_gain, self.elapsed_before = 0, -1.0, 0, 0.0
        self.setup = SetupCost()  # work before the first epoch (the irreducible-loss models), this run
        if resume:
            self.load_state_dict(load_checkpoint(out / LAST), model)
            if (out / METRICS).exists():
                self.rows = [r for r in read_metrics(out / METRICS) if r["epoch"] <= self.start_epoch]
            if (out / STEPS).exists():
                self.step_rows = [r for r in read_steps(out / STEPS) if r["epoch"] <= self.start_epoch]
            log(f"resuming {out} after epoch {self.start_epoch}")
        self.net = model  # the plain module: checkpoints hold its state_dict
        if t.compile:
            # Compiled inside DDP, so the scoring and evaluation forwards (which call the
            # unwrapped module) run compiled too and never enter DDP (docs/design.md §10).
            model = torch.compile(model)
        self.model = ddp.wrap_model(model, device)

        self.tensorboard: RunTensorBoard | None = None
        if ddp.is_primary():
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / CONFIG)
            if self.data.flips:
                write_flips(self.data.flips, out / LABEL_NOISE)
            if cfg.logging.tensorboard:
                self.tensorboard = RunTensorBoard(out, (out / CONFIG).read_text())
        # One training loader for the run (docs/design.md §10): its workers persist and
        # prefetch across epochs; each epoch hands its plan to the sampler. Its own
        # generator, so creating it draws nothing from the training RNG stream.
        workers = cfg.dataset.num_workers
        self.train_sampler = PlanSampler(seeded=workers > 0)
        self.train_loader = DataLoader(self.data.train, batch_size=t.batch_size, sampler=self.train_sampler,
                                       num_workers=workers, pin_memory=cfg.dataset.pin_memory,
                                       persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                                       generator=torch.Generator().manual_seed(t.seed))
        self.val_loader, self.test_loader = (
            DataLoader(split, batch_size=t.batch_size * 2, sampler=list(range(ddp.rank(), len(split), self.world)),
                       num_workers=cfg.dataset.num_workers, pin_memory=cfg.dataset.pin_memory)
            for split in (self.data.val, self.data.test))
        # A bar per epoch in a terminal (the primary only); plain lines elsewhere, as in Ray trials.
        mode = cfg.logging.progress
        self.bars = ddp.is_primary() and (mode == "bar" or (mode == "auto" and sys.stdout.isatty()))
        log(f"astray {__version__}: {cfg.model.name} on {cfg.dataset.type} ({len(self.data.train)} train / "
            f"{len(self.data.val)} val / {len(self.data.test)} test; {self.data.preprocessing}), strategy {a.strategy}, "
            f"{self.world} process(es) on {device}, {self.threads} thread(s) each ({threads_from}), "
            f"energy source {self.meter.source}" + (f" (idle {self.idle_w:.1f} W subtracted)" if self.idle_w else ""))
        if a.significance == "reducible" and self.method.irreducible is None:
            # Before the first epoch (or on resuming a run whose checkpoint predates them).
            losses, self.setup = irreducible_losses(
                cfg, self.data.train, self.recalibration_data, self.data.num_classes, device, self.sample_flops,
                self.meter, log, lambda x: _inputs_to_device(x, device, cfg.model.channels_last))
            self.method.irreducible = losses.to(device)
            log(f"irreducible loss: {self.setup.flops / self.sample_flops.dense(len(self.data.train)):.2f} dense "
                f"epochs of FLOPs, {self.setup.time_s:.1f}s, {self.setup.energy_j:.1f} J ({self.meter.source}), "
                f"charged to epoch {self.start_epoch + 1}")
        elif self.method.irreducible is not None:
            self.method.irreducible = self.method.irreducible.to(device)

    def _scoring_flops(self, model: torch.nn.Module, example: torch.Tensor) -> SampleFlops:
        """The per-sample FLOPs with the scoring forward's at ``ast.reforward.score_scale``;
        a model that cannot take the smaller copy is a one-line config error here, not a
        crash in the first sparse step."""
        scale = self.method.score_scale
        small = downscale(example.unsqueeze(0), scale)[0]
        try:
            scoring = measure_forward_flops(model, small)
        except (RuntimeError, AssertionError, ValueError) as e:  # timm's fixed-size models assert
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"ast.{self.method.name}.score_scale={scale:g} scores {tuple(example.shape[-2:])} px "
                              f"images at {tuple(small.shape[-2:])} px, which model.name={self.cfg.model.name} "
                              f"cannot take ({first}); use a larger scale or dataset.image_size") from None
        return dataclasses.replace(self.sample_flops, scoring=scoring)

    # ------------------------------------------------------------------ state
    def state_dict(self, epoch: int, time_s: float, rng_per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything a resumed run needs; tensors, numbers and strings only (weights_only loads)."""
        return {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "controller": self.controller.state_dict(), "strategy": self.method.state_dict(),
            "rng": rng_per_rank[0], "rng_per_rank": rng_per_rank, "epoch": epoch, "best_val_acc": self.best_acc,
            "epochs_without_gain": self.epochs_no_gain, "time_s": time_s,
            "astray_version": __version__, "model_name": self.cfg.model.name, "num_classes": self.data.num_classes,
            "irreducible": self.method.irreducible.cpu() if self.method.irreducible is not None else None,
        }

    def load_state_dict(self, ckpt: dict[str, Any], model: torch.nn.Module) -> None:
        model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.controller.load_state_dict(ckpt["controller"])
        self.method.load_state_dict(ckpt["strategy"])
        if ckpt.get("irreducible") is not None and self.cfg.ast.significance == "reducible":
            self.method.irreducible = ckpt["irreducible"].float()
        per_rank = ckpt.get("rng_per_rank") or []
        # Each rank continues its own stream; a checkpoint from another world size (or
        # from before per-rank states) gives every rank the primary's.
        set_rng_state(per_rank[ddp.rank()] if len(per_rank) == self.world else ckpt["rng"])
        self.start_epoch, self.best_acc = ckpt["epoch"], ckpt["best_val_acc"]
        self.epochs_no_gain, self.elapsed_before = ckpt["epochs_without_gain"], ckpt["time_s"]

    # ------------------------------------------------------------------ one epoch
    def _diverged(self, where: str) -> TrainingDiverged:
        return TrainingDiverged(f"training loss became non-finite or exceeded training.max_loss="
                                f"{self.cfg.training.max_loss:g} {where}")

    def _loss_too_high(self, mean_loss: float) -> bool:
        max_loss = self.cfg.training.max_loss
        return not math.isfinite(mean_loss) or (max_loss > 0 and mean_loss > max_loss)

    def run_epoch(self, epoch: int, sparse: bool) -> EpochWork:
        """Train one epoch (0-based) on this rank's share of the method's plan.

        Losses, correct counts and scores stay on the device and are read once at the
        end of the epoch (and at ``logging.log_every_steps``): on CUDA a read is a sync.
        In one process the divergence check is read there too; under DDP it rides on the
        step's all-reduce, which is read every step anyway (docs/design.md §10).
        """
        cfg, t, method = self.cfg, self.cfg.training, self.method
        plan = method.plan_epoch(epoch, self.controller, dense=not sparse)
        weight_of = self._load(plan)
        steps = len(self.train_loader)
        # The shadow controller update only matters when a sparse epoch follows.
        calibrate = (method.uses_controller and not sparse
                     and any(method.is_sparse(e) for e in range(epoch + 1, t.epochs)))
        target = f"/{cfg.ast.target_activation:g}" if sparse and method.uses_controller else ""
        steplog = StepLog(epoch, steps, plan, cfg.logging.steps_every, cfg.logging.log_every_steps,
                          self.controller, lambda: self.optimizer.param_groups[0]["lr"],
                          self._bar(steps, f"epoch {epoch + 1}/{t.epochs} [{method.name if sparse else Dense.name}]"),
                          target, log)
        totals, window = EpochTotals(self.device, self.noisy_of), GradientWindow()
        stop = False
        self.meter.begin()
        t0 = time.perf_counter()
        for step, (x, y, idx) in enumerate(self.train_loader):
            progress = epoch + step / max(steps, 1)
            window_end = (step + 1) % t.grad_accum_steps == 0 or step + 1 == steps
            s = self._step(x, y, idx, weight_of, sparse, progress, calibrate, totals.pending, window_end)
            totals.add(s, idx, self._loss_too_high_t(s.loss_sum, s.loaded))
            window.add(s)
            if window_end or s.stop:
                window.close(self.model, self.optimizer, self.settings, method.step_divisor, t.grad_clip, s.synced)
            steplog.step(step, s, totals, progress,
                         before_line=lambda: totals.check(lambda: self._diverged(f"in epoch {epoch + 1} by step {step}")))
            if s.stop:
                stop = True
                break
        trace = steplog.close()
        if method.recalibrates_batchnorm(sparse) and self.recalibration_size() > 0:
            totals.forward += self.recalibrate_batchnorm(epoch)
        train_time = time.perf_counter() - t0
        energy = self.meter.end()
        totals.check(lambda: self._diverged(f"in epoch {epoch + 1}"))
        method.observe(*ddp.gather_scores(*totals.measured()))  # rule 4
        ddp.check_same_on_all_ranks(self.controller.threshold, "controller threshold")  # rule 3
        loaded, forward, backward, loss_sum, correct, noisy, scored = totals.over_ranks()
        if self._loss_too_high(loss_sum / max(loaded, 1)):
            raise self._diverged(f"in epoch {epoch + 1}")
        return EpochWork(loaded, forward, backward, loss_sum, correct, train_time, energy, stop, trace, noisy, scored)

    def _load(self, plan) -> torch.Tensor | None:
        """Hand this rank's share of ``plan`` to the loader; the per-sample loss weights by
        dataset index (on the device), or None when every weight is 1."""
        local = plan.indices[ddp.shard(torch.arange(plan.indices.numel()))]
        if local.numel() % self.cfg.training.batch_size == 1 and local.numel() > 1:
            local = local[:-1]  # a last batch of one sample breaks training-mode BatchNorm
        self.train_sampler.set_plan(local.tolist())
        if plan.weights is None or not bool((plan.weights != 1).any()):
            return None
        weight_of = torch.ones(len(self.data.train))
        weight_of[plan.indices] = plan.weights
        return weight_of.to(self.device)

    def _step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, weight_of: torch.Tensor | None,
              sparse: bool, progress: float, calibrate: bool, nonfinite: bool | torch.Tensor,
              window_end: bool) -> StepStats:
        """One training step at ``progress`` (epochs): the learning rate, the time budget, the step."""
        cfg, t = self.cfg, self.cfg.training
        x, y = _to_device(x, y, self.device, cfg.model.channels_last)
        weights = None if weight_of is None else weight_of[idx.to(self.device, non_blocking=True)]
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(cfg, progress, self.world)
        elapsed = self.elapsed_before + time.perf_counter() - self.started
        s = train_step(self.model, x, y, weights, self.method, self.controller, self.settings, indices=idx, sparse=sparse,
                       progress=progress, stop_requested=t.max_minutes > 0 and elapsed > 60 * t.max_minutes,
                       nonfinite_seen=nonfinite, calibrate=calibrate, window_end=window_end)
        if s.diverged is True:
            raise self._diverged(f"at epoch {progress + 1:.3f} (lr {lr_at(cfg, progress, self.world):.3g})")
        return s

    def _loss_too_high_t(self, loss_sum: torch.Tensor, n: int) -> torch.Tensor:
        """The per-step divergence test as a device flag (no read)."""
        mean = loss_sum / max(n, 1)
        too_high = ~torch.isfinite(mean)
        if self.cfg.training.max_loss > 0:
            too_high |= mean > self.cfg.training.max_loss
        return too_high

    def _bar(self, total: int, desc: str) -> tqdm | None:
        """A progress bar on stdout when bars are on (a terminal, the primary rank), else None."""
        if not self.bars:
            return None
        return tqdm(total=total, desc=desc, unit="step", file=sys.stdout, leave=False, dynamic_ncols=True)

    def recalibration_size(self) -> int:
        """Precise BN's sample count: ``ast.bn_recalibration_samples``, at most
        ``ast.bn_recalibration_fraction`` of the training set."""
        a, n = self.cfg.ast, len(self.data.train)
        return min(n, a.bn_recalibration_samples, math.ceil(a.bn_recalibration_fraction * n))

    def recalibrate_batchnorm(self, epoch: int) -> int:
        """Precise BN after a sparse epoch: running statistics from random training samples
        (the same ones on every rank, each rank forwarding its share). Inside the epoch's
        time and energy window; returns this rank's forwards, counted as executed work.

        The samples go through the *validation* transform: running statistics are used
        only at evaluation, so they should describe the images evaluation sees (and no
        augmentation is paid for, nor drawn from the random stream)."""
        n = len(self.data.train)
        gen = epoch_generator(self.cfg.training.seed, epoch + 500_009)
        indices = torch.randperm(n, generator=gen)[: self.recalibration_size()]
        return batchnorm.recalibrate(
            self.model, self.recalibration_data, indices, self.cfg.training.batch_size,
            lambda x: _inputs_to_device(x, self.device, self.cfg.model.channels_last), self.autocast)

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss, accuracy and macro F1 over the ``val`` or ``test`` split (each rank a shard,
        summed), as ``<split>_loss``, ``<split>_acc``, ``<split>_macro_f1``."""
        num_classes = self.data.num_classes
        loader = self.val_loader if split == "val" else self.test_loader
        net = ddp.unwrap(self.model)
        net.eval()
        loss_sum = torch.zeros((), dtype=torch.float64)
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        bar = self._bar(len(loader), f"  evaluating {split}")
        for x, y, _ in loader:
            if bar is not None:
                bar.update(1)
            x, y = _to_device(x, y, self.device, self.cfg.model.channels_last)
            with self.autocast():
                logits = net(x)
            loss_sum += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum").cpu().double()
            pred = logits.argmax(1)
            confusion += torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes ** 2).view(
                num_classes, num_classes)
        if bar is not None:
            bar.close()
        net.train()
        bd = ddp.backend_device()
        loss_sum = ddp.all_reduce_sum(loss_sum.to(bd)).cpu()
        confusion = ddp.all_reduce_sum(confusion.to(bd)).cpu()
        n = int(confusion.sum())
        return {f"{split}_loss": float(loss_sum) / max(n, 1), f"{split}_acc": float(confusion.diag().sum()) / max(n, 1),
                f"{split}_macro_f1": macro_f1(confusion)}

    # ------------------------------------------------------------------ the run
    def fit(self, report: Report | None = None) -> RunResult:
        """Train the remaining epochs; after each, write the row and checkpoints, then report."""
        cfg, t = self.cfg, self.cfg.training
        stopped = "completed"
        for epoch in range(self.start_epoch, t.epochs):
            sparse = self.method.is_sparse(epoch)
            work = self.run_epoch(epoch, sparse)
            self.meter.begin()
            # Both splits every epoch; only validation decides anything below (docs/design.md §9).
            val = self.evaluate("val") | self.evaluate("test")
            val_energy = self.meter.end()
            # The work before the first epoch (self.setup) is charged to the first this run trains.
            setup, self.setup = self.setup, SetupCost()
            train_s = work.train_time_s + setup.time_s
            train_time, elapsed, setup_time = ddp.slowest([train_s, time.perf_counter() - self.started, setup.time_s])
            energy_j = work.energy_j + setup.energy_j
            energy = max(0.0, energy_j - self.idle_w * train_s) if self.idle_w else energy_j
            setup_energy = max(0.0, setup.energy_j - self.idle_w * setup.time_s) if self.idle_w else setup.energy_j
            setup_flops = ddp.sum_over_ranks([setup.flops])[0]
            n_total = len(self.data.train)
            row = EpochRow(
                epoch=epoch + 1, train_loss=work.loss_sum / max(work.loaded, 1),
                train_acc=work.correct / max(work.loaded, 1), **val,
                activation_rate=work.backward / n_total, threshold=self.controller.threshold,
                samples_total=n_total, samples_forward=int(work.forward), samples_backward=int(work.backward),
                samples_scored=int(work.scored), flops=work.flops(self.sample_flops) + setup_flops,
                flops_dense=self.sample_flops.dense(n_total),
                train_time_s=float(train_time), time_s=self.elapsed_before + float(elapsed),
                energy_j=ddp.sum_over_devices(self.meter.device_keys, energy),
                val_energy_j=ddp.sum_over_devices(self.meter.device_keys, val_energy),
                energy_source=self.meter.source, energy_scope=self.energy_scope, idle_w=self.idle_w,
                lr=self.optimizer.param_groups[0]["lr"], strategy=self.method.name if sparse else Dense.name,
                noisy_share=work.noisy / max(work.backward, 1), setup_flops=setup_flops, setup_time_s=float(setup_time),
                setup_energy_j=ddp.sum_over_devices(self.meter.device_keys, setup_energy), threads=self.threads,
            ).as_dict()
            self.rows.append(row)
            self.step_rows.extend(work.steps)

            improved = row["val_acc"] > self.best_acc
            if improved:
                self.best_acc, self.epochs_no_gain = row["val_acc"], 0
            else:
                self.epochs_no_gain += 1
            rng_per_rank = ddp.gather_objects(rng_state())  # a collective: every rank, every epoch
            if ddp.is_primary():  # rule 5
                if not work.stop:
                    # An epoch cut short by training.max_minutes is not a finished epoch:
                    # last.pt stays at the previous one, so --resume trains this one whole.
                    state = self.state_dict(epoch + 1, row["time_s"], rng_per_rank)
                    save_checkpoint(state, self.out / LAST)
                    if improved:
                        save_checkpoint(state, self.out / BEST)
                write_metrics(self.rows, self.out / METRICS)
                if cfg.logging.steps_every:
                    write_steps(self.step_rows, self.out / STEPS)
                if self.tensorboard is not None:
                    self.tensorboard.epoch(row)
                    self.tensorboard.steps(work.steps)
            early_stop = bool(t.early_stop_patience) and self.epochs_no_gain >= t.early_stop_patience
            if report is not None:
                # Every rank reports the same (all-reduced) row: Ray Train's report is a
                # barrier all workers must reach; only the primary's files exist.
                report(row, self.out, improved=improved and not work.stop,
                       final=work.stop or early_stop or epoch + 1 == t.epochs, steps=work.steps)
            log(_progress_line(row, t.epochs))

            if work.stop:
                stopped = "max_minutes"
                log(f"stopping: training.max_minutes={t.max_minutes:g} reached during epoch {epoch + 1}; "
                    f"last.pt holds epoch {epoch} (--resume trains epoch {epoch + 1} again, whole)")
                break
            if early_stop:
                stopped = "early_stop"
                log(f"stopping: no val_acc gain for {self.epochs_no_gain} epochs (training.early_stop_patience)")
                break
        if self.tensorboard is not None:
            self.tensorboard.close()
        ddp.barrier()
        return RunResult(self.rows, self.out, stopped)


def _inputs_to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    return _inputs_to_device(x, device, channels_last), y.to(device, non_blocking=True)


def _autocast_factory(cfg: RunConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    mp = cfg.training.mixed_precision
    if mp == "none" or device.type != "cuda":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mp == "bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


def _progress_line(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs} [{row['strategy']}] "
            f"train_loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
            f"val_acc {row['val_acc']:.4f} f1 {row['val_macro_f1']:.4f} test {row['test_acc']:.4f} | "
            f"act {row['activation_rate']:.3f} thr {row['threshold']:.4g} | "
            f"bwd {row['samples_backward']}/{row['samples_total']} "
            f"flops {row['flops'] / row['flops_dense']:.2f}x dense | "
            f"{row['train_time_s']:.1f}s | {row['energy_j']:.1f} J ({row['energy_source']})")
