"""The sweep's Parquet result store.

Layout under ``<sweep.results_dir>/<sweep.name>/``::

    sweep.json               manifest: resolved config, versions, git commit, hardware
    trials/<trial_id>.parquet  one row per trial (its latest state)
    epochs/<trial_id>.parquet  one row per (trial, epoch)
    steps/<trial_id>.parquet   the controller step by step (logging.steps_every), per trial

One writer (the sweep driver) owns these files, so trials on many nodes never race on
them. Every write goes to a dot-prefixed temporary file in the same directory and is
then ``os.replace``-d into place: readers (which skip dot files) never see half a file.
A trial's files are rewritten whole, keyed by (trial_id, epoch), so writing the same
results again — a resumed sweep, a retried trial — never duplicates a row. Columns are
only ever added (``search_phase`` was): a store's older files lack them, and reading the
folder fills them with nulls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from astray.engine.records import METRICS_SCHEMA, TRACE_SCHEMA
from astray.io import read_parquet, write_parquet, write_text
from astray.schema import BASELINE_FLAG

MANIFEST = "sweep.json"
TRIALS, EPOCHS, STEPS = "trials", "epochs", "steps"  # the store's folders: one Parquet file per trial in each

TRIAL_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("trial_id", pa.string()),
    ("status", pa.string()),           # astray.schema: running | retrying | completed | diverged | error
    (BASELINE_FLAG, pa.bool_()),       # any baseline (dense or random), never a searched trial
    ("baseline_kind", pa.string()),    # "" searched | dense | random (astray.schema KIND_*)
    ("budget", pa.float64()),          # share of training.epochs the trial trained (dense baselines < 1)
    ("config_id", pa.string()),        # the configuration; its seed replicates share it
    ("replicate", pa.int64()),         # 0 .. search.repeats-1
    ("seed", pa.int64()),              # training.seed of this replicate
    ("search_phase", pa.string()),     # searched: startup | guided (astray.schema PHASE_*); null for baselines
    ("val_acc", pa.float64()),         # best validation accuracy over epochs: the selected epoch
    ("final_val_acc", pa.float64()),
    ("val_macro_f1", pa.float64()),    # at the selected epoch
    ("test_acc", pa.float64()),        # test accuracy at the selected epoch (best.pt's): what reports use
    ("test_macro_f1", pa.float64()),   # at the selected epoch
    ("final_test_acc", pa.float64()),  # test accuracy of the last epoch
    ("selected_epoch", pa.int64()),    # the epoch validation selected (1-based)
    ("energy_j", pa.float64()),        # training energy, all epochs, all ranks
    ("energy_source", pa.string()),
    ("energy_scope", pa.string()),     # process | device | device-shared (see the epochs table)
    ("val_energy_j", pa.float64()),    # evaluation energy, all epochs and ranks
    ("flops", pa.float64()),
    ("flops_dense", pa.float64()),
    ("time_s", pa.float64()),
    ("epochs", pa.int64()),
    ("stopped_early", pa.bool_()),     # sweep.early_stop stopped its configuration at a rung (epochs = its rung)
    ("activation_rate", pa.float64()),  # realised mean over the epochs
    ("noisy_share", pa.float64()),     # of all samples trained, the share dataset.label_noise flipped
    ("setup_energy_j", pa.float64()),  # of energy_j, the work before training (irreducible-loss models)
    ("error", pa.string()),
    ("node_id", pa.string()),          # Ray node(s) the trial ran on, comma-separated
    ("started_at", pa.float64()),      # unix seconds the driver saw the trial start (first attempt)
    ("ended_at", pa.float64()),        # ... and finish; minus time_s = Ray start-up and tear-down
    ("report_s", pa.float64()),        # seconds the trial spent handing results and checkpoints to Ray
    ("config_json", pa.string()),      # the trial's full resolved config
]


def trial_schema(searched: dict[str, pa.DataType]) -> pa.Schema:
    """Fixed columns, then one column per searched dotted key, named by that key."""
    return pa.schema(TRIAL_COLUMNS + list(searched.items()))


EPOCHS_SCHEMA = pa.schema([("trial_id", pa.string())] + list(zip(METRICS_SCHEMA.names, METRICS_SCHEMA.types)))
STEPS_SCHEMA = pa.schema([("trial_id", pa.string())] + list(zip(TRACE_SCHEMA.names, TRACE_SCHEMA.types)))


def selected_epoch(rows: list[dict[str, Any]]) -> int | None:
    """Index of the epoch validation selects: the first with the highest finite ``val_acc``
    (the trainer's rule for best.pt, docs/design.md §9); None when no epoch has one. The
    test columns are never read here."""
    finite = [i for i, r in enumerate(rows) if r.get("val_acc") is not None and not math.isnan(r["val_acc"])]
    return max(finite, key=lambda i: (rows[i]["val_acc"], -i)) if finite else None


def _get(row: dict[str, Any], key: str) -> float:
    """A float column of an epoch row; NaN in rows written before the column existed."""
    value = row.get(key)
    return float("nan") if value is None else float(value)


def trial_summary(trial_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Trial-level figures (astray.schema.TRIAL_METRICS and the energy labels) from its epoch rows."""
    if not rows:
        return {"trial_id": trial_id, "epochs": 0}
    best = selected_epoch(rows)
    nan = float("nan")
    return {
        "trial_id": trial_id,
        "val_acc": rows[best]["val_acc"] if best is not None else nan,
        "final_val_acc": rows[-1]["val_acc"],
        "val_macro_f1": rows[best]["val_macro_f1"] if best is not None else nan,
        "test_acc": _get(rows[best], "test_acc") if best is not None else nan,
        "test_macro_f1": _get(rows[best], "test_macro_f1") if best is not None else nan,
        "final_test_acc": _get(rows[-1], "test_acc"),
        "selected_epoch": int(rows[best]["epoch"]) if best is not None else None,
        "energy_j": sum(r["energy_j"] for r in rows),
        "energy_source": rows[-1]["energy_source"],
        "energy_scope": rows[-1].get("energy_scope"),
        "val_energy_j": sum(r.get("val_energy_j") or 0.0 for r in rows),
        "flops": sum(r["flops"] for r in rows),
        "flops_dense": sum(r["flops_dense"] for r in rows),
        "time_s": rows[-1]["time_s"],
        "epochs": len(rows),
        "activation_rate": sum(r["activation_rate"] for r in rows) / len(rows),
        "noisy_share": (sum(_get(r, "noisy_share") * r["samples_backward"] for r in rows)
                        / max(1, sum(r["samples_backward"] for r in rows))),
        "setup_energy_j": sum(_get(r, "setup_energy_j") for r in rows),
    }


class ResultStore:
    """Writes one sweep's trials, epochs and manifest. Only the driver writes."""

    def __init__(self, root: str | Path, searched: dict[str, pa.DataType]) -> None:
        self.root = Path(root)
        self.searched = dict(searched)
        self.trials_dir = self.root / TRIALS
        self.epochs_dir = self.root / EPOCHS
        self.steps_dir = self.root / STEPS
        self._schema = trial_schema(self.searched)

    def open(self) -> ResultStore:
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        self.epochs_dir.mkdir(parents=True, exist_ok=True)
        return self

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))

    def read_manifest(self) -> dict[str, Any]:
        return json.loads((self.root / MANIFEST).read_text())

    def add_resume(self, entry: dict[str, Any]) -> None:
        """Record a ``--resume`` (when, the command, code version) in the manifest's ``resumes``."""
        manifest = self.read_manifest()
        manifest["resumes"] = [*manifest.get("resumes", []), entry]
        self.write_manifest(manifest)

    def write_epochs(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace the trial's epoch rows; a later row for the same epoch wins."""
        by_epoch = {int(r["epoch"]): r for r in rows}
        ordered = [dict(by_epoch[e], trial_id=trial_id) for e in sorted(by_epoch)]
        table = pa.Table.from_pylist(ordered, schema=EPOCHS_SCHEMA)
        write_parquet(self.epochs_dir / f"{trial_id}.parquet", table)

    def write_steps(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace the trial's step trace; the rows of an epoch reported again replace it."""
        self.steps_dir.mkdir(parents=True, exist_ok=True)
        ordered = sorted(rows, key=lambda r: (int(r["epoch"]), r["source"] != "plan", int(r["step"])))
        table = pa.Table.from_pylist([dict(r, trial_id=trial_id) for r in ordered], schema=STEPS_SCHEMA)
        write_parquet(self.steps_dir / f"{trial_id}.parquet", table)

    def read_steps(self, trial_id: str) -> list[dict[str, Any]]:
        path = self.steps_dir / f"{trial_id}.parquet"
        return read_parquet(path).to_pylist() if path.exists() else []

    def write_trial(self, record: dict[str, Any]) -> None:
        """Replace the trial's row. ``record`` holds trial columns and searched keys."""
        row = {name: record.get(name) for name in self._schema.names}
        for key, kind in self.searched.items():
            if kind == pa.string() and row[key] is not None:
                row[key] = str(row[key])
        table = pa.Table.from_pylist([row], schema=self._schema)
        write_parquet(self.trials_dir / f"{record['trial_id']}.parquet", table)

    def read_epochs(self, trial_id: str) -> list[dict[str, Any]]:
        path = self.epochs_dir / f"{trial_id}.parquet"
        return read_parquet(path).to_pylist() if path.exists() else []


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a sweep's result store (it has the trials folder)."""
    return (Path(path) / TRIALS).is_dir()


def read_trials(root: str | Path) -> pa.Table:
    """All trial rows of a sweep (also while it runs)."""
    return _read_dir(Path(root) / TRIALS)


def read_epochs(root: str | Path) -> pa.Table:
    """Every trial's epoch rows (empty when there are none yet)."""
    return _read_dir(Path(root) / EPOCHS)


def read_steps(root: str | Path) -> pa.Table:
    """Every trial's step trace (empty for a store written before it existed)."""
    return _read_dir(Path(root) / STEPS)


def _read_dir(path: Path) -> pa.Table:
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pa.table({})
    return pa.concat_tables([read_parquet(f) for f in files], promote_options="default")
