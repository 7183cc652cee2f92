"""The sweep driver's bookkeeping: trial events in, store rows, the plan's results and a
progress line out.

No Ray here: ``ray_adapter.StoreCallback`` forwards Tune's hooks to it. A trial is known
by the stable id the plan gave it (``config["trial_id"]``), not by Ray's trial id, so an
attempt a resumed driver starts writes the rows of the attempt it continues.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astray.engine.records import read_metrics
from astray.engine.state import METRICS
from astray.pareto import non_dominated
from astray.config.dotted import get_dotted
from astray.config.sweep import SweepSpec
from astray.schema import (
    BASELINE_FLAG,
    COMPLETED,
    DIVERGED,
    ERROR,
    KIND_SEARCHED,
    PHASE_CONFIRM,
    RETRYING,
    RUNNING,
    TERMINAL_STATUSES,
)
from astray.sweep.plan import TrialPlan
from astray.sweep.store import ResultStore, read_trials, trial_summary


def print_line(line: str) -> None:
    # A module function, not the print builtin: the recorder is pickled with the
    # experiment, and Ray replaces builtins.print in some processes.
    print(line, flush=True)


class SweepRecorder:
    """Keeps each trial's row up to date in the store, tells the plan when a trial ends,
    and prints a one-line summary.

    Built with the store's rows (``load``) before the plan, which reads them; ``plan`` is
    set once the plan exists.
    """

    def __init__(self, store: ResultStore, spec: SweepSpec, echo: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.spec = spec
        self.plan: TrialPlan | None = None
        self.early: Any = None  # astray.sweep.early_stop.EarlyStopping, when sweep.early_stop is on
        self.echo = echo or print_line
        self.records: dict[str, dict[str, Any]] = {}
        self.epochs: dict[str, list[dict[str, Any]]] = {}
        self.steps: dict[str, list[dict[str, Any]]] = {}  # each trial's step trace (steps/)

    def load(self) -> SweepRecorder:
        """Pick up the rows earlier drivers wrote (``--resume``)."""
        for rec in read_trials(self.store.root).to_pylist():
            self.records[rec["trial_id"]] = rec
        return self

    def _record(self, config: dict[str, Any]) -> dict[str, Any]:
        trial_id = config["trial_id"]
        rec = self.records.get(trial_id)
        if rec is None:
            run = config["run"]  # what the trial trains, resolved once by the plan
            kind = config.get("baseline_kind", KIND_SEARCHED)
            rec = {"trial_id": trial_id, "status": RUNNING, BASELINE_FLAG: kind != KIND_SEARCHED,
                   "baseline_kind": kind, "budget": run["training"]["epochs"] / self.spec.run.training.epochs,
                   "config_id": config["config_id"], "search_phase": config.get("search_phase"),
                   "replicate": config["replicate"],
                   "seed": run["training"]["seed"], "epochs": 0, "error": None, "node_id": None,
                   "config_json": json.dumps(run, sort_keys=True)}
            for p in self.spec.search.params:  # the values the trial really trained with
                rec[p.key] = get_dotted(run, p.key)
            self.records[trial_id] = rec
        if trial_id not in self.epochs:
            # An attempt that continues an earlier one starts from what the store holds.
            self.epochs[trial_id] = self.store.read_epochs(trial_id)
            self.steps[trial_id] = self.store.read_steps(trial_id)
        return rec

    def on_start(self, config: dict[str, Any]) -> None:
        rec = self._record(config)
        rec["status"], rec["error"] = RUNNING, None  # also an attempt that retries an error
        if rec.get("started_at") is None:
            rec["started_at"] = time.time()
        self.store.write_trial(rec)

    def on_result(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        rec = self._record(config)
        trial_id = rec["trial_id"]
        # A resumed attempt's first report also carries the epochs it restored (epoch_rows):
        # the store may lack the last of them if the previous driver died before writing it.
        fresh = json.loads(result["epoch_rows"]) if "epoch_rows" in result else []
        if "epoch_row" in result:
            fresh.append(json.loads(result["epoch_row"]))
        if fresh:
            by_epoch = {r["epoch"]: r for r in self.epochs[trial_id]} | {r["epoch"]: r for r in fresh}
            rows = [by_epoch[e] for e in sorted(by_epoch)]
            self.epochs[trial_id] = rows
            self.store.write_epochs(trial_id, rows)
            rec.update(trial_summary(trial_id, rows))
            if "steps_rows" in result:
                trace = json.loads(result["steps_rows"])
                epochs = {r["epoch"] for r in trace}
                self.steps[trial_id] = [r for r in self.steps[trial_id] if r["epoch"] not in epochs] + trace
                self.store.write_steps(trial_id, self.steps[trial_id])
        if result.get("status") == DIVERGED:
            rec["status"], rec["error"] = DIVERGED, result.get("error")
        if result.get("node_ids"):
            rec["node_id"] = result["node_ids"]
        if "report_s" in result:
            rec["report_s"] = result["report_s"]
        self.store.write_trial(rec)

    def on_complete(self, config: dict[str, Any]) -> None:
        rec = self._record(config)
        if rec["status"] != DIVERGED:
            rec["status"], rec["error"] = COMPLETED, None
        rec["stopped_early"] = self._stopped(rec)
        self._ended(rec)

    def _stopped(self, rec: dict[str, Any]) -> bool:
        return (self.early is not None and rec.get("baseline_kind", KIND_SEARCHED) == KIND_SEARCHED
                and rec.get("search_phase") != PHASE_CONFIRM and self.early.stopped(rec["config_id"]))

    def finish_stopped(self, trial_ids: list[str], checkpoint_of: Callable[[str], str | None] = lambda t: None,
                       ) -> None:
        """Record as stopped the attempts a killed driver left unfinished in configurations
        early stopping had already stopped (``TrialPlan.stopped_unfinished``): their rows
        become completed, with their epochs. The driver decides on a report before it writes
        that epoch's row, so a driver killed in between left the row only in the attempt's
        newest checkpoint (``checkpoint_of``): the epochs come from there when the store has fewer."""
        for tid in trial_ids:
            rec = self.records.get(tid)
            if rec is None:
                continue
            rows = self.store.read_epochs(tid)
            folder = checkpoint_of(tid)
            if folder and (Path(folder) / METRICS).exists():
                kept = read_metrics(Path(folder) / METRICS)
                if len(kept) > len(rows):
                    rows = kept
                    self.store.write_epochs(tid, rows)
            if rows:
                rec.update(trial_summary(tid, rows))
            if rec["status"] != DIVERGED:
                rec["status"], rec["error"] = COMPLETED, None
            rec["stopped_early"] = True
            self._ended(rec)

    def on_error(self, config: dict[str, Any], error: str) -> None:
        rec = self._record(config)
        rec["status"], rec["error"] = ERROR, error
        self._ended(rec)

    def _ended(self, rec: dict[str, Any]) -> None:
        # The row first: a driver killed between the two leaves a row the next driver's
        # plan reads (and tells Optuna about), never a tell without its row.
        rec["ended_at"] = time.time()
        self.store.write_trial(rec)
        if self.plan is not None:
            self.plan.finished(rec)
        self.echo(self.summary_line())

    def on_retry(self, config: dict[str, Any]) -> None:
        rec = self._record(config)
        rec["status"] = RETRYING
        self.store.write_trial(rec)

    def summary_line(self) -> str:
        """done/total, best accuracy, lowest energy, size of the current front."""
        finished = [r for r in self.records.values() if r["status"] in TERMINAL_STATUSES]
        good = [r for r in finished if r["status"] == COMPLETED and not _nan(r.get("val_acc"))
                and not r.get("stopped_early")]
        stopped = sum(bool(r.get("stopped_early")) for r in finished)
        failed = len(finished) - len(good) - stopped
        total = self.plan.planned() if self.plan is not None else len(self.records)
        parts = [f"[astray] trials {len(finished)}/{total} done" + (f" ({failed} failed)" if failed else "")
                 + (f" ({stopped} stopped early)" if stopped else "")]
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

