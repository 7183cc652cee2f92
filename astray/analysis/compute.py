"""What a sweep found: Pareto fronts, hypervolumes and savings against the dense baseline.

Pure computation over typed trial records; ``read_sweep`` is the only function that
touches files, and ``astray.report`` renders the result. The rules, documented once:

- **Which trials count.** Trials still ``running``/``retrying`` are *unfinished*; ``diverged``
  and ``error`` trials *failed*; a ``completed`` trial with a NaN/inf objective is *nan*.
  All of them are left out of fronts and hypervolumes and counted by reason.
- **Ties.** A point dominates another when it is at least as good on every objective and
  strictly better on one. Equal points (duplicates) are all on the front; a point equal on
  one objective and worse on another is dominated.
- **Energy sources.** Energy estimated by a model (``model``) and measured (``nvml``,
  ``rapl``) are never put on one axis: when an energy objective is used and the trials
  (of one sweep or of the sweeps compared) carry several sources, the analysis is split
  into one group per source, each with its own fronts, reference point and hypervolume.
- **Reference point** (per group, shared by every sweep in it so their hypervolumes
  compare): a minimised objective takes 1.1 × the dense baseline's value (the largest
  over the baselines compared; without a usable baseline, the worst finished value); a
  maximised objective takes 0, the floor of every metric astray records (or, should a
  value be negative, that value minus 10 % of its size). Points not strictly better than
  the reference on every objective contribute nothing.
- **Hypervolume vs trials finished.** Trials are ordered by ``ended_at`` (trial order
  where it is missing); after the k-th finished trial (any terminal status) the curve
  holds the hypervolume of the good trials among the first k.
- **Savings** of a completed trial against its own sweep's completed baseline: energy,
  FLOPs and time as fractions ``1 − trial/baseline``, accuracy as ``val_acc`` difference
  in percentage points. Energy saving is NaN when the two have different energy sources.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astray.errors import AstrayError, ConfigError
from astray.pareto import dominates, hypervolume, non_dominated
from astray.sweep_config import DEFAULT_OBJECTIVES, OBJECTIVE_METRICS

UNFINISHED_STATUSES = ("running", "retrying")
TERMINAL_STATUSES = ("completed", "diverged", "error")
EXCLUSION_REASONS = ("unfinished", "diverged", "error", "nan")
ENERGY_METRICS = ("energy_j",)
# Trial metrics the analysis carries: the objective metrics and the dense FLOPs.
METRIC_COLUMNS = OBJECTIVE_METRICS + ("flops_dense",)
REFERENCE_MARGIN = 0.1  # minimised objectives: reference = (1 + margin) × anchor value


@dataclass(frozen=True)
class Objective:
    """One axis of the trade-off: a trial metric and whether more is better."""

    metric: str
    maximize: bool

    def __str__(self) -> str:
        return f"{self.metric}:{'max' if self.maximize else 'min'}"


def parse_objectives(text: str) -> tuple[Objective, ...]:
    """``"val_acc:max,energy_j:min"`` → objectives; a bad item is a one-line ConfigError."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    out: list[Objective] = []
    for item in items:
        metric, sep, mode = item.partition(":")
        if not sep:
            raise ConfigError(f"--objectives item {item!r} must be METRIC:max or METRIC:min")
        out.append(_objective(metric.strip(), mode.strip(), f"--objectives item {item!r}"))
    return _check_objectives(out, "--objectives")


def objectives_from_manifest(manifest: Mapping[str, Any]) -> tuple[Objective, ...]:
    """The objectives a sweep was searched with (``sweep.json``), else astray's defaults."""
    raw = manifest.get("config", {}).get("search", {}).get("objectives") or DEFAULT_OBJECTIVES
    return tuple(_objective(o.get("metric"), o.get("mode"), "sweep.json search.objectives") for o in raw)


def _objective(metric: str, mode: str, where: str) -> Objective:
    if metric not in OBJECTIVE_METRICS:
        raise ConfigError(f"{where}: unknown metric {metric!r}; choose one of {', '.join(OBJECTIVE_METRICS)}")
    if mode not in ("max", "min"):
        raise ConfigError(f"{where}: direction {mode!r} is not allowed; choose max or min")
    return Objective(metric, mode == "max")


def _check_objectives(objectives: list[Objective], where: str) -> tuple[Objective, ...]:
    if len(objectives) < 2:
        raise ConfigError(f"{where} needs at least two objectives for a trade-off, "
                          f"got {len(objectives)} (e.g. val_acc:max,energy_j:min)")
    metrics = [o.metric for o in objectives]
    for m in metrics:
        if metrics.count(m) > 1:
            raise ConfigError(f"{where} names {m!r} twice; each metric may appear once")
    return tuple(objectives)


