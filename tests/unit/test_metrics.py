"""Macro-F1 against scikit-learn, and the Parquet metrics file."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import f1_score

from astray.engine.records import METRICS_SCHEMA, macro_f1, read_metrics, write_metrics


def _confusion(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    conf.index_put_((y_true, y_pred), torch.ones_like(y_true), accumulate=True)
    return conf


@pytest.mark.parametrize("seed", range(8))
def test_macro_f1_matches_sklearn(seed):
    gen = torch.Generator().manual_seed(seed)
    num_classes = 12
    # classes 10 and 11 never occur, and the label set and the prediction set differ
    y_true = torch.randint(0, 8, (200,), generator=gen)
    y_pred = torch.where(torch.rand(200, generator=gen) < 0.6, y_true,
                         torch.randint(2, 10, (200,), generator=gen))
    expected = f1_score(y_true.numpy(), y_pred.numpy(), average="macro", zero_division=0)
    assert macro_f1(_confusion(y_true, y_pred, num_classes)) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_perfect_and_all_wrong():
    y = torch.tensor([0, 1, 2, 2, 1])
    assert macro_f1(_confusion(y, y, 5)) == pytest.approx(1.0)
    assert macro_f1(_confusion(y, (y + 1) % 3, 5)) == 0.0


def test_macro_f1_empty_confusion_is_zero():
    assert macro_f1(torch.zeros(4, 4)) == 0.0


def _row(epoch: int) -> dict:
    return {
        "epoch": epoch, "train_loss": 1.5 / epoch, "train_acc": 0.4, "val_loss": 1.2,
        "val_acc": 0.5 + 0.01 * epoch, "val_macro_f1": 0.45,
        "test_loss": 1.3, "test_acc": 0.49 + 0.01 * epoch, "test_macro_f1": 0.44, "activation_rate": 0.3,
        "threshold": 0.8, "samples_total": 1000, "samples_forward": 1300, "samples_backward": 300,
        "flops": 1.5e12, "flops_dense": 3.0e12, "train_time_s": 12.5, "time_s": 14.0 * epoch,
        "energy_j": 800.0, "val_energy_j": 90.0, "energy_source": "model", "energy_scope": "process",
        "idle_w": 0.0, "lr": 1e-3, "strategy": "reforward", "noisy_share": 0.25,
        "setup_flops": 0.0, "setup_time_s": 0.0, "setup_energy_j": 0.0, "samples_scored": 500, "threads": 2,
    }


REQUIRED = ["epoch", "train_loss", "val_acc", "val_macro_f1", "activation_rate", "threshold",
            "samples_total", "samples_forward", "samples_backward", "flops", "flops_dense",
            "train_time_s", "time_s", "energy_j", "energy_source", "lr"]


def test_schema_has_required_columns():
    names = METRICS_SCHEMA.names
    for column in REQUIRED:
        assert column in names
    assert len(set(names)) == len(names)


def test_write_read_round_trip(tmp_path):
    rows = [_row(1), _row(2), _row(3)]
    path = tmp_path / "metrics.parquet"
    write_metrics(rows, path)
    assert read_metrics(path) == rows
    # atomic write leaves no temporary file behind
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.parquet"]


def test_rewrite_replaces_file(tmp_path):
    path = tmp_path / "metrics.parquet"
    write_metrics([_row(1)], path)
    write_metrics([_row(1), _row(2)], path)
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2]


def test_file_readable_with_pandas_and_typed(tmp_path):
    path = tmp_path / "metrics.parquet"
    write_metrics([_row(1), _row(2)], path)
    df = pd.read_parquet(path)
    assert list(df.columns) == METRICS_SCHEMA.names
    assert len(df) == 2
    assert df["epoch"].tolist() == [1, 2]
    assert str(df["samples_backward"].dtype) == "int64"
    assert df["energy_source"].tolist() == ["model", "model"]
    assert math.isclose(df["flops"].iloc[0], 1.5e12)
    assert pq.read_schema(path).names == METRICS_SCHEMA.names


def test_missing_values_are_null(tmp_path):
    row = _row(1)
    del row["val_macro_f1"]
    path = tmp_path / "metrics.parquet"
    write_metrics([row], path)
    assert read_metrics(path)[0]["val_macro_f1"] is None


def test_trial_summary_selects_the_epoch_on_validation_and_reports_test_there():
    """The selected epoch is the first with the best val_acc; test_acc is read at it, not
    the test split's own best; a row from before the test split reads as NaN."""
    from astray.sweep.store import trial_summary

    rows = [_row(1), _row(2), _row(3)]
    rows[0].update(val_acc=0.70, test_acc=0.90)  # the test split's best: never chosen for it
    rows[1].update(val_acc=0.80, test_acc=0.60, test_macro_f1=0.55)
    rows[2].update(val_acc=0.80, test_acc=0.65)  # a tie on validation keeps the first
    summary = trial_summary("t", rows)
    assert summary["selected_epoch"] == 2 and summary["val_acc"] == 0.80
    assert (summary["test_acc"], summary["test_macro_f1"], summary["final_test_acc"]) == (0.60, 0.55, 0.65)
    old = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in rows]
    assert math.isnan(trial_summary("t", old)["test_acc"]) and trial_summary("t", old)["selected_epoch"] == 2
