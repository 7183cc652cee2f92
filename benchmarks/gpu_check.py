"""GPU validation: dense vs reforward vs stale on ResNet-50 at ImageNet size, NVML joules.

    python benchmarks/gpu_check.py [--samples 12800] [--epochs 3] [--target 0.25]

Runs the real training engine (``astray.engine.trainer.run``) on one GPU for each strategy on
synthetic 224x224 images (1000 classes; learnability does not matter here), bf16,
channels-last, batch 256, one dense warm-up epoch then sparse epochs. Per strategy it
prints images per second (dataset samples per training second), NVML joules per epoch
(training, evaluation), and ratios to dense beside the compute model of docs/design.md §1.
Cross-check: over each whole run, the NVML energy counter and an integration of polled
board power measure the same window; their ratio should be close to 1.
Writes JSON (``--out``). Sized to finish in well under 10 minutes on an H100/H200.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astray.config.load import load_config  # noqa: E402
from astray.engine.energy import NvmlMeter, NvmlPowerMeter, _cuda_uuid, _load_nvml  # noqa: E402
from astray.engine.trainer import run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--samples", type=int, default=12800, help="synthetic images, train + val (80/20)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--target", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    p.add_argument("--compile", action="store_true", help="training.compile=true for every strategy")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/gpu_check.json"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    nvml = _load_nvml()
    uuid = _cuda_uuid(device)
    name = torch.cuda.get_device_name(device)
    # cudnn.benchmark is the trainer's call: on wherever backward shapes are bounded
    # (reforward's shape buckets, full batches elsewhere; docs/design.md §10).

    results = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("dense", "reforward", "stale"):
            cfg = load_config(None, [
                f"model.name={args.model}", "model.channels_last=true", "dataset.type=synthetic",
                "dataset.num_classes=1000", "dataset.image_size=224", f"dataset.synthetic_samples={args.samples}",
                "dataset.val_fraction=0.2", f"dataset.num_workers={args.workers}", "dataset.pin_memory=true",
                f"ast.strategy={strategy}", f"ast.target_activation={args.target}", "ast.warmup_epochs=1",
                "training.optimizer=sgd", "training.lr=0.1", f"training.batch_size={args.batch_size}",
                f"training.epochs={args.epochs}", "training.mixed_precision=bf16", "training.device=cuda",
                "training.max_loss=0", "energy.meter=nvml", f"logging.output_dir={tmp}/{strategy}"]
                + (["training.compile=true"] if args.compile else []))
            counter = NvmlMeter([uuid], nvml, lambda: torch.cuda.synchronize(device))
            power = NvmlPowerMeter([uuid], nvml, lambda: torch.cuda.synchronize(device), interval_s=0.02)
            counter.begin()
            power.begin()
            with contextlib.redirect_stdout(io.StringIO()):
                rows = run(cfg).rows
            power_j = power.end()
            counter_j = counter.end()
            results[strategy] = {"rows": rows, "run_counter_j": counter_j, "run_power_j": power_j}
            sparse = rows[1:]
            print(f"{strategy:9s} done: {sum(r['train_time_s'] for r in sparse):.1f} s in sparse epochs, "
                  f"counter {counter_j:.0f} J vs power-integrated {power_j:.0f} J", flush=True)

    dense_rows = results["dense"]["rows"][1:]
    d_time = statistics.fmean(r["train_time_s"] for r in dense_rows)
    d_energy = statistics.fmean(r["energy_j"] for r in dense_rows)
    limit = {"dense": 1.0, "reforward": 1 / 3 + args.target, "stale": args.target}
    table = []
    for strategy, res in results.items():
        rows = res["rows"][1:]  # after the dense warm-up epoch
        t = statistics.fmean(r["train_time_s"] for r in rows)
        e = statistics.fmean(r["energy_j"] for r in rows)
        table.append({
            "strategy": strategy, "activation": statistics.fmean(r["activation_rate"] for r in rows),
            "images_per_s": statistics.fmean(r["samples_total"] / r["train_time_s"] for r in rows),
            "train_j_per_epoch": e, "eval_j_per_epoch": statistics.fmean(r["val_energy_j"] for r in rows),
            "time_ratio": t / d_time, "energy_ratio": e / d_energy,
            "flops_ratio": statistics.fmean(r["flops"] / r["flops_dense"] for r in rows),
            "compute_model": limit[strategy],
            "counter_vs_power": res["run_counter_j"] / res["run_power_j"],
            "energy_source": rows[0]["energy_source"],
        })
    print(f"\n{name}, {args.model}, batch {args.batch_size}, 224x224 synthetic, bf16, channels-last, "
          f"{args.epochs} epochs (1 dense warm-up), target {args.target}, torch {torch.__version__}, "
          f"{time.time() - started:.0f} s")
    print(f"{'strategy':9s} {'act':>5s} {'img/s':>8s} {'train J/ep':>10s} {'eval J/ep':>9s} {'time':>6s} "
          f"{'energy':>7s} {'FLOPs':>6s} {'model':>6s} {'counter/power':>13s}")
    for r in table:
        print(f"{r['strategy']:9s} {r['activation']:5.2f} {r['images_per_s']:8.0f} {r['train_j_per_epoch']:10.0f} "
              f"{r['eval_j_per_epoch']:9.0f} {r['time_ratio']:6.2f} {r['energy_ratio']:7.2f} "
              f"{r['flops_ratio']:6.2f} {r['compute_model']:6.2f} {r['counter_vs_power']:13.3f}")
    print("time/energy/FLOPs: sparse epochs over dense epochs; model: docs/design.md §1 compute limit; "
          "energy: NVML total-energy counter (measured)")
    syncs = count_syncs(args, device)
    for strategy, per_step in syncs.items():
        print(f"host syncs per step, {strategy} sparse epoch (set_sync_debug_mode('warn')): {per_step:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"syncs_per_step": syncs, "meta": {"device": name, "model": args.model, "batch_size": args.batch_size,
                                        "samples": args.samples, "epochs": args.epochs, "target": args.target,
                                        "torch": torch.__version__, "command": " ".join(sys.argv),
                                        "date": time.strftime("%Y-%m-%d")},
                               "table": table,
                               "runs": {k: {"run_counter_j": v["run_counter_j"], "run_power_j": v["run_power_j"],
                                            "rows": v["rows"]} for k, v in results.items()}}, indent=2))
    print(f"wrote {out}")
    return 0


def count_syncs(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """One sparse epoch per strategy under ``torch.cuda.set_sync_debug_mode("warn")``: every
    synchronising call warns once; warnings per step are the host syncs docs/design.md §10
    lists (reforward: 1, its selection size; stale: 0)."""
    import warnings

    from astray.engine.trainer import Trainer, resolve_device

    out: dict[str, float] = {}
    samples = min(args.samples, 2560)
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("reforward", "stale"):
            cfg = load_config(None, [
                f"model.name={args.model}", "model.channels_last=true", "dataset.type=synthetic",
                "dataset.num_classes=1000", "dataset.image_size=224", f"dataset.synthetic_samples={samples}",
                f"dataset.num_workers={args.workers}", "dataset.pin_memory=true", f"ast.strategy={strategy}",
                f"ast.target_activation={args.target}", "training.epochs=2", f"training.batch_size={args.batch_size}",
                "training.mixed_precision=bf16", "training.device=cuda", "energy.meter=model",
                f"logging.output_dir={tmp}/{strategy}"])
            with contextlib.redirect_stdout(io.StringIO()):
                trainer = Trainer(cfg, Path(tmp) / strategy, resolve_device("cuda"), resume=False)
                trainer.run_epoch(0, sparse=False)
                torch.cuda.synchronize(device)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        trainer.run_epoch(1, sparse=True)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
            steps = max(1, len(trainer.train_loader))
            out[strategy] = sum("synchroniz" in str(w.message) for w in caught) / steps
    return out


if __name__ == "__main__":
    sys.exit(main())