@dataclass(frozen=True)
class TrialRecord:
    """One row of a sweep's trials table, typed."""

    sweep: str
    trial_id: str
    status: str
    is_baseline: bool
    metrics: Mapping[str, float]  # METRIC_COLUMNS; NaN where the store has nothing yet
    energy_source: str | None
    params: Mapping[str, Any]  # searched key → value the trial trained with
    error: str | None
    ended_at: float | None  # unix seconds
    order: int  # position in the store (file order), the fallback for ended_at
    target_activation: float | None  # ast.target_activation from config_json
    strategy: str | None  # ast.strategy from config_json (the baseline: dense)

    @property
    def key(self) -> tuple[str, str]:
        return (self.sweep, self.trial_id)

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


def sweep_from_rows(name: str, trial_rows: Iterable[Mapping[str, Any]],
                    epoch_rows: Iterable[Mapping[str, Any]] = (),
                    manifest: Mapping[str, Any] | None = None, path: str = "") -> SweepData:
    """Type the rows of a trials table (and epochs table) as the store returns them."""
    from astray.store import TRIAL_COLUMNS

    fixed = {n for n, _ in TRIAL_COLUMNS}
    rows = list(trial_rows)
    searched: list[str] = []
    for row in rows:
        searched += [k for k in row if k not in fixed and k not in searched]
    trials = tuple(_trial(name, i, row, searched) for i, row in enumerate(rows))
    by_trial: dict[str, list[Mapping[str, Any]]] = {}
    for r in epoch_rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    epochs = {}
    for tid, rs in by_trial.items():
        rs = sorted(rs, key=lambda r: r["epoch"])
        epochs[tid] = EpochSeries(tuple(int(r["epoch"]) for r in rs),
                                  tuple(_float(r.get("activation_rate")) for r in rs),
                                  tuple(_float(r.get("threshold")) for r in rs))
    return SweepData(name, path, dict(manifest or {}), tuple(searched), trials, epochs)


def _trial(sweep: str, order: int, row: Mapping[str, Any], searched: Sequence[str]) -> TrialRecord:
    try:
        config = json.loads(row.get("config_json") or "{}")
    except json.JSONDecodeError:
        config = {}
    ast = config.get("ast", {}) if isinstance(config, dict) else {}
    target = ast.get("target_activation")
    ended = row.get("ended_at")
    return TrialRecord(
        sweep=sweep, trial_id=str(row["trial_id"]), status=str(row.get("status")),
        is_baseline=bool(row.get("is_baseline")),
        metrics={m: _float(row.get(m)) for m in METRIC_COLUMNS},
        energy_source=row.get("energy_source"),
        params={k: row.get(k) for k in searched if k in row},
        error=row.get("error"),
        ended_at=None if ended is None or math.isnan(ended) else float(ended),
        order=order,
        target_activation=None if target is None else float(target),
        strategy=ast.get("strategy"),
    )


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def read_sweep(path: str | Path) -> SweepData:
    """Read a sweep's store — finished or still running — as typed records.

    Bad paths and unreadable files raise a one-line AstrayError.
    """
    import pyarrow as pa

    from astray.store import read_epochs, read_trials

    root = Path(path)
    if not root.exists():
        raise AstrayError(f"sweep directory {str(root)!r} does not exist")
    if not (root / "trials").is_dir():
        raise AstrayError(f"{str(root)!r} has no trials/ folder; pass a sweep's store directory "
                          "(<sweep.results_dir>/<sweep.name>/)")
    try:
        trials = read_trials(root).to_pylist()
        epochs = read_epochs(root).to_pylist() if (root / "epochs").is_dir() else []
    except (pa.ArrowException, OSError) as exc:
        raise AstrayError(f"cannot read the store at {str(root)!r}: {str(exc).splitlines()[0]}") from None
    if not trials:
        raise AstrayError(f"{str(root / 'trials')!r} holds no trial rows yet; nothing to report")
    manifest: dict[str, Any] = {}
    if (root / "sweep.json").exists():
        try:
            manifest = json.loads((root / "sweep.json").read_text())
        except (json.JSONDecodeError, OSError) as exc:
            raise AstrayError(f"cannot read {str(root / 'sweep.json')!r}: {exc}") from None
    return sweep_from_rows(root.resolve().name, trials, epochs, manifest, str(root))


@dataclass(frozen=True)
class Exclusion:
    """A trial left out of fronts and hypervolumes, and why."""

    trial: TrialRecord
    reason: str  # one of EXCLUSION_REASONS, or "status '<x>'" for a status astray never writes


