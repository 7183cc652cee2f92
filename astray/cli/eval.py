"""Evaluate a trained model per class: ``python -m astray.eval SWEEP_OR_RUN_DIR [--trial best|front|ID]``.

Writes ``classification_report.json``/``.txt`` (per-class precision, recall, F1; macro
and weighted averages), ``confusion_matrix.png`` and ``predictions.parquet`` (one row
per validation sample) to ``SWEEP_DIR/eval/<trial_id>/``, or ``RUN_DIR/eval/`` for a
training run directory. The module is named after the command; it shadows the
``eval`` builtin only as a module name.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import torch

from astray import __version__
from astray.errors import AstrayError, cli_entry
from astray.evaluate import FILES, class_names, predict, summarize, write_evaluation
from astray.trained import OneLineParser, Trained, add_source_args, find_trained, load_model


def evaluate_trained(trained: Trained, out: Path, batch_size: int, device: torch.device) -> float:
    """Evaluate one model on its validation split, write the files, return the accuracy."""
    from astray.data import build_datasets  # torchvision: only once the arguments are good

    model, meta = load_model(trained)
    data = build_datasets(trained.config.dataset)
    pred = predict(model, data.val, batch_size, device)
    ev = summarize(pred, class_names(data.val, int(meta["num_classes"])))
    provenance = {
        "trial_id": trained.name, "status": trained.status, "model_name": trained.config.model.name,
        "checkpoint": str(trained.checkpoint), "checkpoint_used": trained.checkpoint_note,
        "checkpoint_epoch": meta.get("epoch"), "checkpoint_best_val_acc": meta.get("best_val_acc"),
        "data": f"validation split of dataset.type={trained.config.dataset.type}",
        "device": str(device), "astray_version": __version__, "torch": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    title = f"{trained.name} ({trained.config.model.name}, {trained.checkpoint.name})"
    write_evaluation(pred, ev, out, title, provenance)
    return ev.accuracy


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise AstrayError("--device cuda but no CUDA device is available; use auto or cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m astray.eval", description=__doc__.splitlines()[0])
    add_source_args(p, "SWEEP_DIR/eval/<trial_id>, or RUN_DIR/eval")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.batch_size < 1:
        raise AstrayError(f"--batch-size {args.batch_size} must be at least 1")
    device = pick_device(args.device)
    models = find_trained(args.path, args.trial or "best")
    for trained in models:
        if args.out is not None:
            out = args.out if len(models) == 1 else args.out / trained.name
        else:
            out = trained.out_root / "eval" if trained.is_run else trained.out_root / "eval" / trained.name
        accuracy = evaluate_trained(trained, out, args.batch_size, device)
        print(f"{trained.name}: accuracy {accuracy:.4f} from {trained.checkpoint.name}; "
              f"{', '.join(FILES)} in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
