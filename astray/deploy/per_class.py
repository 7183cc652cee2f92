"""Per-class evaluation of a trained model: predictions, then metrics, then files.

``predict`` runs the model over a split; ``per_class_metrics`` is pure computation over
the predictions (scikit-learn's classification report and the confusion matrix);
``write_per_class`` only renders and writes; ``evaluate_per_class`` does all three for a
trained model. ``astray eval`` is the command.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from astray import __version__
from astray.deploy.trained import Trained, load_model
from astray.engine.data import build_datasets
from astray.io import progress, write_parquet, write_text, write_with

MAX_FULL_PROBS = 100  # classes up to which predictions.parquet holds the whole probability vector
TOP_K = 5
MAX_ANNOTATED = 20  # classes up to which the confusion-matrix cells show their counts
MAX_TICK_LABELS = 40


@dataclass(frozen=True)
class Predictions:
    """One row per sample of a split, in dataset order."""

    index: np.ndarray  # (N,) int64: the sample's index in its split
    label: np.ndarray  # (N,) int64
    probs: np.ndarray  # (N, C) float32 softmax probabilities

    @property
    def prediction(self) -> np.ndarray:
        return self.probs.argmax(1)


@dataclass(frozen=True)
class Evaluation:
    """What the predictions say, per class and overall."""

    class_names: list[str]
    samples: int
    accuracy: float
    report: dict[str, Any]  # sklearn classification_report(output_dict=True)
    report_text: str
    confusion: np.ndarray  # (C, C) int64, rows = true class, columns = predicted


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, batch_size: int, device: torch.device) -> Predictions:
    """Softmax probabilities of ``model`` (eval mode) over every sample of ``data``."""
    model = model.to(device).eval()
    index, label, probs = [], [], []
    loader = DataLoader(data, batch_size=batch_size)
    for x, y, idx in progress(loader, len(loader), "predicting"):
        logits = model(x.to(device)).float()
        probs.append(torch.softmax(logits, dim=1).cpu())
        label.append(y)
        index.append(idx)
    return Predictions(torch.cat(index).numpy().astype(np.int64), torch.cat(label).numpy().astype(np.int64),
                       torch.cat(probs).numpy().astype(np.float32))


def class_names(data: Dataset, num_classes: int) -> list[str]:
    """Folder names (ImageFolder) or label names (Hugging Face ClassLabel); else the class numbers."""
    base = getattr(data, "base", None)
    names = getattr(base, "classes", None)  # ImageFolder
    hf = getattr(base, "ds", None)
    if names is None and hf is not None:
        names = getattr(hf.features.get(getattr(base, "label_column", ""), None), "names", None)
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def per_class_metrics(pred: Predictions, names: list[str]) -> Evaluation:
    """Classification report (per class, macro, weighted) and the confusion matrix."""
    # scikit-learn takes ~1 s to import; only this command needs its metrics.
    from sklearn.metrics import classification_report, confusion_matrix

    labels = list(range(len(names)))  # every class, also one the split happens to lack
    args = dict(y_true=pred.label, y_pred=pred.prediction, labels=labels, target_names=names, zero_division=0)
    report = classification_report(**args, output_dict=True)
    text = classification_report(**args, digits=4)
    confusion = confusion_matrix(pred.label, pred.prediction, labels=labels).astype(np.int64)
    n = len(pred.label)
    accuracy = float(np.trace(confusion)) / n if n else float("nan")
    return Evaluation(names, n, accuracy, report, text, confusion)


def predictions_table(pred: Predictions, names: list[str]) -> pa.Table:
    """Per-sample rows; the full probability vector only while it stays small."""
    k = min(TOP_K, pred.probs.shape[1])
    top = np.argsort(-pred.probs, axis=1, kind="stable")[:, :k]
    columns: dict[str, Any] = {
        "index": pa.array(pred.index, pa.int64()),
        "label": pa.array(pred.label, pa.int64()),
        "prediction": pa.array(pred.prediction.astype(np.int64), pa.int64()),
        "correct": pa.array(pred.prediction == pred.label),
        "max_prob": pa.array(pred.probs.max(1), pa.float32()),
        "top5_class": _rows(top.astype(np.int32)),
        "top5_prob": _rows(np.take_along_axis(pred.probs, top, 1)),
    }
    if pred.probs.shape[1] <= MAX_FULL_PROBS:
        columns["probs"] = _rows(pred.probs)
    table = pa.table(columns)
    return table.replace_schema_metadata({"class_names": json.dumps(names)})


def _rows(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A 2-D array as one fixed-size list per row, without a round trip through Python lists."""
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).ravel()), matrix.shape[1])


def confusion_figure(ev: Evaluation, title: str):
    """Counts coloured by their share of the true class (the row), so small classes still show."""
    from matplotlib.figure import Figure  # ~1 s to import; only the figure needs it

    c = len(ev.class_names)
    rows = ev.confusion.sum(1, keepdims=True)
    share = ev.confusion / np.maximum(rows, 1)
    side = min(4 + 0.45 * c, 16)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    if c <= MAX_ANNOTATED:
        for i in range(c):
            for j in range(c):
                if ev.confusion[i, j]:
                    ax.text(j, i, str(ev.confusion[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    if c <= MAX_TICK_LABELS:
        ax.set_xticks(range(c), ev.class_names, rotation=90 if c > 10 else 0)
        ax.set_yticks(range(c), ev.class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}\naccuracy {ev.accuracy:.4f} on {ev.samples} samples", fontsize=10)
    return fig


FILES = ("classification_report.json", "classification_report.txt", "confusion_matrix.png", "predictions.parquet")


def write_per_class(pred: Predictions, ev: Evaluation, out: Path, title: str, provenance: dict[str, Any]) -> None:
    """Write :data:`FILES` into ``out`` (each atomically); ``provenance`` goes into the JSON report."""
    out.mkdir(parents=True, exist_ok=True)
    record = {**provenance, "samples": ev.samples, "accuracy": ev.accuracy, "class_names": ev.class_names,
              "classification_report": ev.report, "confusion_matrix": ev.confusion.tolist()}
    write_text(out / FILES[0], json.dumps(record, indent=2))
    write_text(out / FILES[1], f"{title}\n\n{ev.report_text}")
    figure = confusion_figure(ev, title)
    write_with(out / FILES[2], lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    write_parquet(out / FILES[3], predictions_table(pred, ev.class_names))


def evaluate_per_class(trained: Trained, out: Path, batch_size: int, device: torch.device) -> float:
    """Evaluate one model on its test split (never used to select it), write the files, return the accuracy."""
    model, meta = load_model(trained)
    data = build_datasets(trained.config.dataset)
    pred = predict(model, data.test, batch_size, device)
    ev = per_class_metrics(pred, class_names(data.test, int(meta["num_classes"])))
    provenance = {
        "trial_id": trained.name, "status": trained.status, "model_name": trained.config.model.name,
        "checkpoint": str(trained.checkpoint), "checkpoint_used": trained.checkpoint_note,
        "checkpoint_epoch": meta.get("epoch"), "checkpoint_best_val_acc": meta.get("best_val_acc"),
        "data": f"test split of dataset.type={trained.config.dataset.type}",
        "device": str(device), "astray_version": __version__, "torch": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    title = f"{trained.name} ({trained.config.model.name}, {trained.checkpoint.name})"
    write_per_class(pred, ev, out, title, provenance)
    return ev.accuracy

