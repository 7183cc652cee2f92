"""Evaluate a trained model per class: ``astray eval SWEEP_OR_RUN_DIR [--trial best|front|ID]``.

Writes ``classification_report.json``/``.txt`` (per-class precision, recall, F1; macro
and weighted averages), ``confusion_matrix.png`` and ``predictions.parquet`` (one row
per validation sample) to ``SWEEP_DIR/eval/<trial_id>/``, or ``RUN_DIR/eval/`` for a
training run directory. Also ``python -m astray.eval``; the work is
``astray.deploy.per_class``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from astray.cli.common import OneLineParser, add_source_args, cli_entry
from astray.deploy.per_class import FILES, evaluate_per_class
from astray.deploy.trained import find_trained
from astray.errors import AstrayError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise AstrayError("--device cuda but no CUDA device is available; use auto or cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def parse_args(argv: list[str] | None, prog: str = "python -m astray.eval") -> argparse.Namespace:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    add_source_args(p, "SWEEP_DIR/eval/<trial_id>, or RUN_DIR/eval")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None, prog: str = "python -m astray.eval") -> int:
    args = parse_args(argv, prog)
    if args.batch_size < 1:
        raise AstrayError(f"--batch-size {args.batch_size} must be at least 1")
    device = pick_device(args.device)
    models = find_trained(args.path, args.trial or "best")
    for trained in models:
        if args.out is not None:
            out = args.out if len(models) == 1 else args.out / trained.name
        else:
            out = trained.out_root / "eval" if trained.is_run else trained.out_root / "eval" / trained.name
        accuracy = evaluate_per_class(trained, out, args.batch_size, device)
        print(f"{trained.name}: accuracy {accuracy:.4f} from {trained.checkpoint.name}; "
              f"{', '.join(FILES)} in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
