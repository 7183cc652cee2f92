"""The typed records a sweep analysis works on and returns; no computation here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from astray.schema import (
    BASELINE_KINDS,
    FAILED_STATUSES,
    KIND_DENSE,
    KIND_RANDOM,
    KIND_SEARCHED,
    SCOPE_DEVICE_SHARED,
    Objective,
)

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
    # docs/design.md §9. A store written before these columns existed reads as: kind
    # "dense" for its baseline, budget 1, config_id = trial_id, replicate 0.
    baseline_kind: str = KIND_SEARCHED  # "" searched | dense | random (astray.schema KIND_*)
    budget: float = 1.0  # share of training.epochs trained
    config_id: str = ""  # shared by a configuration's seed replicates; "" means the trial id
    replicate: int = 0
    seed: int | None = None  # training.seed of this replicate
    search_phase: str | None = None  # searched: startup (drawn at random) or guided; None before it was recorded
    stopped_early: bool = False  # sweep.early_stop stopped its configuration at a rung: on no front

    @property
    def key(self) -> tuple[str, str]:
        return (self.sweep, self.trial_id)

    @property
    def configuration(self) -> str:
        """The configuration the trial is a replicate of."""
        return self.config_id or self.trial_id

    @property
    def energy_axis(self) -> str:
        """Which energy axis the trial may share: its source, and whether the metered
        device also served other jobs (a shared reading is never set against an exclusive one)."""
        shared = " (device-shared)" if self.energy_scope == SCOPE_DEVICE_SHARED else ""
        return f"{self.energy_source or 'unknown'}{shared}"

    def values(self, objectives: Sequence[Objective]) -> tuple[float, ...]:
        return tuple(self.metrics.get(o.metric, math.nan) for o in objectives)


@dataclass(frozen=True)
class Estimate:
    """One metric over a configuration's good replicates (docs/design.md §9)."""

    mean: float
    std: float  # sample standard deviation (divisor n − 1); NaN below two values
    n: int  # finite values it is over
    ci95: float  # half-width of the 95 % interval, t(0.975, n − 1) · std / √n; NaN below two values

    @property
    def se(self) -> float:
        """Standard error of the mean; NaN below two values."""
        return self.std / math.sqrt(self.n) if self.n >= 2 else math.nan


@dataclass(frozen=True)
class Configuration:
    """A configuration's seed replicates on one energy axis: the unit fronts are made of.

    It stands where a trial stood (``sweep``, ``trial_id``, ``metrics``, ``values``), so
    with one seed per configuration everything reads as it did per trial: ``trial_id``
    is its first good replicate's, ``metrics`` the replicate means.
    """

    sweep: str
    config_id: str
    energy_axis: str  # TrialRecord.energy_axis of its replicates
    kind: str  # baseline_kind: "" searched | dense | random
    budget: float
    replicates: tuple[TrialRecord, ...]  # every replicate in the store on this axis, any status
    good: tuple[TrialRecord, ...]  # those that count (astray.analysis.compute.exclusion_reason)
    stats: Mapping[str, Estimate]  # per metric of astray.analysis.read.METRIC_COLUMNS, over ``good``

    @property
    def representative(self) -> TrialRecord:
        """The replicate that names it and lends its hyperparameters: the first good one."""
        return self.good[0] if self.good else self.replicates[0]

    @property
    def trial_id(self) -> str:
        return self.representative.trial_id

    @property
    def trial_ids(self) -> tuple[str, ...]:
        return tuple(t.trial_id for t in self.replicates)

    @property
    def key(self) -> tuple[str, str]:
        """Unique in an analysis: a trial belongs to one configuration."""
        return (self.sweep, self.trial_id)

    @property
    def n_good(self) -> int:
        return len(self.good)

    @property
    def n_total(self) -> int:
        return len(self.replicates)

    @property
    def is_baseline(self) -> bool:
        return self.kind in BASELINE_KINDS

    @property
    def is_dense(self) -> bool:
        return self.kind == KIND_DENSE

    @property
    def is_random(self) -> bool:
        return self.kind == KIND_RANDOM

    @property
    def is_dense_full(self) -> bool:
        """The dense baseline at the sweep's whole budget: what savings are measured against."""
        return self.kind == KIND_DENSE and math.isclose(self.budget, 1.0)

    @property
    def metrics(self) -> Mapping[str, float]:
        return {m: e.mean for m, e in self.stats.items()}

    @property
    def energy_source(self) -> str | None:
        return self.representative.energy_source

    @property
    def energy_scope(self) -> str | None:
        return self.representative.energy_scope

    @property
    def params(self) -> Mapping[str, Any]:
        return self.representative.params

    @property
    def strategy(self) -> str | None:
        return self.representative.strategy

    @property
    def target_activation(self) -> float | None:
        return self.representative.target_activation

    def values(self, objectives: Sequence[Objective]) -> tuple[float, ...]:
        return tuple(self.stats[o.metric].mean if o.metric in self.stats else math.nan for o in objectives)


