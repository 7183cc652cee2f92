"""What a sweep found: Pareto fronts, hypervolumes and savings against the dense baseline.

Pure computation over typed trial records (``astray.analysis.read`` reads them; the
figures, the document and ``astray.analysis.report`` render the result). The rules,
documented once:

- **Which trials count.** Trials still ``running``/``retrying`` are *unfinished*; ``diverged``
  and ``error`` trials *failed*; a ``completed`` trial with a NaN/inf objective is *nan*.
  All of them are left out of fronts and hypervolumes and counted by reason.
- **Ties.** A point dominates another when it is at least as good on every objective and
  strictly better on one. Equal points (duplicates) are all on the front; a point equal on
  one objective and worse on another is dominated.
- **Energy sources.** Energy estimated by a model (``model``) and measured (``nvml``,
  ``rapl``) are never put on one axis, and neither are readings of a device the trial had
  to itself and of one other jobs shared (``energy_scope: device-shared``): when an energy
  objective is used and the trials (of one sweep or of the sweeps compared) carry several
  such axes, the analysis is split into one group per axis, each with its own fronts,
  reference point and hypervolume.
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
  in percentage points. Energy saving is NaN when the two have different energy sources,
  or one was read on a shared device and the other not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from astray.analysis.model import (
    Analysis,
    Exclusion,
    Front,
    Group,
    Savings,
    SweepData,
    SweepSummary,
    TrialRecord,
)
from astray.analysis.pareto import dominates, hypervolume, non_dominated
from astray.analysis.read import check_objectives
from astray.schema import (
    COMPLETED,
    ENERGY_METRICS,
    FAILED_STATUSES,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    Objective,
)

EXCLUSION_REASONS = ("unfinished", *FAILED_STATUSES, "nan")
REFERENCE_MARGIN = 0.1  # minimised objectives: reference = (1 + margin) × anchor value


def exclusion_reason(trial: TrialRecord, objectives: Sequence[Objective]) -> str | None:
    """Why a trial is left out of fronts and hypervolumes, or None when it counts."""
    if trial.status in UNFINISHED_STATUSES:
        return "unfinished"
    if trial.status in FAILED_STATUSES:
        return trial.status
    if trial.status != COMPLETED:
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

    comparable = trial.energy_axis == baseline.energy_axis
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
                        if t.status == COMPLETED and not t.is_baseline)
    return SweepSummary(**{f.name: getattr(sweep, f.name) for f in dataclasses.fields(SweepData)},
                        good=tuple(good), excluded=tuple(excluded), excluded_counts=counts, baseline=baseline,
                        baseline_note=note, savings=savings)


def _pick_baseline(trials: Sequence[TrialRecord]) -> tuple[TrialRecord | None, str]:
    baselines = [t for t in trials if t.is_baseline]
    if not baselines:
        return None, "no dense baseline in this sweep: no savings reported"
    done = [t for t in baselines if t.status == COMPLETED]
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
    check_objectives(list(objectives), "objectives")
    maximize = [o.maximize for o in objectives]
    summaries = tuple(summarize_sweep(s, objectives) for s in sweeps)
    notes: list[str] = []

    energy_axis = any(o.metric in ENERGY_METRICS for o in objectives)
    axes = sorted({t.energy_axis for s in summaries for t in s.good})
    split = energy_axis and len(axes) > 1
    if split:
        per = ", ".join(f"{ax}: {sum(t.energy_axis == ax for s in summaries for t in s.good)} trials" for ax in axes)
        notes.append(f"energy comes from different sources or from devices shared with other jobs ({per}); "
                     "they are never put on one axis, so fronts, reference points and hypervolumes are "
                     "computed per group")
    keys: list[str | None] = list(axes) if split else [None]

    groups = []
    for key in keys:
        def member(t: TrialRecord) -> bool:
            return key is None or t.energy_axis == key

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
        shared = bool(key) and key.endswith("(device-shared)")
        groups.append(Group(next(iter(group_sources)) if len(group_sources) == 1 else None,
                            reference, rule, tuple(fronts), combined, shared))

    if any(t.ended_at is None for s in summaries for t in s.trials if t.status in TERMINAL_STATUSES):
        notes.append("some finished trials have no ended_at: the hypervolume curve orders them by trial order")
    return Analysis(objectives, summaries, tuple(groups), split, tuple(notes))

