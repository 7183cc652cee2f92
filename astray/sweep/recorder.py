"""The sweep driver's bookkeeping: trial events in, store rows and a progress line out.

No Ray here: ``ray_adapter.StoreCallback`` forwards Tune's hooks to it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from astray.analysis.pareto import non_dominated
from astray.config.dotted import get_dotted
from astray.config.load import build_config
from astray.config.sweep import SweepSpec
from astray.schema import (
    BASELINE_FLAG,
    COMPLETED,
    DIVERGED,
    ERROR,
    KIND_SEARCHED,
    RETRYING,
    RUNNING,
    TERMINAL_STATUSES,
)
from astray.sweep.store import ResultStore, read_trials, trial_summary
from astray.sweep.trial_config import trial_run_config


def print_line(line: str) -> None:
    # A module function, not the print builtin: the recorder is pickled with the
    # experiment, and Ray replaces builtins.print in some processes.
    print(line, flush=True)


class SweepRecorder:
    """Keeps each trial's row up to date in the store and prints a one-line summary."""

    def __init__(self, store: ResultStore, spec: SweepSpec, total_trials: int,
                 echo: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.spec = spec
        self.total = total_trials
        self.echo = echo or print_line
        self.records: dict[str, dict[str, Any]] = {}
        self.epochs: dict[str, list[dict[str, Any]]] = {}
        self.steps: dict[str, list[dict[str, Any]]] = {}  # each trial's step trace (steps/)

    def load_existing(self) -> None:
        """Pick up the rows a previous driver wrote (``--resume``)."""
        for rec in read_trials(self.store.root).to_pylist():
            if rec["trial_id"] not in self.records:
                self.records[rec["trial_id"]] = rec
                self.epochs[rec["trial_id"]] = self.store.read_epochs(rec["trial_id"])
                self.steps[rec["trial_id"]] = self.store.read_steps(rec["trial_id"])

    def _record(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any]:
        rec = self.records.get(trial_id)
        if rec is None:
            # The same resolution the trial applies, so the row names what really ran.
            resolved = build_config(trial_run_config(self.spec, config))
            kind = config.get("baseline_kind", KIND_SEARCHED)
            rec = {"trial_id": trial_id, "status": RUNNING, BASELINE_FLAG: kind != KIND_SEARCHED,
                   "baseline_kind": kind, "budget": resolved.training.epochs / self.spec.run.training.epochs,
                   "config_id": config.get("config_id", trial_id), "replicate": config.get("replicate", 0),
                   "seed": resolved.training.seed, "epochs": 0, "error": None, "node_id": None,
                   "config_json": json.dumps(resolved.to_dict(), sort_keys=True)}
            settings = resolved.to_dict()
            for p in self.spec.search.params:  # the values the trial really trained with
                rec[p.key] = get_dotted(settings, p.key)
            self.records[trial_id] = rec
            # A resumed sweep starts from what the store already holds for this trial.
            self.epochs[trial_id] = self.store.read_epochs(trial_id)
            self.steps[trial_id] = self.store.read_steps(trial_id)
        return rec

    def on_start(self, trial_id: str, config: dict[str, Any]) -> None:
        rec = self._record(trial_id, config)
        if rec.get("started_at") is None:
            rec["started_at"] = time.time()
        self.store.write_trial(rec)

    def on_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        rec = self._record(trial_id, config)
        if "epoch_row" in result:
            row = json.loads(result["epoch_row"])
            rows = [r for r in self.epochs[trial_id] if r["epoch"] != row["epoch"]] + [row]
            rows.sort(key=lambda r: r["epoch"])
            self.epochs[trial_id] = rows
            self.store.write_epochs(trial_id, rows)
            rec.update(trial_summary(trial_id, rows))
            if "steps_rows" in result:
                fresh = json.loads(result["steps_rows"])
                epochs = {r["epoch"] for r in fresh}
                self.steps[trial_id] = [r for r in self.steps[trial_id] if r["epoch"] not in epochs] + fresh
                self.store.write_steps(trial_id, self.steps[trial_id])
        if result.get("status") == DIVERGED:
            rec["status"], rec["error"] = DIVERGED, result.get("error")
        if result.get("node_ids"):
            rec["node_id"] = result["node_ids"]
        if "report_s" in result:
            rec["report_s"] = result["report_s"]
        self.store.write_trial(rec)

    def on_complete(self, trial_id: str, config: dict[str, Any]) -> None:
        rec = self._record(trial_id, config)
        if rec["status"] != DIVERGED:
            rec["status"], rec["error"] = COMPLETED, None
        rec["ended_at"] = time.time()
        self.store.write_trial(rec)
        self.echo(self.summary_line())

    def on_error(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        rec = self._record(trial_id, config)
        rec["status"], rec["error"] = ERROR, error
        rec["ended_at"] = time.time()
        self.store.write_trial(rec)
        self.echo(self.summary_line())

    def on_retry(self, trial_id: str, config: dict[str, Any]) -> None:
        rec = self._record(trial_id, config)
        rec["status"] = RETRYING
        self.store.write_trial(rec)

    def summary_line(self) -> str:
        """done/total, best accuracy, lowest energy, size of the current front."""
        finished = [r for r in self.records.values() if r["status"] in TERMINAL_STATUSES]
        good = [r for r in finished if r["status"] == COMPLETED and not _nan(r.get("val_acc"))]
        failed = len(finished) - len(good)
        parts = [f"[astray] trials {len(finished)}/{self.total} done" + (f" ({failed} failed)" if failed else "")]
        if good:
            best = max(good, key=lambda r: r["val_acc"])
            low = min(good, key=lambda r: r["energy_j"])
            objectives = self.spec.search.parsed_objectives
            points = [[float(r.get(o.metric, math.nan)) for o in objectives] for r in good]
            front = non_dominated(points, [o.maximize for o in objectives])
            parts += [f"best val_acc {best['val_acc']:.4f} ({best['trial_id']})",
                      f"lowest energy {low['energy_j']:.1f} J [{low.get('energy_source')}] ({low['trial_id']})",
                      f"front {len(front)}"]
        return " | ".join(parts)


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))

