"""Whole training epochs through the real loop: sparse-epoch time as a ratio to dense.

    python benchmarks/loop_cost.py [--quick] [--rounds N] [--target 0.3] [--device cpu|cuda]
    python benchmarks/loop_cost.py --busy --arms dense,reforward,"reforward s=0.5"

``benchmarks/step_cost.py`` times one isolated step; this times what a user pays: whole
epochs of ``astray.engine.trainer.Trainer.run_epoch`` (loader, plan, selection, every
step, BatchNorm recalibration), for dense, reforward (scoring at full size and at
``ast.reforward.score_scale`` 0.75 and 0.5) and stale. Each arm runs in its own process
with its own Trainer; the parent makes the processes take turns, one epoch each per
round, the first process rotating from round to round, so machine noise hits every arm
alike. The figure is the median over rounds of the training time of a sparse epoch over
the median of dense's.

``--busy`` adds a fixed background load, a single-core busy loop in another process,
as on a shared node: each round then runs every arm quiet, busy with ``--threads``
intra-op threads, and busy with one thread per core left free, and the table gives the
busy epochs over the quiet ones and each arm's ratio to dense under each condition.

Beside the loop ratio it prints:

- the compute model of docs/design.md §1 at the *realised* activation (dense 1,
  reforward s²/3 + a, stale a);
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
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]

from step_cost import device_name  # noqa: E402  (this script's folder is on sys.path)


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    strategy: str
    score_scale: float = 1.0  # ast.reforward.score_scale

    @property
    def overrides(self) -> list[str]:
        return [f"ast.reforward.score_scale={self.score_scale}"] if self.score_scale != 1.0 else []

    def compute_model(self, activation: float) -> float:
        """docs/design.md §1 at the realised activation."""
        return {"dense": 1.0, "reforward": self.score_scale ** 2 / 3 + activation, "stale": activation}[self.strategy]


ARMS = {a.name: a for a in (Arm("dense", "dense"), Arm("reforward", "reforward"),
                            Arm("reforward s=0.75", "reforward", 0.75), Arm("reforward s=0.5", "reforward", 0.5),
                            Arm("stale", "stale"))}


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
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms, of: " + ", ".join(ARMS))
    p.add_argument("--busy", action="store_true",
                   help="also time every round under a single-core background load (a busy loop in another process)")
    args = p.parse_args(argv)
    args.arm_names = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arm_names if a not in ARMS]
    if unknown or "dense" not in args.arm_names:
        p.error(f"--arms {args.arms!r}: arms are {', '.join(ARMS)}, and dense is needed (the ratios' base)")
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


def conditions(args: argparse.Namespace) -> list[tuple[str, bool, int]]:
    """(label, background load on, intra-op threads) per condition a round runs."""
    if not args.busy:
        return [("quiet", False, args.threads)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    free = max(1, cpus - 1)
    return [("quiet", False, args.threads), (f"busy, {args.threads} threads", True, args.threads),
            (f"busy, {free} thread{'s' if free > 1 else ''} (cores left free)", True, free)]


def overrides(args: argparse.Namespace, strategy: str, out: str) -> list[str]:
    cuda = args.device.startswith("cuda")
    total = math.ceil(args.samples / 0.64)  # synthetic_samples holds train + val + test (0.2 test, then 0.2 val)
    o = [f"model.name={args.model}", "dataset.type=synthetic", "dataset.num_classes=10",
         f"dataset.image_size={args.image_size}", f"dataset.synthetic_samples={total}", "dataset.val_fraction=0.2",
         "dataset.test_fraction=0.2",
         f"dataset.num_workers={args.workers}", f"ast.strategy={strategy}",
         f"ast.target_activation={args.target}", "ast.warmup_epochs=1", "training.optimizer=sgd", "training.lr=0.1",
         f"training.batch_size={args.batch_size}", f"training.epochs={args.rounds * len(conditions(args)) + 2}",
         "training.max_loss=0",
         f"training.device={'cuda' if cuda else 'cpu'}", "energy.meter=model", f"logging.output_dir={out}"]
    if cuda:
        o += ["model.channels_last=true", "training.mixed_precision=bf16", "dataset.pin_memory=true"]
    else:
        o += [f"training.threads={args.threads}"]
    return o + list(args.set)


def worker(arm: Arm, args: argparse.Namespace, out: str, conn) -> None:
    """One arm's process: builds its Trainer, then runs what the parent asks for."""
    from astray.config.load import load_config
    from astray.engine.step import optimizer_step, train_step
    from astray.engine.trainer import Trainer, resolve_device
    from astray.sparse import PIController

    strategy = arm.strategy
    cfg = load_config(None, overrides(args, strategy, out) + arm.overrides)
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
        if isinstance(msg, tuple) and msg[0] == "threads":
            torch.set_num_threads(msg[1])
            conn.send(torch.get_num_threads())
        elif msg == "epoch":
            sparse = trainer.method.is_sparse(epoch)
            sizes.clear()
            work = trainer.run_epoch(epoch, sparse)
            epoch += 1
            conn.send({"epoch": epoch, "sparse": sparse, "time_s": work.train_time_s, "loaded": work.loaded,
                       "forward": work.forward, "backward": work.backward, "dataset": len(trainer.data.train),
                       "scored": work.scored, "flops": work.flops(trainer.sample_flops),
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


class Load:
    """A single-core busy loop in another process while on (``--busy``)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def set(self, on: bool) -> None:
        if on and self.proc is None:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)  # running before the next epoch starts
        elif not on and self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/loop_cost.py", *(argv or sys.argv[1:])])
    names = args.arm_names
    conds = conditions(args)
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    load = Load()
    with tempfile.TemporaryDirectory() as tmp:
        procs, conns = {}, {}
        for i, s in enumerate(names):
            parent, child = ctx.Pipe()
            procs[s] = ctx.Process(target=worker, args=(ARMS[s], args, f"{tmp}/{i}", child), daemon=True)
            procs[s].start()
            conns[s] = parent
        for s in names:
            if conns[s].recv() != "ready":
                raise RuntimeError(f"{s} worker failed to start")
        epochs: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in names} for c, _, _ in conds}
        isolated: dict[str, list[float]] = {s: [] for s in names}
        for _ in range(2):  # the dense warm-up epoch and a first sparse one, untimed
            for s in names:
                conns[s].send("epoch")
                conns[s].recv()
        try:
            for r in range(args.rounds):
                order = [names[(r + i) % len(names)] for i in range(len(names))]
                for label, busy, threads in conds:
                    load.set(busy)
                    for s in names:
                        conns[s].send(("threads", threads))
                        conns[s].recv()
                    for s in order:
                        conns[s].send("epoch")
                        epochs[label][s].append(conns[s].recv())
                    print(f"round {r + 1}/{args.rounds}, {label}: " + ", ".join(
                        f"{s} {epochs[label][s][-1]['time_s']:.2f} s" for s in names), flush=True)
                load.set(False)
                for s in names:  # the isolated step: quiet, at --threads
                    conns[s].send(("threads", args.threads))
                    conns[s].recv()
                for s in order:
                    quiet = epochs["quiet"][s]
                    act = args.target if s == "dense" else statistics.fmean(e["backward"] / e["dataset"] for e in quiet)
                    conns[s].send(("isolated", act, args.isolated_steps))
                    isolated[s].extend(conns[s].recv()["isolated_s"][1:] or [math.nan])  # first: shape warm-up
        finally:
            load.set(False)
        for s in names:
            conns[s].send("stop")
            procs[s].join(timeout=60)
    wall = time.perf_counter() - started

    quiet = epochs["quiet"]
    dense_t = statistics.median(e["time_s"] for e in quiet["dense"])
    dense_step = statistics.median(isolated["dense"])
    table = []
    for s in names:
        es = quiet[s]
        act = statistics.fmean(e["backward"] / e["dataset"] for e in es)
        table.append({
            "strategy": s, "activation": round(act, 4),
            "activations": [round(e["backward"] / e["dataset"], 4) for e in es],
            "epoch_s_median": round(statistics.median(e["time_s"] for e in es), 4),
            "loop_ratio": round(statistics.median(e["time_s"] for e in es) / dense_t, 4),
            "compute_model": round(ARMS[s].compute_model(act), 4),
            "flops_ratio": round(statistics.fmean(e["flops"] / e["flops_dense"] for e in es), 4),
            "isolated_step_ratio": round(statistics.median(isolated[s]) / dense_step, 4),
            "backward_shapes_max": max(len(e["backward_sizes"]) for e in es),
            "epoch_times_s": [round(e["time_s"], 4) for e in es],
        })
    busy = []
    for label, on, threads in conds[1:]:
        d = statistics.median(e["time_s"] for e in epochs[label]["dense"])
        for s in names:
            t = statistics.median(e["time_s"] for e in epochs[label][s])
            q = statistics.median(e["time_s"] for e in quiet[s])
            busy.append({"condition": label, "threads": threads, "strategy": s, "epoch_s_median": round(t, 4),
                         "over_quiet": round(t / q, 4), "loop_ratio": round(t / d, 4),
                         "quiet_loop_ratio": round(q / dense_t, 4),
                         "epoch_times_s": [round(e["time_s"], 4) for e in epochs[label][s]]})
    cuda = args.device.startswith("cuda")
    meta = {"device": device_name(torch.device("cuda" if cuda else "cpu")), "model": args.model, "image_size": args.image_size,
            "batch_size": args.batch_size, "samples": args.samples, "target": args.target, "rounds": args.rounds,
            "threads": args.threads if not cuda else None, "workers": args.workers, "overrides": args.set,
            "arms": names, "busy": args.busy,
            "torch": torch.__version__, "python": platform.python_version(), "wall_s": round(wall, 1),
            "command": command, "date": time.strftime("%Y-%m-%d")}
    print(f"\n{meta['device']}, {args.model}, {args.image_size}px, batch {args.batch_size}, {args.samples} samples, "
          f"target {args.target}, {args.rounds} rounds, torch {torch.__version__}, {wall:.0f} s")
    if args.set:
        print("overrides: " + " ".join(args.set))
    head = (f"{'arm':17s} {'act':>5s} {'epoch s':>8s} {'loop':>6s} {'model':>6s} {'FLOPs':>6s} {'step':>6s} "
            f"{'shapes':>6s}")
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['strategy']:17s} {r['activation']:5.3f} {r['epoch_s_median']:8.2f} {r['loop_ratio']:6.3f} "
              f"{r['compute_model']:6.3f} {r['flops_ratio']:6.3f} {r['isolated_step_ratio']:6.3f} "
              f"{r['backward_shapes_max']:6d}")
    print("loop: median sparse-epoch training time over dense's (run_epoch, BN recalibration included);")
    print("model: docs/design.md §1 at the realised activation (reforward s²/3 + a); FLOPs: executed over dense;")
    print("step: isolated train_step+optimizer_step at round(a*B) trained, over dense's;")
    print("shapes: most distinct backward batch sizes in one sparse epoch")
    if busy:
        print(f"\n{'condition':34s} {'arm':17s} {'epoch s':>8s} {'/quiet':>7s} {'loop':>6s} {'quiet loop':>10s}")
        for b in busy:
            print(f"{b['condition']:34s} {b['strategy']:17s} {b['epoch_s_median']:8.2f} {b['over_quiet']:7.2f} "
                  f"{b['loop_ratio']:6.3f} {b['quiet_loop_ratio']:10.3f}")
        print("/quiet: the arm's busy epoch over its quiet one; loop: over dense under the same condition")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "table": table, "busy": busy}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
