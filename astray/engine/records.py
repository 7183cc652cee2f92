"""The epoch row: one dataclass that *is* the ``metrics.parquet`` schema, and its file.

:class:`EpochRow` lists every column once, with its type and meaning; ``METRICS_SCHEMA``
is derived from it, so a row the trainer builds cannot drift from the file's columns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

import pyarrow as pa

from astray.io import read_parquet, write_parquet

if TYPE_CHECKING:  # the result store reads this schema without loading torch
    import torch


@dataclass(frozen=True)
class EpochRow:
    """One row per epoch in ``<logging.output_dir>/metrics.parquet``. Field order is column order."""

    epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over samples seen in training forwards
    train_acc: float  # accuracy over the same samples
    val_loss: float  # the validation split (carved from training data): what selects epochs
    val_acc: float
    val_macro_f1: float
    test_loss: float  # the test split: evaluated every epoch, never used to select
    test_acc: float
    test_macro_f1: float
    activation_rate: float  # samples_backward / samples_total
    threshold: float  # controller threshold at epoch end (significance units)
    samples_total: int  # training samples in the dataset (the dense epoch)
    samples_forward: int  # sample-forward passes executed (scoring + training)
    samples_backward: int  # sample-backward passes executed
    flops: float  # executed training FLOPs
    flops_dense: float  # FLOPs a dense epoch would execute
    train_time_s: float  # wall seconds in the training part of the epoch
    time_s: float  # wall seconds since the run started (train + eval, all epochs)
    energy_j: float  # training energy of the epoch, joules (idle subtracted if idle_w > 0)
    val_energy_j: float  # evaluation energy of the epoch (validation and test), joules
    energy_source: str  # nvml | nvml_power | rapl (measured) or model (estimate: seconds x watts)
    energy_scope: str  # process (model) | device (whole device) | device-shared (other jobs too)
    idle_w: float  # idle power subtracted from energy_j; 0 = no subtraction
    lr: float  # learning rate at epoch end
    strategy: str  # dense | reforward | stale (dense during warm-up epochs)
    noisy_share: float = 0.0  # of the samples trained (backward) this epoch, the share whose label dataset.label_noise flipped
    setup_flops: float = 0.0  # work the method did before training (the irreducible-loss model, docs/design.md §11),
    #                     charged to the first epoch: included in its flops, train_time_s and energy_j; 0 otherwise
    setup_time_s: float = 0.0
    setup_energy_j: float = 0.0
    samples_scored: int = 0  # of samples_forward, the scoring forwards (ast.reforward.score_scale: at that size)
    threads: int = 0  # torch intra-op threads of each process (training.threads, docs/design.md §12)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string()}
METRICS_SCHEMA = pa.schema([(name, _ARROW[hint]) for name, hint in get_type_hints(EpochRow).items()])


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
    write_parquet(path, pa.Table.from_pylist(rows, schema=METRICS_SCHEMA))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return read_parquet(path).to_pylist()


# steps.parquet: the controller step by step (docs/design.md §10), every
# ``logging.steps_every``-th training step, and in stale mode every plan window.
TRACE_SCHEMA = pa.schema([
    ("epoch", pa.int64()),        # 1-based, as in metrics.parquet
    ("step", pa.int64()),         # training step (source "step") or plan window ("plan") within the epoch
    ("progress", pa.float64()),   # fractional epochs since the start of training
    ("source", pa.string()),      # step | plan
    ("activation", pa.float64()),  # share of the step's (all ranks') or the window's samples trained
    ("threshold", pa.float64()),  # the controller's threshold after this update
    ("error", pa.float64()),      # EMA of the activation minus the target (NaN before any update)
    ("integral", pa.float64()),   # the controller's integral term
    ("loss", pa.float64()),       # mean cross-entropy of the primary rank's batch (NaN for plan rows)
    ("lr", pa.float64()),         # learning rate of the step (NaN for plan rows)
])


def write_steps(rows: list[dict[str, Any]], path: str | Path) -> None:
    write_parquet(path, pa.Table.from_pylist(rows, schema=TRACE_SCHEMA))


def read_steps(path: str | Path) -> list[dict[str, Any]]:
    return read_parquet(path).to_pylist()


def controller_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trace rows where the controller moves, in order of progress: stale's plan
    windows when there are any (its controller does not move while it trains), else the
    training steps."""
    source = "plan" if any(r["source"] == "plan" for r in rows) else "step"
    return sorted((r for r in rows if r["source"] == source), key=lambda r: r["progress"])


# label_noise.parquet: one row per label dataset.label_noise flipped, so an analysis can
# tell clean samples from noisy ones (the test split is never flipped).
FLIPS_SCHEMA = pa.schema([
    ("split", pa.string()),       # train | val
    ("index", pa.int64()),        # the sample's dataset index in that split (what steps and score tables key by)
    ("label", pa.int64()),        # the true label
    ("noisy_label", pa.int64()),  # the label training (or validation) sees
])


def write_flips(flips: dict[str, Any], path: str | Path) -> None:
    """``flips``: split name -> ``astray.engine.data.LabelFlips``."""
    rows = {name: [] for name in FLIPS_SCHEMA.names}
    for split, f in flips.items():
        rows["split"] += [split] * f.index.numel()
        rows["index"] += f.index.tolist()
        rows["label"] += f.label.tolist()
        rows["noisy_label"] += f.noisy_label.tolist()
    write_parquet(path, pa.Table.from_pydict(rows, schema=FLIPS_SCHEMA))


def read_flips(path: str | Path) -> list[dict[str, Any]]:
    return read_parquet(path).to_pylist()