@dataclass(frozen=True)
class Savings:
    """One completed trial against its sweep's dense baseline."""

    sweep: str
    trial_id: str
    energy: float  # 1 − energy_j / baseline energy_j; NaN when the energy sources differ
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
    """Trials whose objectives may share axes (one energy source, when energy is an objective)."""

    energy_source: str | None  # the one source of its points; None if mixed (energy no objective) or none
    reference: tuple[float, ...]
    reference_rule: str
    fronts: tuple[Front, ...]  # one per sweep, in the order given
    combined: Front | None  # over all sweeps; None for a single sweep


@dataclass(frozen=True)
class SweepSummary(SweepData):
    """A sweep's data plus its bookkeeping: what was excluded and why, the baseline, the savings."""

    good: tuple[TrialRecord, ...]
    excluded: tuple[Exclusion, ...]
    excluded_counts: Mapping[str, int]  # every EXCLUSION_REASONS key, then any odd status
    baseline: TrialRecord | None  # the completed dense baseline the savings use
    baseline_note: str  # "" when the baseline is usable, else why there are no savings
    savings: tuple[Savings, ...]

    @property
    def failed(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.status in ("diverged", "error"))


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


def exclusion_reason(trial: TrialRecord, objectives: Sequence[Objective]) -> str | None:
    """Why a trial is left out of fronts and hypervolumes, or None when it counts."""
    if trial.status in UNFINISHED_STATUSES:
        return "unfinished"
    if trial.status in ("diverged", "error"):
        return trial.status
    if trial.status != "completed":
        return f"status {trial.status!r}"
    if not all(math.isfinite(v) for v in trial.values(objectives)):
        return "nan"
    return None


def front_of(points: Sequence[TrialRecord], objectives: Sequence[Objective]) -> tuple[TrialRecord, ...]:
    """The non-dominated trials, ordered best first objective by objective (ties: trial id)."""
    maximize = [o.maximize for o in objectives]
    idx = non_dominated([p.values(objectives) for p in points], maximize)
    chosen = [points[i] for i in idx]
    def rank(t: TrialRecord) -> tuple:
        return tuple(-v if up else v for v, up in zip(t.values(objectives), maximize)), t.sweep, t.trial_id

    return tuple(sorted(chosen, key=rank))


def reference_point(objectives: Sequence[Objective], baselines: Sequence[Sequence[float]],
                    observed: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], str]:
    """The hypervolume's reference point and the rule, in words, that gave it.

    ``baselines``: objective values of the usable dense baselines; ``observed``: those of
    every good trial. A minimised objective's anchor is the largest baseline value (the
    worst observed one without a baseline), pushed out by REFERENCE_MARGIN of its size; a
    maximised objective's reference is 0, or below the worst value should one be negative.
    """
    anchors = baselines if baselines else observed
    ref = []
    for i, o in enumerate(objectives):
        seen = [p[i] for p in observed] + [b[i] for b in baselines]
        if o.maximize:
            worst = min(seen, default=0.0)
            ref.append(0.0 if worst >= 0 else worst - REFERENCE_MARGIN * abs(worst))
        else:
            anchor = max((p[i] for p in anchors), default=math.nan)
            ref.append(anchor + REFERENCE_MARGIN * abs(anchor))
    scale = f"{1 + REFERENCE_MARGIN:g}"
    source = "the dense baseline's" if len(baselines) == 1 else (
        "the largest dense baseline" if baselines else "the worst good trial's")
    parts = [f"{o.metric}: 0" if o.maximize else f"{o.metric}: {scale} × {source} value" for o in objectives]
    rule = "; ".join(parts) + ("" if baselines else " (no usable dense baseline)")
    return tuple(ref), rule


def savings_against(trial: TrialRecord, baseline: TrialRecord) -> Savings:
    """The trial's measured saving against the baseline (fractions; accuracy in points)."""
    def saving(metric: str) -> float:
        b = baseline.metrics[metric]
        return 1.0 - trial.metrics[metric] / b if b and math.isfinite(b) else math.nan

    comparable = trial.energy_source == baseline.energy_source
    return Savings(
        sweep=trial.sweep, trial_id=trial.trial_id,
        energy=saving("energy_j") if comparable else math.nan,
        flops=saving("flops"), time=saving("time_s"),
        val_acc_points=(trial.metrics["val_acc"] - baseline.metrics["val_acc"]) * 100.0,
        energy_comparable=comparable,
    )


