"""Whole training epochs through the real loop: sparse-epoch time as a ratio to dense.

    python benchmarks/loop_cost.py [--quick] [--rounds N] [--target 0.3] [--device cpu|cuda]

``benchmarks/step_cost.py`` times one isolated step; this times what a user pays: whole
epochs of ``astray.engine.trainer.Trainer.run_epoch`` (loader, plan, selection, every
step, BatchNorm recalibration), for dense, reforward and stale. Each strategy runs in
its own process with its own Trainer; the parent makes the processes take turns, one
epoch each per round, the first process rotating from round to round, so machine noise
hits every strategy alike. The figure is the median over rounds of the training time of
a sparse epoch over the median of dense's.

Beside the loop ratio it prints:

- the compute model of docs/design.md §1 at the *realised* activation (dense 1,
  reforward 1/3 + a, stale a);
- executed FLOPs over dense (measured per-sample forward/backward costs);
- the isolated step: in the same processes, the same rounds, one step of the same
  batch size with exactly round(a * B) samples trained (no loader, no plan);
- distinct backward batch sizes per sparse epoch (bounded by ``ast.reforward.shape_buckets``).

Defaults, CPU: resnet18, 32x32 synthetic images (10 classes), 4096 training samples,
batch 128, 2 threads, fp32. CUDA: resnet50, 224x224, bf16, channels-last, batch 256.
Every strategy first trains, untimed, one dense warm-up epoch (it calibrates the
controller and the stale score table) and one sparse epoch (its first sparse steps meet
new shapes: kernel plans and allocator caches fill once per run). Writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import multiprocessing as mp
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]

from step_cost import device_name  # noqa: E402  (this script's folder is on sys.path)
STRATEGIES = ("dense", "reforward", "stale")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--model", default=None, help="default: resnet18 on CPU, resnet50 on CUDA")
    p.add_argument("--image-size", type=int, default=None, help="default: 32 CPU, 224 CUDA")
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 CPU, 256 CUDA")
    p.add_argument("--samples", type=int, default=None, help="training samples (default 4096 CPU, 12800 CUDA)")
    p.add_argument("--target", type=float, default=0.3, help="ast.target_activation")
    p.add_argument("--rounds", type=int, default=6, help="timed sparse epochs per strategy")
    p.add_argument("--isolated-steps", type=int, default=8, help="isolated steps per strategy per round")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (CPU only)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 0 CPU, 8 CUDA)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every strategy (repeatable), e.g. ast.reforward.shape_buckets=0")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/loop_cost.json"))
    p.add_argument("--quick", action="store_true", help="smoke test: 512 samples, batch 32, 1 round")
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.samples, args.batch_size, args.rounds, args.isolated_steps = args.samples or 512, 32, 1, 2
        args.model = args.model or "resnet18"
    args.model = args.model or ("resnet50" if cuda else "resnet18")
    args.image_size = args.image_size or (224 if cuda else 32)
    args.batch_size = args.batch_size or (256 if cuda else 128)
    args.samples = args.samples or (12800 if cuda else 4096)
    args.workers = (8 if cuda else 0) if args.workers is None else args.workers
    if args.rounds < 1 or not 0 < args.target < 1:
        p.error("--rounds must be >= 1 and --target in (0, 1)")
    return args


def overrides(args: argparse.Namespace, strategy: str, out: str) -> list[str]:
    cuda = args.device.startswith("cuda")
    total = math.ceil(args.samples / 0.64)  # synthetic_samples holds train + val + test (0.2 test, then 0.2 val)
    o = [f"model.name={args.model}", "dataset.type=synthetic", "dataset.num_classes=10",
         f"dataset.image_size={args.image_size}", f"dataset.synthetic_samples={total}", "dataset.val_fraction=0.2",
         "dataset.test_fraction=0.2",
         f"dataset.num_workers={args.workers}", f"ast.strategy={strategy}",
         f"ast.target_activation={args.target}", "ast.warmup_epochs=1", "training.optimizer=sgd", "training.lr=0.1",
         f"training.batch_size={args.batch_size}", f"training.epochs={args.rounds + 2}", "training.max_loss=0",
         f"training.device={'cuda' if cuda else 'cpu'}", "energy.meter=model", f"logging.output_dir={out}"]
    if cuda:
        o += ["model.channels_last=true", "training.mixed_precision=bf16", "dataset.pin_memory=true"]
    else:
        o += [f"training.threads={args.threads}"]
    return o + list(args.set)


def worker(strategy: str, args: argparse.Namespace, out: str, conn) -> None:
    """One strategy's process: builds its Trainer, then runs what the parent asks for."""
    from astray.config.load import load_config
    from astray.engine.step import optimizer_step, train_step
    from astray.engine.trainer import Trainer, resolve_device
    from astray.sparse import PIController

    cfg = load_config(None, overrides(args, strategy, out))
    device = resolve_device(cfg.training.device)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(cfg, Path(out), device, resume=False)
    sizes: list[int] = []

    def record(_module, inputs):  # a training forward: the backward batch size
        if torch.is_grad_enabled():
            sizes.append(int(inputs[0].shape[0]))
    trainer.model.register_forward_pre_hook(record)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    B = cfg.training.batch_size
    batch = [trainer.data.train[i] for i in range(B)]
    xb = torch.stack([b[0] for b in batch]).to(device)
    yb = torch.tensor([int(b[1]) for b in batch]).to(device)
    if cfg.model.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    epoch = 0
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        if msg == "epoch":
            sparse = trainer.method.is_sparse(epoch)
            sizes.clear()
            work = trainer.run_epoch(epoch, sparse)
            epoch += 1
            conn.send({"epoch": epoch, "sparse": sparse, "time_s": work.train_time_s, "loaded": work.loaded,
                       "forward": work.forward, "backward": work.backward, "dataset": len(trainer.data.train),
                       "flops": trainer.sample_flops.executed(int(work.forward), int(work.backward)),
                       "flops_dense": trainer.sample_flops.dense(len(trainer.data.train)),
                       "backward_sizes": sorted(set(sizes)), "threshold": trainer.controller.threshold})
        else:  # ("isolated", activation, steps): one batch, exactly round(a * B) trained
            _, a, steps = msg
            k = B if strategy == "dense" else max(2, round(a * B))
            sel = trainer.method
            loaded = k if strategy == "stale" else B
            pinned = PIController(target=a, kp=0.0, ki=0.0, initial_threshold=math.inf, max_threshold=math.inf)
            saved = sel.ast
            sel.ast = dataclasses.replace(saved, min_active_fraction=k / B)
            times = []
            for _ in range(steps):
                sync()
                t0 = time.perf_counter()
                s = train_step(trainer.model, xb[:loaded], yb[:loaded], torch.ones(loaded, device=device), sel,
                               pinned, trainer.settings, sparse=strategy != "dense", progress=0.0, calibrate=False)
                optimizer_step(trainer.model, trainer.optimizer, trainer.settings, s.global_active, 0.0)
                sync()
                times.append(time.perf_counter() - t0)
            sel.ast = saved
            conn.send({"isolated_s": times})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/loop_cost.py", *(argv or sys.argv[1:])])
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        procs, conns = {}, {}
        for s in STRATEGIES:
            parent, child = ctx.Pipe()
            procs[s] = ctx.Process(target=worker, args=(s, args, f"{tmp}/{s}", child), daemon=True)
            procs[s].start()
            conns[s] = parent
        for s in STRATEGIES:
            if conns[s].recv() != "ready":
                raise RuntimeError(f"{s} worker failed to start")
        epochs: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
        isolated: dict[str, list[float]] = {s: [] for s in STRATEGIES}
        for _ in range(2):  # the dense warm-up epoch and a first sparse one, untimed
            for s in STRATEGIES:
                conns[s].send("epoch")
                conns[s].recv()
        for r in range(args.rounds):
            order = [STRATEGIES[(r + i) % len(STRATEGIES)] for i in range(len(STRATEGIES))]
            for s in order:
                conns[s].send("epoch")
                epochs[s].append(conns[s].recv())
            for s in order:
                act = args.target if s == "dense" else statistics.fmean(e["backward"] / e["dataset"] for e in epochs[s])
                conns[s].send(("isolated", act, args.isolated_steps))
                isolated[s].extend(conns[s].recv()["isolated_s"][1:] or [math.nan])  # first: shape warm-up
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{s} {epochs[s][-1]['time_s']:.2f} s" for s in STRATEGIES), flush=True)
        for s in STRATEGIES:
            conns[s].send("stop")
            procs[s].join(timeout=60)
    wall = time.perf_counter() - started

    dense_t = statistics.median(e["time_s"] for e in epochs["dense"])
    dense_step = statistics.median(isolated["dense"])
    table = []
    for s in STRATEGIES:
        es = epochs[s]
        act = statistics.fmean(e["backward"] / e["dataset"] for e in es)
        model = {"dense": 1.0, "reforward": 1 / 3 + act, "stale": act}[s]
        table.append({
            "strategy": s, "activation": round(act, 4),
            "activations": [round(e["backward"] / e["dataset"], 4) for e in es],
            "epoch_s_median": round(statistics.median(e["time_s"] for e in es), 4),
            "loop_ratio": round(statistics.median(e["time_s"] for e in es) / dense_t, 4),
            "compute_model": round(model, 4),
            "flops_ratio": round(statistics.fmean(e["flops"] / e["flops_dense"] for e in es), 4),
            "isolated_step_ratio": round(statistics.median(isolated[s]) / dense_step, 4),
            "backward_shapes_max": max(len(e["backward_sizes"]) for e in es),
            "epoch_times_s": [round(e["time_s"], 4) for e in es],
        })
    cuda = args.device.startswith("cuda")
    meta = {"device": device_name(torch.device("cuda" if cuda else "cpu")), "model": args.model, "image_size": args.image_size,
            "batch_size": args.batch_size, "samples": args.samples, "target": args.target, "rounds": args.rounds,
            "threads": args.threads if not cuda else None, "workers": args.workers, "overrides": args.set,
            "torch": torch.__version__, "python": platform.python_version(), "wall_s": round(wall, 1),
            "command": command, "date": time.strftime("%Y-%m-%d")}
    print(f"\n{meta['device']}, {args.model}, {args.image_size}px, batch {args.batch_size}, {args.samples} samples, "
          f"target {args.target}, {args.rounds} rounds, torch {torch.__version__}, {wall:.0f} s")
    if args.set:
        print("overrides: " + " ".join(args.set))
    head = f"{'strategy':9s} {'act':>5s} {'epoch s':>8s} {'loop':>6s} {'model':>6s} {'FLOPs':>6s} {'step':>6s} {'shapes':>6s}"
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['strategy']:9s} {r['activation']:5.3f} {r['epoch_s_median']:8.2f} {r['loop_ratio']:6.3f} "
              f"{r['compute_model']:6.3f} {r['flops_ratio']:6.3f} {r['isolated_step_ratio']:6.3f} "
              f"{r['backward_shapes_max']:6d}")
    print("loop: median sparse-epoch training time over dense's (run_epoch, BN recalibration included);")
    print("model: docs/design.md §1 at the realised activation; FLOPs: executed over dense;")
    print("step: isolated train_step+optimizer_step at round(a*B) trained, over dense's;")
    print("shapes: most distinct backward batch sizes in one sparse epoch")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "table": table}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
