"""Wall time per training step: dense vs re-forward vs stale selection (docs/design.md §1).

All configurations run in ONE process on ONE model, interleaved: each round runs every
configuration once (the starting configuration rotates from round to round), and the
reported figure is the median over rounds. Machine noise therefore hits every
configuration alike.

Configurations:

- ``dense``: ``train_step(sparse=False)`` with the ``dense`` method on the whole batch of B.
- ``reforward`` at a: the ``reforward`` method with ``min_active_fraction=a`` and a
  controller whose threshold sits at 1e3 with zero gains, so ``select_active`` always
  falls back to exactly ceil(a*B) top-k samples: a no-grad scoring forward on B, then
  forward+backward on ceil(a*B).
- ``stale`` at a: the samples were chosen before loading, so the step loads a batch of
  only round(a*B) and trains all of it (the ``stale`` method, ``sparse=True``).

Every timed step includes the data movement (slicing the batch out of a pre-made tensor
dataset, and the host-to-device copy on CUDA), ``train_step`` and ``optimizer_step``.
Stale mode also avoids *loading* (1-a) of the data (disk, decode, augmentation); this
step-level benchmark does not credit that.

Defaults: on CPU resnet18, batch 128, 64x64 images (224x224 takes seconds per step on
a couple of cores), 2 threads, fp32. On CUDA resnet50, batch 256, 224x224, bf16
autocast, channels_last, with ``torch.cuda.synchronize()`` around every timing.

Run:  python benchmarks/step_cost.py [--quick] [--rounds N] [--device cpu|cuda] ...
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from astray.engine.flops import measure_sample_flops
from astray.sparse import PIController
from astray.config.run import ASTConfig
from astray.sparse import METHODS, MethodContext, SparseMethod, create_method
from astray.engine.step import StepSettings, optimizer_step, train_step

ACTIVATIONS = (0.1, 0.25, 0.5)
NUM_CLASSES = 1000


@dataclass
class Config:
    strategy: str  # dense | reforward | stale
    activation: float
    loaded: int  # samples in the batch this step loads
    expect_forward: int
    expect_backward: int
    sel: SparseMethod
    controller: PIController
    sparse: bool

    @property
    def limit(self) -> float:
        """Compute-model cost relative to dense (docs/design.md §1, backward = 2 x forward)."""
        if self.strategy == "dense":
            return 1.0
        if self.strategy == "reforward":
            return 1 / 3 + self.activation
        return self.activation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--model", default=None, help="torchvision model name (default: resnet18 CPU, resnet50 CUDA)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 CPU, 256 CUDA")
    p.add_argument("--image-size", type=int, default=None, help="default: 64 CPU, 224 CUDA")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (one step per config each)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per config before timing")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (CPU device only)")
    p.add_argument("--lr", type=float, default=0.0,
                   help="SGD learning rate; 0 keeps the weights fixed (the optimizer still runs in full)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/step_cost.json", help="JSON output path")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: resnet18, batch 16, 32x32, 2 rounds, 1 warm-up step")
    args = p.parse_args(argv)

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.model = args.model or "resnet18"
        args.batch_size = args.batch_size or 16
        args.image_size = args.image_size or 32
        args.rounds = 2
        args.warmup = 1
    args.model = args.model or ("resnet50" if cuda else "resnet18")
    args.batch_size = args.batch_size or (256 if cuda else 128)
    args.image_size = args.image_size or (224 if cuda else 64)
    if args.batch_size < 4:
        p.error("--batch-size must be >= 4 (BatchNorm needs subsets of >= 2)")
    if args.rounds < 1 or args.warmup < 0:
        p.error("--rounds must be >= 1 and --warmup >= 0")
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def method(name: str, dataset_size: int, batch: int, min_active_fraction: float = 0.0) -> SparseMethod:
    """The method as a run builds it; reforward without shape buckets (this times exact
    subset sizes), every floor at ``min_active_fraction``."""
    ast = ASTConfig(strategy=name, min_active_fraction=min_active_fraction)
    if name == "reforward":
        ast.methods = {name: METHODS[name].Settings(shape_buckets=0)}
    return create_method(ast, MethodContext(dataset_size, seed=0, epochs=1, batch_size=batch))


def build_configs(batch: int, dataset_size: int) -> list[Config]:
    configs = [Config("dense", 1.0, batch, batch, batch,
                      method("dense", dataset_size, batch),
                      PIController(target=1.0, kp=0.0, ki=0.0), sparse=False)]
    for a in ACTIVATIONS:
        k = math.ceil(a * batch)
        sel = method("reforward", dataset_size, batch, min_active_fraction=a)
        # Threshold pinned at +inf with zero gains: no significance exceeds it, so
        # select_active always falls back to exactly ceil(a*B) top-k samples. (A finite
        # pin such as 1e3 is not safe: eval-mode scores of a random-init net whose BatchNorm
        # running statistics came from tiny training subsets can exceed it.)
        ctl = PIController(target=a, kp=0.0, ki=0.0, initial_threshold=math.inf, max_threshold=math.inf)
        configs.append(Config("reforward", a, batch, batch + k, k, sel, ctl, sparse=True))
    for a in ACTIVATIONS:
        m = max(2, round(a * batch))
        sel = method("stale", dataset_size, batch, min_active_fraction=a)
        ctl = PIController(target=a, kp=0.0, ki=0.0)
        configs.append(Config("stale", a, m, m, m, sel, ctl, sparse=True))
    return configs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]) if argv is None else \
        " ".join(shlex.quote(a) for a in ["step_cost.py", *argv])
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)
    if not cuda:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    B, S = args.batch_size, args.image_size
    model = torchvision.models.get_model(args.model, weights=None, num_classes=NUM_CLASSES).to(device)
    model.train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    # lr 0 by default: SGD still does all its arithmetic (weight decay, momentum, update),
    # but the weights stay put, so every configuration times the same model throughout.
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    if cuda:
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    settings = StepSettings(entropy_weight=0.1, label_smoothing=0.0, autocast=autocast,
                            channels_last=cuda)

    # Pre-made tensor dataset on the host (pinned on CUDA); each step slices a batch
    # out of it and moves it to the device, so data movement is part of every step.
    dataset_size = 4 * B
    data_x = torch.randn(dataset_size, 3, S, S)
    data_y = torch.randint(0, NUM_CLASSES, (dataset_size,))
    if cuda:
        data_x, data_y = data_x.pin_memory(), data_y.pin_memory()
    cursor = 0

    def load(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nonlocal cursor
        if cursor + n > dataset_size:
            cursor = 0
        x = data_x[cursor:cursor + n].to(device, non_blocking=True)
        y = data_y[cursor:cursor + n].to(device, non_blocking=True)
        cursor += n
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, torch.ones(n, device=device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    configs = build_configs(B, dataset_size)

    def step(cfg: Config) -> float:
        sync()
        t0 = time.perf_counter()
        x, y, w = load(cfg.loaded)
        stats = train_step(model, x, y, w, cfg.sel, cfg.controller, settings,
                           sparse=cfg.sparse, progress=0.0)
        optimizer_step(model, optimizer, settings, stats.global_active, grad_clip=0.0)
        sync()
        dt = time.perf_counter() - t0
        label = f"{cfg.strategy}@{cfg.activation}"
        assert stats.loaded == cfg.loaded, (label, stats.loaded, cfg.loaded)
        assert stats.forward == cfg.expect_forward, (label, "forward", stats.forward, cfg.expect_forward)
        assert stats.backward == cfg.expect_backward, (label, "backward", stats.backward, cfg.expect_backward)
        return dt

    # Per-sample FLOPs, measured once (on a deep copy; the real model is untouched).
    with autocast():
        flops = measure_sample_flops(model, data_x[0].to(device))
    dense_flops = flops.dense(B)

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    for cfg in configs:  # warm-up (untimed): allocator, kernel selection, caches
        for _ in range(args.warmup):
            step(cfg)
    times: list[list[float]] = [[] for _ in configs]
    for r in range(args.rounds):
        order = [(r + i) % len(configs) for i in range(len(configs))]  # rotate the start
        for i in order:
            times[i].append(step(configs[i]))
    bench_s = time.perf_counter() - t_start
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    med = [statistics.median(t) * 1e3 for t in times]
    dense_ms = med[0]
    rows = []
    for cfg, ms, t in zip(configs, med, times):
        rows.append({
            "strategy": cfg.strategy,
            "activation": cfg.activation,
            "ms_per_step_median": round(ms, 3),
            "ms_per_step_min": round(min(t) * 1e3, 3),
            "ms_per_step_max": round(max(t) * 1e3, 3),
            "ratio_to_dense": round(ms / dense_ms, 4),
            "compute_model_limit": round(cfg.limit, 4),
            "samples_loaded": cfg.loaded,
            "samples_forward": cfg.expect_forward,
            "samples_backward": cfg.expect_backward,
            "executed_flops_ratio": round(flops.executed(cfg.expect_forward, cfg.expect_backward) / dense_flops, 4),
            "times_ms": [round(v * 1e3, 3) for v in t],
        })

    meta = {
        "model": args.model, "batch_size": B, "image_size": S, "num_classes": NUM_CLASSES,
        "device": str(device), "device_name": device_name(device),
        "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
        "python": platform.python_version(), "threads": threads,
        "precision": "bf16 autocast, channels_last" if cuda else "fp32",
        "lr": args.lr, "rounds": args.rounds, "warmup_steps_per_config": args.warmup, "quick": args.quick,
        "flops_per_sample_forward": flops.forward, "flops_per_sample_backward": flops.backward,
        "benchmark_seconds": round(bench_s, 2),
        "loadavg_1min_before": load_before, "loadavg_1min_after": load_after,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "note": ("Each timed step = slice batch from a pre-made tensor dataset (+ host-to-device copy) "
                 "+ train_step + optimizer_step. Stale mode also avoids loading (1-a) of the data; "
                 "this step-level benchmark does not credit that."),
    }

    print(f"machine : {meta['device_name']} ({meta['device']}), torch {torch.__version__}, "
          f"threads {threads}, {meta['precision']}")
    print(f"model   : {args.model}, batch {B}, image {S}x{S}, {NUM_CLASSES} classes; "
          f"{args.rounds} interleaved rounds, {args.warmup} warm-up steps/config")
    print(f"flops   : {flops.forward / 1e9:.3f} GFLOP forward, {flops.backward / 1e9:.3f} GFLOP backward per sample")
    print(f"command : {command}")
    header = (f"{'strategy':<10} {'act':>5} {'ms/step':>9} {'(min)':>8} {'ratio':>6} {'limit':>6} "
              f"{'fwd/bwd samples':>16} {'FLOPs ratio':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        act = "-" if row["strategy"] == "dense" else f"{row['activation']:.2f}"
        fb = f"{row['samples_forward']}/{row['samples_backward']}"
        print(f"{row['strategy']:<10} {act:>5} {row['ms_per_step_median']:>9.1f} {row['ms_per_step_min']:>8.1f} "
              f"{row['ratio_to_dense']:>6.3f} {row['compute_model_limit']:>6.3f} {fb:>16} {row['executed_flops_ratio']:>11.3f}")
    print("ms/step = median over rounds, (min) = fastest round; ratio = median ms/step over dense's;")
    print("limit = docs/design.md §1 compute model (dense 1, reforward 1/3+a, stale a);")
    print("FLOPs ratio = executed FLOPs (measured per-sample forward/backward) over dense.")
    print("note: stale also avoids loading (1-a) of the data; this step-level benchmark does not credit that.")
    loadavg = "" if load_before is None else f" (1-min load average {load_before:.2f} before, {load_after:.2f} after)"
    print(f"timed section: {bench_s:.1f} s{loadavg}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
