"""Accuracy vs executed work on the quickstart data: dense vs reforward vs stale, several seeds.

    python benchmarks/quickstart_tradeoff.py [--seeds 0 1 2] [--epochs 6] [--target 0.3]

Runs the real training loop (``astray.engine.trainer.run``) on the embedded digits data for each
seed and strategy, interleaved (seed-major) so machine noise hits all strategies alike.
Prints a table and writes JSON. Time ratios compare the *sparse* epochs (after the dense
warm-up) of each strategy with the same epochs of the dense run of the same seed.
Energy here is the ``model`` meter (seconds x configured watts): an estimate, so the
table reports time and executed FLOPs, which are measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astray.config.load import load_config  # noqa: E402
from astray.engine.trainer import run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ["dense", "reforward", "stale"]


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--target", type=float, default=0.3)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/quickstart_tradeoff.json"))
    args = p.parse_args()

    runs: dict[str, list[list[dict]]] = {s: [] for s in STRATEGIES}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for strategy in STRATEGIES:
                cfg = load_config(REPO / "configs/quickstart.yaml", [
                    f"ast.strategy={strategy}", f"ast.target_activation={args.target}",
                    f"training.epochs={args.epochs}", f"training.seed={seed}",
                    f"logging.output_dir={tmp}/{strategy}-{seed}", *args.overrides])
                with contextlib.redirect_stdout(io.StringIO()):
                    rows = run(cfg).rows
                runs[strategy].append(rows)
                print(f"seed {seed} {strategy:9s} val_acc {rows[-1]['val_acc']:.4f}", flush=True)

    warm = load_config(REPO / "configs/quickstart.yaml").ast.warmup_epochs
    table = []
    for strategy in STRATEGIES:
        accs = [rows[-1]["val_acc"] for rows in runs[strategy]]
        dense_accs = [rows[-1]["val_acc"] for rows in runs["dense"]]
        time_ratio = [sum(r["train_time_s"] for r in rows[warm:]) / sum(d["train_time_s"] for d in dense[warm:])
                      for rows, dense in zip(runs[strategy], runs["dense"])]
        flops_ratio = [sum(r["flops"] for r in rows) / sum(r["flops_dense"] for r in rows) for rows in runs[strategy]]
        acts = [r["activation_rate"] for rows in runs[strategy] for r in rows[warm:]]
        acc_m, acc_s = _mean_sd(accs)
        tr_m, tr_s = _mean_sd(time_ratio)
        table.append({
            "strategy": strategy, "val_acc_mean": acc_m, "val_acc_sd": acc_s,
            "delta_vs_dense_points": 100 * (acc_m - statistics.fmean(dense_accs)),
            "sparse_epoch_time_ratio_mean": tr_m, "sparse_epoch_time_ratio_sd": tr_s,
            "run_flops_ratio": statistics.fmean(flops_ratio),
            "activation_after_warmup_mean": statistics.fmean(acts),
            "activation_after_warmup_max_dev": max(abs(a - args.target) for a in acts) if strategy != "dense" else 0.0,
            "val_acc_per_seed": accs, "time_ratio_per_seed": time_ratio,
        })

    print(f"\nquickstart (digits, {args.epochs} epochs, warm-up {warm}, target {args.target}), "
          f"seeds {args.seeds}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.time() - started:.0f} s")
    print(f"{'strategy':10s} {'val_acc (mean ± sd)':>20s} {'Δ vs dense':>11s} {'sparse-epoch time':>18s} "
          f"{'run FLOPs':>10s} {'activation after warm-up':>25s}")
    for t in table:
        act = ("—" if t["strategy"] == "dense"
               else f"{t['activation_after_warmup_mean']:.3f} (max dev {t['activation_after_warmup_max_dev']:.3f})")
        print(f"{t['strategy']:10s} {t['val_acc_mean']:>12.4f} ± {t['val_acc_sd']:.4f} "
              f"{t['delta_vs_dense_points']:>+10.2f}p {t['sparse_epoch_time_ratio_mean']:>11.2f} ± "
              f"{t['sparse_epoch_time_ratio_sd']:.2f} {t['run_flops_ratio']:>9.2f}x {act:>25s}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": {"epochs": args.epochs, "seeds": args.seeds, "target": args.target,
                                        "overrides": args.overrides, "torch": torch.__version__,
                                        "threads": torch.get_num_threads(), "command": " ".join(sys.argv),
                                        "date": time.strftime("%Y-%m-%d")},
                               "rows": table}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
