"""Per-epoch metrics: the schema, the macro-F1 computation, and the Parquet file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from astray.fileio import atomic_path

if TYPE_CHECKING:
    import torch

# One row per epoch in <logging.output_dir>/metrics.parquet. Order is the file's order.
EPOCH_SCHEMA = pa.schema([
    ("epoch", pa.int64()),            # 1-based
    ("train_loss", pa.float64()),     # mean cross-entropy over samples seen in training forwards
    ("train_acc", pa.float64()),      # accuracy over the same samples
    ("val_loss", pa.float64()),
    ("val_acc", pa.float64()),
    ("val_macro_f1", pa.float64()),
    ("activation_rate", pa.float64()),  # samples_backward / samples_total
    ("threshold", pa.float64()),      # controller threshold at epoch end (significance units)
    ("samples_total", pa.int64()),    # training samples in the dataset (the dense epoch)
    ("samples_forward", pa.int64()),  # sample-forward passes executed (scoring + training)
    ("samples_backward", pa.int64()),  # sample-backward passes executed
    ("flops", pa.float64()),          # executed training FLOPs
    ("flops_dense", pa.float64()),    # FLOPs a dense epoch would execute
    ("train_time_s", pa.float64()),   # wall seconds in the training part of the epoch
    ("time_s", pa.float64()),         # wall seconds since the run started (train + eval, all epochs)
    ("energy_j", pa.float64()),       # training energy of the epoch, joules (idle subtracted if idle_w > 0)
    ("val_energy_j", pa.float64()),   # evaluation energy of the epoch, joules
    ("energy_source", pa.string()),   # nvml | nvml_power | rapl (measured) or model (estimate: seconds x watts)
    ("energy_scope", pa.string()),    # process (model) | device (whole device) | device-shared (other jobs too)
    ("idle_w", pa.float64()),         # idle power subtracted from energy_j; 0 = no subtraction
    ("lr", pa.float64()),             # learning rate at epoch end
    ("strategy", pa.string()),        # dense | reforward | stale (dense during warm-up epochs)
])


def macro_f1(confusion: torch.Tensor) -> float:
    """Macro F1 from a confusion matrix (rows true, columns predicted).

    Averages over classes present in the labels or the predictions, as scikit-learn
    does, so a validation split missing a class is not penalised for it.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    support = confusion.sum(1) + confusion.sum(0)
    present = support > 0
    if not present.any():
        return 0.0
    f1 = 2 * tp[present] / support[present]
    return float(f1.mean())


def write_metrics(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write all rows atomically: a reader never sees a half-written file."""
    path = Path(path)
    table = pa.Table.from_pylist(rows, schema=EPOCH_SCHEMA)
    tmp = atomic_path(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()