@dataclass(frozen=True)
class Run:
    """One good replicate's numbers, what paired statistics pair (docs/design.md §9)."""

    seed: int | None  # training.seed; None in a store written before replicates
    replicate: int
    energy: float
    accuracy: float


@dataclass(frozen=True)
class FrontierPoint:
    """One dense budget of the frontier: its configuration's energy and accuracy, and the
    replicates they are the means of."""

    energy: Estimate
    accuracy: Estimate
    config_id: str = ""
    budget: float = 1.0
    runs: tuple[Run, ...] = ()


@dataclass(frozen=True)
class DenseFrontier:
    """What training less reaches on one energy axis of one sweep (docs/design.md §9)."""

    sweep: str
    energy_axis: str
    points: tuple[FrontierPoint, ...]  # every dense configuration with a good replicate, by energy
    envelope: tuple[FrontierPoint, ...]  # the upper envelope, by energy: the line compared against
    note: str  # "" when usable (two or more dense budgets), else why there is no frontier

    @property
    def usable(self) -> bool:
        return not self.note


@dataclass(frozen=True)
class Advantage:
    """A configuration against the dense frontier of its sweep and energy axis (docs/design.md §9)."""

    energy_saving: float  # 1 − E / E_frontier(accuracy): energy saved at equal accuracy, a fraction
    energy_saving_lo: float  # the 95 % interval's ends; NaN where one falls off the frontier
    energy_saving_hi: float
    acc_gain_points: float  # (accuracy − accuracy_frontier(E)) × 100: points gained at equal energy
    acc_gain_ci95: float  # half-width in points; NaN below two pairs
    n: int  # seeds the numbers are over (pairs of the configuration with both dense budgets)
    note: str = ""  # why a number is NaN, or how the seeds were paired; "" when all is plain
    paired: str = "seed"  # how replicates were paired: "seed", "order" (unpaired seeds), "" (none)


@dataclass(frozen=True)
class EpochSeries:
    """A trial's controller trace, one entry per epoch."""

    epoch: tuple[int, ...]
    activation_rate: tuple[float, ...]
    threshold: tuple[float, ...]


@dataclass(frozen=True)
class StepSeries:
    """A trial's controller trace from the store's steps/ dataset: its training steps
    (source "step"; stale's plan windows are where its controller moves, so for stale the
    plan rows are taken instead)."""

    progress: tuple[float, ...]  # fractional epochs
    activation: tuple[float, ...]
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
    steps: Mapping[str, StepSeries]  # by trial_id; empty for stores written before steps/


@dataclass(frozen=True)
class Exclusion:
    """A trial left out of fronts and hypervolumes, and why."""

    trial: TrialRecord
    reason: str  # one of astray.analysis.compute.EXCLUSION_REASONS, or "status '<x>'" for an unknown status


@dataclass(frozen=True)
class Savings:
    """One configuration (or trial) against its sweep's dense full-budget baseline."""

    sweep: str
    trial_id: str  # the configuration's first good replicate
    energy: float  # 1 − energy_j / baseline energy_j; NaN when the energy axes (source, sharing) differ
    flops: float  # 1 − flops / baseline flops
    time: float  # 1 − time_s / baseline time_s
    accuracy_points: float  # (accuracy − baseline accuracy) × 100, on the report's accuracy
    energy_comparable: bool
    config_id: str = ""


