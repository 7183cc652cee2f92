"""The typed records a sweep analysis works on and returns; no computation here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from astray.schema import FAILED_STATUSES, SCOPE_DEVICE_SHARED, Objective

@dataclass(frozen=True)
class TrialRecord:
    """One row of a sweep's trials table, typed."""

    sweep: str
    trial_id: str
    status: str
    is_baseline: bool
    metrics: Mapping[str, float]  # astray.analysis.read.METRIC_COLUMNS; NaN where the store has nothing yet
    energy_source: str | None
    params: Mapping[str, Any]  # searched key → value the trial trained with
    error: str | None
    ended_at: float | None  # unix seconds
    order: int  # position in the store (file order), the fallback for ended_at
    target_activation: float | None  # ast.target_activation from config_json
    strategy: str | None  # ast.strategy from config_json (the baseline: dense)
    energy_scope: str | None = None  # process | device | device-shared (astray.schema)

    @property
    def key(self) -> tuple[str, str]:
        return (self.sweep, self.trial_id)

    @property
    def energy_axis(self) -> str:
        """Which energy axis the trial may share: its source, and whether the metered
        device also served other jobs (a shared reading is never set against an exclusive one)."""
        shared = " (device-shared)" if self.energy_scope == SCOPE_DEVICE_SHARED else ""
        return f"{self.energy_source or 'unknown'}{shared}"

    def values(self, objectives: Sequence[Objective]) -> tuple[float, ...]:
        return tuple(self.metrics.get(o.metric, math.nan) for o in objectives)


@dataclass(frozen=True)
class EpochSeries:
    """A trial's controller trace, one entry per epoch."""

    epoch: tuple[int, ...]
    activation_rate: tuple[float, ...]
    threshold: tuple[float, ...]


@dataclass(frozen=True)
class SweepData:
    """Everything read from one sweep's store."""

    name: str
    path: str
    manifest: Mapping[str, Any]
    searched: tuple[str, ...]
    trials: tuple[TrialRecord, ...]
    epochs: Mapping[str, EpochSeries]  # by trial_id


@dataclass(frozen=True)
class Exclusion:
    """A trial left out of fronts and hypervolumes, and why."""

    trial: TrialRecord
    reason: str  # one of astray.analysis.compute.EXCLUSION_REASONS, or "status '<x>'" for an unknown status


@dataclass(frozen=True)
class Savings:
    """One completed trial against its sweep's dense baseline."""

    sweep: str
    trial_id: str
    energy: float  # 1 − energy_j / baseline energy_j; NaN when the energy axes (source, sharing) differ
    flops: float  # 1 − flops / baseline flops
    time: float  # 1 − time_s / baseline time_s
    val_acc_points: float  # (val_acc − baseline val_acc) × 100
    energy_comparable: bool


@dataclass(frozen=True)
class Front:
    """The non-dominated set of some points, and the volume it dominates."""

    label: str  # the sweep's name, or "combined"
    points: tuple[TrialRecord, ...]  # the good trials it was computed from
    front: tuple[TrialRecord, ...]  # best first on the first objective, then the next
    hypervolume: float
    curve: tuple[tuple[int, float], ...]  # (trials finished, hypervolume so far); () for combined


@dataclass(frozen=True)
class Group:
    """Trials whose objectives may share axes (one energy source, and exclusive or shared
    devices apart, when energy is an objective)."""

    energy_source: str | None  # the one source of its points; None if mixed (energy no objective) or none
    reference: tuple[float, ...]
    reference_rule: str
    fronts: tuple[Front, ...]  # one per sweep, in the order given
    combined: Front | None  # over all sweeps; None for a single sweep
    energy_shared: bool = False  # its energy was read on devices other jobs used too

    @property
    def energy_label(self) -> str:
        """``nvml``, or ``nvml (device-shared)``: how the group is named in the report."""
        return f"{self.energy_source}{' (device-shared)' if self.energy_shared else ''}"


@dataclass(frozen=True)
class SweepSummary(SweepData):
    """A sweep's data plus its bookkeeping: what was excluded and why, the baseline, the savings."""

    good: tuple[TrialRecord, ...]
    excluded: tuple[Exclusion, ...]
    excluded_counts: Mapping[str, int]  # every exclusion reason, then any odd status
    baseline: TrialRecord | None  # the completed dense baseline the savings use
    baseline_note: str  # "" when the baseline is usable, else why there are no savings
    savings: tuple[Savings, ...]

    @property
    def failed(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.status in FAILED_STATUSES)


@dataclass(frozen=True)
class Analysis:
    """Everything a report shows: per-sweep bookkeeping and the fronts of each group."""

    objectives: tuple[Objective, ...]
    sweeps: tuple[SweepSummary, ...]
    groups: tuple[Group, ...]
    split_by_energy_source: bool
    notes: tuple[str, ...] = field(default=())

    def front_trials(self) -> list[TrialRecord]:
        """Every trial on some front shown (per-sweep fronts of every group), once each."""
        seen: dict[tuple[str, str], TrialRecord] = {}
        for g in self.groups:
            for f in g.fronts:
                for t in f.front:
                    seen.setdefault(t.key, t)
        return list(seen.values())