def summarize_sweep(sweep: SweepData, objectives: Sequence[Objective]) -> SweepSummary:
    """Exclusions by reason, the usable baseline and every completed trial's savings."""
    good, excluded = [], []
    counts: dict[str, int] = {r: 0 for r in EXCLUSION_REASONS}
    for t in sweep.trials:
        reason = exclusion_reason(t, objectives)
        if reason is None:
            good.append(t)
        else:
            excluded.append(Exclusion(t, reason))
            counts[reason] = counts.get(reason, 0) + 1
    baseline, note = _pick_baseline(sweep.trials)
    savings: tuple[Savings, ...] = ()
    if baseline is not None:
        savings = tuple(savings_against(t, baseline) for t in sweep.trials
                        if t.status == "completed" and not t.is_baseline)
    return SweepSummary(**{f.name: getattr(sweep, f.name) for f in dataclasses.fields(SweepData)},
                        good=tuple(good), excluded=tuple(excluded), excluded_counts=counts, baseline=baseline,
                        baseline_note=note, savings=savings)


def _pick_baseline(trials: Sequence[TrialRecord]) -> tuple[TrialRecord | None, str]:
    baselines = [t for t in trials if t.is_baseline]
    if not baselines:
        return None, "no dense baseline in this sweep: no savings reported"
    done = [t for t in baselines if t.status == "completed"]
    if not done:
        return None, f"the dense baseline {baselines[0].trial_id} is {baselines[0].status}: no savings reported"
    note = "" if len(baselines) == 1 else f"{len(baselines)} baseline trials; savings use {done[0].trial_id}"
    return done[0], note


def _curve(sweep: SweepSummary, members: set[tuple[str, str]], objectives: Sequence[Objective],
           reference: Sequence[float]) -> tuple[tuple[int, float], ...]:
    maximize = [o.maximize for o in objectives]
    finished = sorted((t for t in sweep.trials if t.status in TERMINAL_STATUSES),
                      key=lambda t: (t.ended_at is None, t.ended_at or 0.0, t.order))
    front: list[tuple[float, ...]] = []
    volume, out = 0.0, []
    for k, t in enumerate(finished, 1):
        if t.key in members:
            p = t.values(objectives)
            # A point that an earlier one dominates or equals adds no volume: skip the recount.
            if not any(q == p or dominates(q, p, maximize) for q in front):
                front = [q for q in front if not dominates(p, q, maximize)] + [p]
                volume = hypervolume(front, reference, maximize)
        out.append((k, volume))
    return tuple(out)


def analyze(sweeps: Sequence[SweepData], objectives: Sequence[Objective]) -> Analysis:
    """Fronts, hypervolumes, exclusions and savings of one sweep or several compared."""
    objectives = tuple(objectives)
    _check_objectives(list(objectives), "objectives")
    maximize = [o.maximize for o in objectives]
    summaries = tuple(summarize_sweep(s, objectives) for s in sweeps)
    notes: list[str] = []

    energy_axis = any(o.metric in ENERGY_METRICS for o in objectives)
    sources = sorted({t.energy_source or "unknown" for s in summaries for t in s.good})
    split = energy_axis and len(sources) > 1
    if split:
        per = ", ".join(f"{src}: {sum((t.energy_source or 'unknown') == src for s in summaries for t in s.good)} trials"
                        for src in sources)
        notes.append(f"energy comes from different sources ({per}); they are never put on one axis, "
                     "so fronts, reference points and hypervolumes are computed per source")
    keys: list[str | None] = list(sources) if split else [None]

    groups = []
    for key in keys:
        def member(t: TrialRecord) -> bool:
            return key is None or (t.energy_source or "unknown") == key

        pts = {s.name: [t for t in s.good if member(t)] for s in summaries}
        observed = [t.values(objectives) for ps in pts.values() for t in ps]
        baselines = [s.baseline.values(objectives) for s in summaries
                     if s.baseline is not None and s.baseline.key in {t.key for t in pts[s.name]}]
        reference, rule = reference_point(objectives, baselines, observed)
        fronts = []
        for s in summaries:
            members = {t.key for t in pts[s.name]}
            curve = _curve(s, members, objectives, reference)
            fronts.append(Front(s.name, tuple(pts[s.name]), front_of(pts[s.name], objectives),
                                curve[-1][1] if curve else 0.0, curve))
        combined = None
        if len(summaries) > 1:
            every = [t for s in summaries for t in pts[s.name]]
            front = front_of(every, objectives)
            combined = Front("combined", tuple(every), front,
                             hypervolume([t.values(objectives) for t in front], reference, maximize), ())
        group_sources = {t.energy_source for ps in pts.values() for t in ps}
        groups.append(Group(next(iter(group_sources)) if len(group_sources) == 1 else None,
                            reference, rule, tuple(fronts), combined))

    if any(t.ended_at is None for s in summaries for t in s.trials if t.status in TERMINAL_STATUSES):
        notes.append("some finished trials have no ended_at: the hypervolume curve orders them by trial order")
    return Analysis(objectives, summaries, tuple(groups), split, tuple(notes))
