"""Multi-objective early stopping of searched configurations at rungs (docs/design.md §9).

``sweep.early_stop`` puts rungs at ``min_epochs × η^k`` epochs. When a searched
configuration's replicates have reached a rung, the configuration is ranked among every
searched configuration that reached the same rung, on the mean over its replicates of
validation accuracy at that epoch (never the test split) and training energy so far:
by non-dominated rank (the Pareto front is rank 0, the front of the rest rank 1, ...).
It continues when fewer than ``ceil(n / η)`` of those ``n`` configurations lie in
strictly better ranks, i.e. it is in the top 1/η with ties at the cut kept; otherwise all
its replicates stop there. Baselines and confirmation trials are never judged.

Every replicate's values at a rung and every decision are written to
``<store>/early_stop.json`` the moment they exist, before Ray acts on them, so a resumed
driver keeps each decision already taken and trains no replicate of a stopped
configuration again. No Ray here: ``ray_adapter.RungScheduler`` asks this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astray.io import write_text
from astray.pareto import non_dominated

FILE = "early_stop.json"
CONTINUE, STOP = "continue", "stop"
# What a rung ranks on: validation accuracy at the rung's epoch (up), training energy so far (down).
RUNG_METRICS = (("val_acc", True), ("energy_j", False))


def pareto_ranks(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Each point's non-dominated rank: 0 for the front, 1 for the front of the rest, ..."""
    ranks = [-1] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        front = {left[i] for i in non_dominated([points[j] for j in left], maximize)}
        for i in front:
            ranks[i] = rank
        left = [i for i in left if i not in front]
        rank += 1
    return ranks


def rung_values(result: dict[str, Any], rungs: Sequence[int]) -> dict[int, tuple[float, float]]:
    """The rung epochs an epoch report carries (``astray.sweep.trainable.running_metrics``),
    each with (val_acc at that epoch, training energy up to and including it). A report
    holds its epoch's row and the trial's energy so far; the first report of a resumed
    attempt also holds every earlier row, whose energies add up for the earlier rungs."""
    row = json.loads(result["epoch_row"])
    out: dict[int, tuple[float, float]] = {}
    if "epoch_rows" in result:
        by_epoch = {int(r["epoch"]): r for r in json.loads(result["epoch_rows"])} | {int(row["epoch"]): row}
        energy = 0.0
        for epoch in sorted(by_epoch):
            energy += float(by_epoch[epoch]["energy_j"])
            if epoch in rungs:
                out[epoch] = (float(by_epoch[epoch]["val_acc"]), energy)
    elif int(row["epoch"]) in rungs:
        out[int(row["epoch"])] = (float(row["val_acc"]), float(result["energy_j"]))
    return out


def keeps(mine: str, means: dict[str, Sequence[float]], reduction_factor: float) -> bool:
    """Whether configuration ``mine`` is in the top ``1/η`` of ``means`` (config id → its
    rung values, :data:`RUNG_METRICS` order) by non-dominated rank, ties at the cut kept."""
    ids = list(means)
    ranks = dict(zip(ids, pareto_ranks([means[i] for i in ids], [up for _, up in RUNG_METRICS])))
    kept = math.ceil(len(ids) / reduction_factor)
    return sum(r < ranks[mine] for r in ranks.values()) < kept


class EarlyStopping:
    """The rungs, what each replicate showed at them, and the decisions taken, kept in
    ``<store>/early_stop.json``."""

    def __init__(self, root: str | Path, rungs: Sequence[int], reduction_factor: float) -> None:
        self.path = Path(root) / FILE
        self.rungs = list(rungs)
        self.reduction_factor = reduction_factor
        # config id -> rung -> replicate -> {val_acc, energy_j}
        self.reports: dict[str, dict[int, dict[int, dict[str, float]]]] = {}
        # config id -> rung -> continue | stop
        self.decisions: dict[str, dict[int, str]] = {}
        if self.path.exists():
            raw = json.loads(self.path.read_text())
            self.reports = {c: {int(k): {int(r): v for r, v in reps.items()} for k, reps in by.items()}
                            for c, by in raw.get("reports", {}).items()}
            self.decisions = {c: {int(k): d for k, d in by.items()} for c, by in raw.get("decisions", {}).items()}

    def save(self) -> None:
        write_text(self.path, json.dumps({"rungs": self.rungs, "reduction_factor": self.reduction_factor,
                                          "reports": self.reports, "decisions": self.decisions},
                                         indent=2, sort_keys=True))

    # ------------------------------------------------------------------ queries

    def stopped_at(self, config_id: str) -> int | None:
        """The rung at which the configuration was stopped (None: it was not)."""
        return next((k for k, d in sorted(self.decisions.get(config_id, {}).items()) if d == STOP), None)

    def stopped(self, config_id: str) -> bool:
        return self.stopped_at(config_id) is not None

    def decided(self, config_id: str, rung: int) -> str | None:
        return self.decisions.get(config_id, {}).get(rung)

    def reported(self, config_id: str, rung: int) -> set[int]:
        """The replicates whose values at ``rung`` are recorded."""
        return set(self.reports.get(config_id, {}).get(rung, {}))

    def mean(self, config_id: str, rung: int) -> list[float]:
        reps = list(self.reports[config_id][rung].values())
        return [sum(r[m] for r in reps) / len(reps) for m, _ in RUNG_METRICS]

    # ------------------------------------------------------------------ events

    def record(self, config_id: str, replicate: int, rung: int, val_acc: float, energy_j: float) -> None:
        """A replicate's values at a rung (a replicate reporting the rung again keeps the first)."""
        by = self.reports.setdefault(config_id, {}).setdefault(rung, {})
        if replicate not in by:
            by[replicate] = {"val_acc": float(val_acc), "energy_j": float(energy_j)}
            self.save()

    def decide(self, config_id: str, rung: int) -> str:
        """Judge the configuration at ``rung`` on the replicates recorded there, among every
        configuration recorded there (their means); the decision is saved and final."""
        done = self.decided(config_id, rung)
        if done is not None:
            return done
        means = {c: self.mean(c, rung) for c, by in self.reports.items() if by.get(rung)}
        finite = {c: v for c, v in means.items() if all(math.isfinite(x) for x in v)}
        if config_id not in finite:  # no finite value at the rung (NaN accuracy): no place on any front
            decision = STOP
        else:
            decision = CONTINUE if keeps(config_id, finite, self.reduction_factor) else STOP
        self.decisions.setdefault(config_id, {})[rung] = decision
        self.save()
        return decision

    def summary(self) -> dict[str, Any]:
        """For ``sweep.json`` and the report: the rungs and who stopped where."""
        stopped = {c: self.stopped_at(c) for c in self.decisions if self.stopped(c)}
        return {"rungs": self.rungs, "reduction_factor": self.reduction_factor,
                "judged": len(self.decisions), "stopped": dict(sorted(stopped.items()))}