@dataclass(frozen=True)
class Front:
    """The non-dominated set of some points, and the volume it dominates."""

    label: str  # the sweep's name, or "combined"
    points: tuple[Configuration, ...]  # the configurations (with a good replicate) it was computed from
    front: tuple[Configuration, ...]  # best first on the first objective, then the next; on means
    hypervolume: float
    curve: tuple[tuple[int, float], ...]  # (trials finished, hypervolume so far); () for combined
    # Front configuration key → the configurations it dominates on means that a paired
    # t-test at 5 % cannot tell from it on any objective it is better on (docs/design.md §9).
    not_separable: Mapping[tuple[str, str], tuple[Configuration, ...]] = field(default_factory=dict)
    # Front configuration key → those it dominates on means with fewer than two seeds to
    # compare (either side has one): no test was made.
    not_compared: Mapping[tuple[str, str], tuple[Configuration, ...]] = field(default_factory=dict)

    @property
    def good_trials(self) -> int:
        return sum(c.n_good for c in self.points)


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
    """A sweep's data plus its bookkeeping: what was excluded and why, its configurations,
    the baseline, the savings, the dense frontier and each configuration's advantage over it."""

    good: tuple[TrialRecord, ...]
    excluded: tuple[Exclusion, ...]
    excluded_counts: Mapping[str, int]  # every exclusion reason, then any odd status
    baseline: Configuration | None  # the dense full-budget configuration the savings use
    baseline_note: str  # "" when the baseline is usable, else why there are no savings
    savings: tuple[Savings, ...]
    configurations: tuple[Configuration, ...] = ()  # every one in the store, in store order
    frontiers: tuple[DenseFrontier, ...] = ()  # one per energy axis its configurations use
    advantages: Mapping[tuple[str, str], Advantage] = field(default_factory=dict)  # by Configuration.key
    # Trials trained after the search on fresh seeds (search_phase "confirmation"): kept
    # out of everything above, read only by the headline's confirmation.
    confirmation_trials: tuple[TrialRecord, ...] = ()

    @property
    def repeats(self) -> int:
        """Most replicates any configuration has in the store (1 for a store without repeats)."""
        return max((c.n_total for c in self.configurations), default=0)

    def frontier(self, energy_axis: str) -> DenseFrontier | None:
        return next((f for f in self.frontiers if f.energy_axis == energy_axis), None)

    @property
    def failed(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.status in FAILED_STATUSES)


@dataclass(frozen=True)
class Headline:
    """A sweep's answer to "is AST better than simply training less?" (docs/design.md §9)."""

    sweep: str
    best: Configuration | None  # the searched front configuration saving most at equal accuracy
    advantage: Advantage | None  # its numbers
    reason: str  # when ``best`` is None: why nothing could be compared
    dominates_frontier: str = ""  # when a searched configuration beats every dense budget outright: which, in words
    on_front: bool = True  # False: no searched configuration is on the front; ``best`` is the closest finished one
    dominated_by: str = ""  # off the front: the baseline configuration(s) that dominate ``best``, in words
    picked_from: int = 0  # searched configurations ``best`` was the best of (the winner's curse applies)
    phases: Mapping[str, int] = field(default_factory=dict)  # searched configurations by search_phase, when recorded
    confirmation: Advantage | None = None  # ``best`` on the fresh seeds of search.confirm, when it ran
    confirmation_note: str = ""  # why a confirmation in the store is not shown (another configuration, none usable)

    @property
    def verdict_advantage(self) -> Advantage | None:
        """The numbers the verdict rests on: the confirmation's when there is one."""
        return self.confirmation if self.confirmation is not None else self.advantage

    @property
    def beats(self) -> bool:
        """The verdict: on the front, and the 95 % interval of the saving lies above 0 (or
        the configuration is more accurate than every dense budget at less energy). A
        positive saving whose interval reaches 0, or that has one seed, is no verdict."""
        if not self.on_front:
            return False
        adv = self.verdict_advantage
        if self.confirmation is not None:
            return adv.n >= 2 and adv.energy_saving_lo > 0
        return bool(self.dominates_frontier) or (adv is not None and adv.n >= 2 and adv.energy_saving_lo > 0)


@dataclass(frozen=True)
class Analysis:
    """Everything a report shows: per-sweep bookkeeping and the fronts of each group."""

    objectives: tuple[Objective, ...]
    sweeps: tuple[SweepSummary, ...]
    groups: tuple[Group, ...]
    split_by_energy_source: bool
    notes: tuple[str, ...] = field(default=())
    headlines: tuple[Headline, ...] = ()  # one per sweep
    accuracy: str = "val_acc"  # the accuracy fronts, the frontier and the headline use (test_acc when stored)
    accuracy_note: str = ""  # that accuracy in words, and why when it is not test_acc

    def front_configs(self) -> list[Configuration]:
        """Every configuration on some front shown (per-sweep fronts of every group), once each."""
        seen: dict[tuple[str, str], Configuration] = {}
        for g in self.groups:
            for f in g.fronts:
                for c in f.front:
                    seen.setdefault(c.key, c)
        return list(seen.values())

    def front_trials(self) -> list[TrialRecord]:
        """The good replicates of every front configuration, once each."""
        return [t for c in self.front_configs() for t in c.good]

