"""Do scores on a smaller copy of the batch rank samples as full-size scores do?

    python benchmarks/score_agreement.py [--quick] [--seeds 2] [--samples 2048]

``ast.reforward.score_scale`` s runs reforward's scoring forward on the batch resized by
s (docs/design.md §12): about s² of the FLOPs, but the significance it selects by is
that of a blurred image. This trains dense runs of the real loop (``Trainer.run_epoch``)
on the quickstart digits (8x8 images resized to 32 px) and a Fashion-MNIST subset (28 px,
the original IDX files; ``apt-get install dataset-fashion-mnist``), and at several points
of training scores the same fixed training samples, batch by batch, in train mode as the
step does (BatchNorm on batch statistics; running statistics left alone), at s = 1, 0.75
and 0.5. Per point it records

- the Spearman rank correlation of the significance at s against s = 1;
- the overlap of the selected top-k: the share of the k = a·n most significant samples
  at s = 1 that are also among the k most significant at s, for a = 0.3 and 0.5 (a
  random selection overlaps by a on average).

Prints a table (mean and range over seeds) and writes JSON (``--out``).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy.stats import spearmanr  # noqa: E402

from astray.config.load import load_config  # noqa: E402
from astray.engine import batchnorm, ddp  # noqa: E402
from astray.engine.step import downscale  # noqa: E402
from astray.engine.trainer import Trainer  # noqa: E402
from astray.sparse import significance  # noqa: E402
from astray.sweep.provenance import git_commit, hardware, library_versions  # noqa: E402

SCALES = (1.0, 0.75, 0.5)
ACTIVATIONS = (0.3, 0.5)


def datasets(args: argparse.Namespace) -> list[tuple[str, str, list[str], int]]:
    """(name, config, overrides, epochs); scored after each epoch in ``points``."""
    digits = ("digits", "configs/quickstart.yaml", ["model.name=test_resnet"], 2 if args.quick else 6)
    fashion = ("fashion-mnist", "configs/fashion.yaml",
               ["model.name=test_resnet", f"dataset.train_subset={1000 if args.quick else 10000}",
                f"dataset.root={args.root}"], 1 if args.quick else 6)
    return [digits] if args.quick else [digits, fashion]


def points(epochs: int) -> list[int]:
    """Epochs (1-based) after which to score: early, middle, last."""
    return sorted({1, max(1, epochs // 2), epochs})


def scores(trainer: Trainer, indices: torch.Tensor, batch: int, weight: float) -> dict[float, torch.Tensor]:
    """Significance of the training samples ``indices`` at every scale, batch by batch."""
    net = ddp.unwrap(trainer.model)
    net.train()
    out: dict[float, list[torch.Tensor]] = {s: [] for s in SCALES}
    data = trainer.data.train
    for chunk in indices.split(batch):
        items = [data[int(i)] for i in chunk]  # one augmented draw, scored at every scale
        x = torch.stack([it[0] for it in items]).to(trainer.device)
        y = torch.tensor([int(it[1]) for it in items], device=trainer.device)
        with torch.no_grad(), batchnorm.frozen_statistics(net):
            for s in SCALES:
                out[s].append(significance(net(downscale(x, s)), y, weight).float().cpu())
    return {s: torch.cat(v) for s, v in out.items()}


def overlap(full: torch.Tensor, cheap: torch.Tensor, a: float) -> float:
    k = max(1, round(a * full.numel()))
    top_full = set(full.topk(k).indices.tolist())
    return len(top_full & set(cheap.topk(k).indices.tolist())) / k


def measure(name: str, config: str, base: list[str], epochs: int, seed: int, args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(REPO / config, base + ["ast.strategy=dense", f"training.epochs={epochs}",
                                                 f"training.seed={seed}", "training.device=cpu",
                                                 "energy.meter=model", f"logging.output_dir={tmp}"])
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = Trainer(cfg, Path(tmp), torch.device("cpu"), resume=False)
        n = min(args.samples, len(trainer.data.train))
        indices = torch.randperm(len(trainer.data.train), generator=torch.Generator().manual_seed(seed))[:n]
        size = tuple(trainer.data.train[0][0].shape[-2:])
        for epoch in range(epochs):
            with contextlib.redirect_stdout(io.StringIO()):
                trainer.run_epoch(epoch, sparse=False)
            if epoch + 1 not in points(epochs):
                continue
            sig = scores(trainer, indices, cfg.training.batch_size, cfg.ast.entropy_weight)
            for s in SCALES[1:]:
                row = {"dataset": name, "image_px": size[0], "seed": seed, "epoch": epoch + 1, "epochs": epochs,
                       "scale": s, "samples": n,
                       "spearman": float(spearmanr(sig[1.0].numpy(), sig[s].numpy()).statistic)}
                row.update({f"top{round(a * 100)}_overlap": overlap(sig[1.0], sig[s], a) for a in ACTIVATIONS})
                rows.append(row)
                print(f"{name} seed {seed} epoch {epoch + 1}/{epochs} s={s}: spearman {row['spearman']:.3f}, "
                      + ", ".join(f"top-{round(a * 100)}% overlap {row[f'top{round(a * 100)}_overlap']:.3f}"
                                  for a in ACTIVATIONS), flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    keys = sorted({(r["dataset"], r["epoch"], r["scale"]) for r in rows}, key=lambda k: (k[0], k[1], -k[2]))
    out = []
    for d, e, s in keys:
        rs = [r for r in rows if (r["dataset"], r["epoch"], r["scale"]) == (d, e, s)]
        entry = {"dataset": d, "epoch": e, "epochs": rs[0]["epochs"], "scale": s, "seeds": len(rs)}
        for m in ("spearman", *(f"top{round(a * 100)}_overlap" for a in ACTIVATIONS)):
            vals = [r[m] for r in rs]
            entry[m] = statistics.fmean(vals)
            entry[f"{m}_range"] = [min(vals), max(vals)]
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--samples", type=int, default=2048, help="training samples scored at each point")
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="digits only, 2 epochs, 1 seed: checks the script")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/score_agreement.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = []
    for name, config, base, epochs in datasets(args):
        for seed in range(1 if args.quick else args.seeds):
            rows.extend(measure(name, config, base, epochs, seed, args))
    table = summary(rows)
    print(f"\n{'dataset':14s} {'epoch':>7s} {'s':>5s} {'spearman':>9s} {'top-30%':>8s} {'top-50%':>8s}   (mean over seeds)")
    for t in table:
        print(f"{t['dataset']:14s} {t['epoch']:>3d}/{t['epochs']:<3d} {t['scale']:5.2f} {t['spearman']:9.3f} "
              f"{t['top30_overlap']:8.3f} {t['top50_overlap']:8.3f}")
    print("top-k%: share of the k most significant at s = 1 also among the k most significant at s "
          "(random: k% on average)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["python", "benchmarks/score_agreement.py", *(argv or sys.argv[1:])]),
        "git_commit": git_commit(), "hardware": hardware(), "libraries": library_versions(),
        "python": platform.python_version(), "wall_s": round(time.perf_counter() - started, 1),
        "settings": {k: str(v) for k, v in vars(args).items()}, "summary": table, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
