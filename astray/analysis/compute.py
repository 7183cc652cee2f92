"""What a sweep found: Pareto fronts, hypervolumes, savings against the dense baseline, and
the advantage over simply training less.

Pure computation over typed trial records (``astray.analysis.read`` reads them; the
figures, the document and ``astray.analysis.report`` render the result). The rules,
documented once:

- **Which trials count.** Trials still ``running``/``retrying`` are *unfinished*; ``diverged``
  and ``error`` trials *failed*; a ``completed`` trial with a NaN/inf objective is *nan*.
  All of them are left out of fronts and hypervolumes and counted by reason.
- **Configurations, not trials, are the points** (docs/design.md §9). A sweep's trials are
  grouped by (``config_id``, energy axis); a configuration with at least one good replicate
  is a point at its replicates' means. With one seed per configuration a configuration is
  its trial, and every number below is what it was per trial.
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
  compare): a minimised objective takes 1.1 × the dense full-budget baseline's mean (the largest
  over the baselines compared; without a usable baseline, the worst finished value); a
  maximised objective takes 0, the floor of every metric astray records (or, should a
  value be negative, that value minus 10 % of its size). Points not strictly better than
  the reference on every objective contribute nothing.
- **Hypervolume vs trials finished.** Trials are ordered by ``ended_at`` (trial order
  where it is missing); after the k-th finished trial (any terminal status) the curve
  holds the hypervolume of the configuration means over the good trials among the first k.
- **Savings** of a configuration against its own sweep's dense full-budget configuration
  (its replicate means): energy, FLOPs and time as fractions ``1 − config/baseline``,
  accuracy as ``val_acc`` difference in percentage points. Energy saving is NaN when the
  two have different energy sources, or one was read on a shared device and the other not.
- **Training less** (docs/design.md §9): each sweep's dense configurations, per energy
  axis, make a frontier; every other configuration's energy saving at equal accuracy and
  accuracy gain at equal energy are read off it (``astray.analysis.frontier``), never
  across energy axes. A front configuration whose 95 % intervals overlap those of one it
  dominates, on every objective it is better on, is *not separable* from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

from astray.analysis.labels import headline_text, kind_label
from astray.analysis.frontier import (
    advantage,
    bracketing,
    estimate,
    paired_difference,
    paired_p_value,
    upper_envelope,
)
from astray.analysis.results import (
    Advantage,
    Analysis,
    Configuration,
    DenseFrontier,
    Exclusion,
    Front,
    FrontierPoint,
    Group,
    Headline,
    Run,
    Savings,
    SweepData,
    SweepSummary,
    TrialRecord,
)
from astray.errors import ConfigError
from astray.pareto import dominates, hypervolume, non_dominated
from astray.analysis.read import METRIC_COLUMNS, check_objectives, objectives_from_manifest
from astray.schema import (
    COMPLETED,
    ENERGY_METRICS,
    FAILED_STATUSES,
    KIND_SEARCHED,
    PHASE_CONFIRM,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    Objective,
)

# A point of a front: a configuration (what reports use), or a single trial.
P = TypeVar("P", TrialRecord, Configuration)

EXCLUSION_REASONS = ("unfinished", *FAILED_STATUSES, "nan", "stopped early")
REFERENCE_MARGIN = 0.1  # minimised objectives: reference = (1 + margin) × anchor value


def exclusion_reason(trial: TrialRecord, objectives: Sequence[Objective]) -> str | None:
    """Why a trial is left out of fronts and hypervolumes, or None when it counts."""
    if trial.status in UNFINISHED_STATUSES:
        return "unfinished"
    if trial.stopped_early:  # judged at a rung on a few epochs: never on a front or the frontier
        return "stopped early"
    if trial.status in FAILED_STATUSES:
        return trial.status
    if trial.status != COMPLETED:
        return f"status {trial.status!r}"
    if not all(math.isfinite(v) for v in trial.values(objectives)):
        return "nan"
    return None


def front_of(points: Sequence[P], objectives: Sequence[Objective]) -> tuple[P, ...]:
    """The non-dominated points, ordered best first objective by objective (ties: trial id)."""
    maximize = [o.maximize for o in objectives]
    idx = non_dominated([p.values(objectives) for p in points], maximize)
    chosen = [points[i] for i in idx]
    def rank(t: P) -> tuple:
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


def savings_against(trial: TrialRecord | Configuration, baseline: TrialRecord | Configuration,
                    accuracy: str = "val_acc") -> Savings:
    """The trial's (or configuration's means') measured saving against the baseline
    (fractions; accuracy in points)."""
    def saving(metric: str) -> float:
        b = baseline.metrics[metric]
        return 1.0 - trial.metrics[metric] / b if b and math.isfinite(b) else math.nan

    comparable = trial.energy_axis == baseline.energy_axis
    return Savings(
        sweep=trial.sweep, trial_id=trial.trial_id,
        energy=saving("energy_j") if comparable else math.nan,
        flops=saving("flops"), time=saving("time_s"),
        accuracy_points=(trial.metrics[accuracy] - baseline.metrics[accuracy]) * 100.0,
        energy_comparable=comparable,
        config_id=trial.config_id if isinstance(trial, Configuration) else trial.configuration,
    )


def configurations(trials: Sequence[TrialRecord], objectives: Sequence[Objective]) -> tuple[Configuration, ...]:
    """A sweep's trials grouped by (config_id, energy axis), in store order, each with its
    statistics over its good replicates.

    A replicate with no energy reading yet (no ``energy_source``: it has not finished an
    epoch) joins its configuration's first axis rather than making an "unknown" one.
    """
    axes: dict[str, list[str]] = {}
    for t in trials:
        if t.energy_source is not None:
            seen = axes.setdefault(t.configuration, [])
            if t.energy_axis not in seen:
                seen.append(t.energy_axis)
    grouped: dict[tuple[str, str], list[TrialRecord]] = {}
    for t in trials:
        axis = t.energy_axis if t.energy_source is not None else (axes.get(t.configuration) or [t.energy_axis])[0]
        grouped.setdefault((t.configuration, axis), []).append(t)
    out = []
    for (cid, axis), reps in grouped.items():
        good = tuple(t for t in reps if exclusion_reason(t, objectives) is None)
        first = reps[0]
        stats = {m: estimate([t.metrics.get(m, math.nan) for t in good]) for m in METRIC_COLUMNS}
        out.append(Configuration(first.sweep, cid, axis, first.baseline_kind, first.budget, tuple(reps), good,
                                 stats))
    return tuple(out)


def runs_of(c: Configuration, accuracy: str) -> tuple[Run, ...]:
    """A configuration's good replicates as (seed, energy, accuracy) runs, for pairing."""
    return tuple(Run(t.seed, t.replicate, t.metrics.get("energy_j", math.nan), t.metrics.get(accuracy, math.nan))
                 for t in c.good)


def dense_frontiers(configs: Sequence[Configuration], accuracy: str = "val_acc") -> tuple[DenseFrontier, ...]:
    """Per energy axis the configurations use, the dense configurations as frontier points
    and their upper envelope; without two budgets on an axis there is no frontier."""
    out = []
    axes = list(dict.fromkeys(c.energy_axis for c in configs if c.n_good))
    for axis in axes:
        dense = [c for c in configs if c.is_dense and c.n_good and c.energy_axis == axis]
        points = [FrontierPoint(c.stats["energy_j"], c.stats[accuracy], c.config_id, c.budget, runs_of(c, accuracy))
                  for c in dense]
        points = sorted((p for p in points if math.isfinite(p.energy.mean) and math.isfinite(p.accuracy.mean)),
                        key=lambda p: (p.energy.mean, -p.accuracy.mean))
        where = f" on energy axis {axis}" if len(axes) > 1 else ""
        budgets = len({p.budget for p in points})  # two runs at one budget are no frontier
        note = "" if budgets >= 2 else (
            f"no dense frontier{where}: fewer than 2 dense budgets completed ({budgets})")
        out.append(DenseFrontier(configs[0].sweep, axis, tuple(points), upper_envelope(points), note))
    return tuple(out)


def advantages(configs: Sequence[Configuration], frontiers: Sequence[DenseFrontier],
               accuracy: str = "val_acc") -> dict[tuple[str, str], Advantage]:
    """Every non-dense configuration with a good replicate against the frontier of its own
    energy axis; never another axis's (docs/design.md §5, §9)."""
    by_axis = {f.energy_axis: f for f in frontiers}
    out = {}
    for c in configs:
        if c.is_dense or not c.n_good:
            continue
        f = by_axis.get(c.energy_axis)
        if f is None or not f.usable:
            others = [x.energy_axis for x in frontiers if x.usable]
            why = f.note if f is not None else f"no dense frontier on energy axis {c.energy_axis}"
            if others:
                why += f" (the dense budgets were measured on {', '.join(others)}: never compared across axes)"
            out[c.key] = Advantage(math.nan, math.nan, math.nan, math.nan, math.nan, c.n_good, why)
        else:
            out[c.key] = advantage(c.stats[accuracy], c.stats["energy_j"], f.envelope, runs_of(c, accuracy), accuracy)
    return out


SEPARATION_LEVEL = 0.05  # paired t-test, two-sided


def dominated_on_means(f: Configuration, points: Sequence[Configuration],
               objectives: Sequence[Objective]) -> list[tuple[Configuration, list[Objective]]]:
    """The configurations ``f`` dominates on means, each with the objectives ``f`` is better on."""
    maximize = [o.maximize for o in objectives]
    fv = f.values(objectives)
    out = []
    for d in points:
        dv = d.values(objectives)
        if d is f or not dominates(fv, dv, maximize):
            continue
        out.append((d, [o for o, x, y in zip(objectives, fv, dv) if (x > y if o.maximize else x < y)]))
    return out


def not_separable_from(f: Configuration, points: Sequence[Configuration],
                       objectives: Sequence[Objective]) -> tuple[Configuration, ...]:
    """The configurations ``f`` dominates on means that no paired test tells from it: on
    every objective where ``f``'s mean is better, the paired t-test over their shared seeds
    (replicate order where the seeds differ) gives p ≥ 5 %. Pairs with fewer than two
    seeds to compare are :func:`not_compared_with`, never here."""
    out = []
    for d, better in dominated_on_means(f, points, objectives):
        diffs = [paired_difference(f.good, d.good, lambda t, m=o.metric: t.metrics.get(m, math.nan))[0]
                 for o in better]
        if any(x.n < 2 for x in diffs):
            continue
        if all(paired_p_value(x) >= SEPARATION_LEVEL for x in diffs):
            out.append(d)
    return tuple(out)


def not_compared_with(f: Configuration, points: Sequence[Configuration],
                      objectives: Sequence[Objective]) -> tuple[Configuration, ...]:
    """The configurations ``f`` dominates on means with fewer than two seeds to pair."""
    return tuple(d for d, better in dominated_on_means(f, points, objectives)
                 if paired_difference(f.good, d.good, lambda t: 0.0)[0].n < 2)


def _separability(front: Sequence[Configuration], points: Sequence[Configuration],
                  objectives: Sequence[Objective]) -> tuple[dict, dict]:
    apart = {c.key: not_separable_from(c, points, objectives) for c in front}
    unknown = {c.key: not_compared_with(c, points, objectives) for c in front}
    return {k: v for k, v in apart.items() if v}, {k: v for k, v in unknown.items() if v}


def summarize_sweep(sweep: SweepData, objectives: Sequence[Objective], accuracy: str = "val_acc") -> SweepSummary:
    """Exclusions by reason, the configurations, the usable baseline, every configuration's
    savings, the dense frontiers and the advantage over them; confirmation trials (fresh
    seeds after the search) are set aside, never mixed into any of these."""
    confirming = tuple(t for t in sweep.trials if t.search_phase == PHASE_CONFIRM)
    sweep = dataclasses.replace(sweep, trials=tuple(t for t in sweep.trials if t.search_phase != PHASE_CONFIRM))
    good, excluded = [], []
    counts: dict[str, int] = {r: 0 for r in EXCLUSION_REASONS}
    for t in sweep.trials:
        reason = exclusion_reason(t, objectives)
        if reason is None:
            good.append(t)
        else:
            excluded.append(Exclusion(t, reason))
            counts[reason] = counts.get(reason, 0) + 1
    configs = configurations(sweep.trials, objectives)
    baseline, note = _pick_baseline(configs)
    savings: tuple[Savings, ...] = ()
    if baseline is not None:
        savings = tuple(savings_against(c, baseline, accuracy) for c in configs if c.n_good and c is not baseline)
    frontiers = dense_frontiers(configs, accuracy)
    return SweepSummary(**{f.name: getattr(sweep, f.name) for f in dataclasses.fields(SweepData)},
                        good=tuple(good), excluded=tuple(excluded), excluded_counts=counts, baseline=baseline,
                        baseline_note=note, savings=savings, configurations=configs, frontiers=frontiers,
                        advantages=advantages(configs, frontiers, accuracy), confirmation_trials=confirming)


def confirmation_of(sweep: SweepSummary, config_id: str, objectives: Sequence[Objective],
                    accuracy: str) -> tuple[Advantage | None, str]:
    """``config_id`` on the confirmation's fresh seeds, against the frontier of the dense
    budgets confirmed with it (the same fresh seeds, so paired again), or why not."""
    if not sweep.confirmation_trials:
        return None, ""
    configs = configurations(sweep.confirmation_trials, objectives)
    confirmed = [c for c in configs if c.kind == KIND_SEARCHED]
    if not any(c.config_id == config_id for c in confirmed):
        names = ", ".join(sorted({c.config_id for c in confirmed})) or "no searched configuration"
        return None, f"the confirmation trained {names}, not {config_id}"
    c = next(c for c in confirmed if c.config_id == config_id)
    if not c.n_good:
        return None, f"no confirmation replicate of {config_id} finished"
    adv = advantages(configs, dense_frontiers(configs, accuracy), accuracy).get(c.key)
    if adv is None or not math.isfinite(adv.energy_saving):
        return None, f"the confirmation of {config_id} cannot be read off its frontier ({adv.note if adv else ''})"
    return adv, ""


def confirmation_pick(sweep: SweepData) -> tuple[list[str], str]:
    """What ``search.confirm`` trains after the search: the headline configuration on
    validation accuracy, the two dense budgets bracketing it on the frontier and their
    neighbours on the frontier (headline first), and that headline in words; ([], why) when no searched configuration can be read off the frontier."""
    objectives = objectives_from_manifest(sweep.manifest)
    # Picked on validation accuracy: the test split chooses nothing, this included.
    a = analyze([sweep], objectives, accuracy="val_acc")
    (h,) = a.headlines
    s = a.sweeps[0]
    if h.best is None or h.advantage is None or not math.isfinite(h.advantage.energy_saving):
        return [], h.reason or "no searched configuration can be read off the dense frontier"
    envelope = list(s.frontier(h.best.energy_axis).envelope)
    pair = bracketing(envelope, h.best.metrics[a.accuracy])
    if pair is None:
        return [], f"{h.best.config_id} is outside the dense frontier's range"
    # Fresh seeds move both the configuration and the dense budgets by about their
    # spread, so the pair alone can leave the confirmed accuracy outside the confirmed
    # frontier (seen in benchmarks/frontier_sweep.py): one envelope neighbour on each
    # side, where there is one, keeps it readable.
    lo, hi = envelope.index(pair[0]), envelope.index(pair[1])
    around = [envelope[i] for i in (lo - 1, hi + 1) if 0 <= i < len(envelope)]
    return [h.best.config_id, *(p.config_id for p in (*pair, *around))], headline_text(h)


def _pick_baseline(configs: Sequence[Configuration]) -> tuple[Configuration | None, str]:
    """The dense full-budget configuration with a good replicate (the first, should there be several)."""
    baselines = [c for c in configs if c.is_dense_full]
    if not baselines:
        return None, "no dense baseline in this sweep: no savings reported"
    done = [c for c in baselines if c.n_good]
    if not done:
        statuses = sorted({t.status for c in baselines for t in c.replicates})
        state = statuses[0] if len(statuses) == 1 else "not completed (" + ", ".join(statuses) + ")"
        name = baselines[0].config_id
        if state == COMPLETED:
            state = "completed without finite objectives"
        return None, f"the dense baseline {name} is {state}: no savings reported"
    if len(baselines) == 1:
        return done[0], ""
    return done[0], f"{len(baselines)} dense full-budget configurations; savings use {done[0].config_id}"


def _curve(sweep: SweepSummary, points: Sequence[Configuration], objectives: Sequence[Objective],
           reference: Sequence[float]) -> tuple[tuple[int, float], ...]:
    maximize = [o.maximize for o in objectives]
    point_of = {t.key: c.key for c in points for t in c.good}
    finished = sorted((t for t in sweep.trials if t.status in TERMINAL_STATUSES),
                      key=lambda t: (t.ended_at is None, t.ended_at or 0.0, t.order))
    seen: dict[tuple[str, str], list[tuple[float, ...]]] = {}  # configuration → its good replicates so far
    front: list[tuple[float, ...]] = []
    volume, out = 0.0, []
    for k, t in enumerate(finished, 1):
        if t.key in point_of:
            reps = seen.setdefault(point_of[t.key], [])
            reps.append(t.values(objectives))
            p = t.values(objectives)
            if len(reps) > 1:  # a configuration's mean moved: recount from every mean
                means = [tuple(math.fsum(col) / len(r) for col in zip(*r)) for r in seen.values()]
                front = [means[i] for i in non_dominated(means, maximize)]
                volume = hypervolume(front, reference, maximize)
            # A new point that an earlier one dominates or equals adds no volume: skip the recount.
            elif not any(q == p or dominates(q, p, maximize) for q in front):
                front = [q for q in front if not dominates(p, q, maximize)] + [p]
                volume = hypervolume(front, reference, maximize)
        out.append((k, volume))
    return tuple(out)


ACCURACIES = ("test_acc", "val_acc")
ACCURACY_WORDS = {
    "test_acc": "test accuracy at the epoch validation selected (test_acc)",
    "val_acc": "validation accuracy at its best epoch (val_acc)",
}


def report_accuracy(sweeps: Sequence[SweepData], objectives: Sequence[Objective],
                    accuracy: str | None = None) -> tuple[str, tuple[Objective, ...], str]:
    """The one accuracy of a report, the objectives with it in ``val_acc``'s place, and a
    sentence naming it (docs/design.md §9).

    By default ``test_acc``: the test split at the epoch the validation split selected,
    which nothing was chosen on. A store whose finished trials lack it (written before
    the test split was stored) reports ``val_acc`` and says so: the best epoch of the
    split it is read on, optimistic for the noisiest methods.
    """
    if accuracy is not None and accuracy not in ACCURACIES:
        raise ConfigError(f"--accuracy {accuracy!r}: must be one of {', '.join(ACCURACIES)}")
    explicit = [o.metric for o in objectives if o.metric in ACCURACIES]
    done = [t for s in sweeps for t in s.trials if t.status == COMPLETED]
    missing = sum(not math.isfinite(t.metrics.get("test_acc", math.nan)) for t in done)
    if accuracy is None:
        accuracy = explicit[0] if explicit and explicit[0] == "test_acc" else (
            "test_acc" if done and not missing else "val_acc")
    note = f"accuracy: {ACCURACY_WORDS[accuracy]}"
    if accuracy == "val_acc" and missing:
        note += (f"; {missing} of {len(done)} finished trials have no test_acc (a store written before the "
                 "test split was stored), so the epoch was selected on the split it is read on: optimistic")
    elif accuracy == "test_acc" and missing:
        raise ConfigError(f"--accuracy test_acc: {missing} of {len(done)} finished trials have no test_acc "
                          "(a store written before the test split was stored); use --accuracy val_acc")
    swapped = tuple(Objective(accuracy, o.maximize) if o.metric in ACCURACIES else o for o in objectives)
    return accuracy, swapped, note


def analyze(sweeps: Sequence[SweepData], objectives: Sequence[Objective], accuracy: str | None = None) -> Analysis:
    """Fronts, hypervolumes, exclusions and savings of one sweep or several compared, on
    one accuracy (:func:`report_accuracy`)."""
    check_objectives(list(objectives), "objectives")
    accuracy, objectives, accuracy_note = report_accuracy(sweeps, tuple(objectives), accuracy)
    maximize = [o.maximize for o in objectives]
    summaries = tuple(summarize_sweep(s, objectives, accuracy) for s in sweeps)
    notes: list[str] = []

    energy_axis = any(o.metric in ENERGY_METRICS for o in objectives)
    configs = [c for s in summaries for c in s.configurations if c.n_good]
    axes = sorted({c.energy_axis for c in configs})
    split = energy_axis and len(axes) > 1
    if split:
        per = ", ".join(f"{ax}: {sum(c.n_good for c in configs if c.energy_axis == ax)} trials" for ax in axes)
        notes.append(f"energy comes from different sources or from devices shared with other jobs ({per}); "
                     "they are never put on one axis, so fronts, reference points and hypervolumes are "
                     "computed per group")
    keys: list[str | None] = list(axes) if split else [None]

    groups = []
    for key in keys:
        def member(c: Configuration) -> bool:
            return key is None or c.energy_axis == key

        pts = {s.name: [c for c in s.configurations if c.n_good and member(c)] for s in summaries}
        observed = [c.values(objectives) for ps in pts.values() for c in ps]
        baselines = [s.baseline.values(objectives) for s in summaries
                     if s.baseline is not None and s.baseline.key in {c.key for c in pts[s.name]}]
        reference, rule = reference_point(objectives, baselines, observed)
        fronts = []
        for s in summaries:
            curve = _curve(s, pts[s.name], objectives, reference)
            front = front_of(pts[s.name], objectives)
            fronts.append(Front(s.name, tuple(pts[s.name]), front, curve[-1][1] if curve else 0.0, curve,
                                *_separability(front, pts[s.name], objectives)))
        combined = None
        if len(summaries) > 1:
            every = [c for s in summaries for c in pts[s.name]]
            front = front_of(every, objectives)
            combined = Front("combined", tuple(every), front,
                             hypervolume([c.values(objectives) for c in front], reference, maximize), (),
                             *_separability(front, every, objectives))
        group_sources = {c.energy_source for ps in pts.values() for c in ps}
        shared = bool(key) and key.endswith("(device-shared)")
        groups.append(Group(next(iter(group_sources)) if len(group_sources) == 1 else None,
                            reference, rule, tuple(fronts), combined, shared))

    if any(t.ended_at is None for s in summaries for t in s.trials if t.status in TERMINAL_STATUSES):
        notes.append("some finished trials have no ended_at: the hypervolume curve orders them by trial order")
    heads = []
    for s in summaries:
        h = headline(s, [c for g in groups for f in g.fronts if f.label == s.name for c in f.front],
                     accuracy, objectives)
        confirmed = next((t.configuration for t in s.confirmation_trials if t.baseline_kind == KIND_SEARCHED), None)
        config = next((c for c in s.configurations if c.config_id == confirmed and c.n_good), None)
        if config is not None:
            # The confirmation is of the configuration validation picked (confirmation_pick):
            # the headline is about it, whichever the report's accuracy would rank first.
            front = [c for g in groups for f in g.fronts if f.label == s.name for c in f.front]
            if h.best is None or h.best.config_id != confirmed:
                h = dataclasses.replace(h, best=config, advantage=s.advantages.get(config.key), reason="",
                                        dominates_frontier="", on_front=config in front,
                                        dominated_by=_dominating(config, front, objectives))
            adv, why = confirmation_of(s, confirmed, objectives, accuracy)
            h = dataclasses.replace(h, confirmation=adv, confirmation_note=why)
        heads.append(h)
    heads = tuple(heads)
    return Analysis(objectives, summaries, tuple(groups), split, tuple(notes), heads, accuracy, accuracy_note)


def _most_saving(sweep: SweepSummary, configs: Sequence[Configuration]) -> tuple[Advantage, Configuration] | None:
    """The configuration saving the most energy at equal accuracy (ties: the first), if any can be read."""
    finite = [(sweep.advantages[c.key], c) for c in configs
              if c.key in sweep.advantages and math.isfinite(sweep.advantages[c.key].energy_saving)]
    return max(finite, key=lambda ac: ac[0].energy_saving, default=None)


def _no_frontier_reason(sweep: SweepSummary, configs: Sequence[Configuration]) -> str:
    """Why the frontier of these configurations' energy axes cannot be read, or "" when it can."""
    axes = {c.energy_axis for c in configs}
    if any(f.energy_axis in axes and f.usable for f in sweep.frontiers):
        return ""
    notes = [f.note for f in sweep.frontiers if f.energy_axis in axes and f.note]
    return "; ".join(notes) or "no dense frontier: fewer than 2 dense budgets completed"


def _dominating(c: Configuration, front: Sequence[Configuration], objectives: Sequence[Objective]) -> str:
    """The front configurations that dominate ``c`` on means, in words ("" when none does)."""
    maximize = [o.maximize for o in objectives]
    by = [d for d in front if dominates(d.values(objectives), c.values(objectives), maximize)]
    return ", ".join(f"{d.config_id} ({kind_label(d)})" if d.is_baseline else d.config_id for d in by)


def headline(sweep: SweepSummary, front: Sequence[Configuration], accuracy: str = "val_acc",
             objectives: Sequence[Objective] = ()) -> Headline:
    """The searched front configuration that saves the most energy at equal accuracy
    against training less (its saving may be negative), or why none can be compared.

    Off the front, the closest searched configuration is named with what dominates it,
    so a positive saving against the dense line never reads as a win."""
    done = [c for c in sweep.configurations if c.kind == KIND_SEARCHED and c.n_good]
    k = len(done)
    phases: dict[str, int] = {}
    for c in (c for c in sweep.configurations if c.kind == KIND_SEARCHED):
        if c.representative.search_phase:
            phases[c.representative.search_phase] = phases.get(c.representative.search_phase, 0) + 1
    searched = [c for c in front if not c.is_baseline]
    if not searched:
        # Nothing searched made the front: it does not beat training less. Say how close
        # the best finished one came, when the frontier can tell, and what beat it.
        if not done:
            return Headline(sweep.name, None, None, "no searched configuration has finished yet", phases=phases)
        best = _most_saving(sweep, done)
        reason = _no_frontier_reason(sweep, done) or "every one lies outside the dense frontier's range"
        closest = best[1] if best else None
        by = _dominating(closest, front, objectives) if closest is not None and objectives else ""
        return Headline(sweep.name, closest, best[0] if best else None, reason, on_front=False,
                        dominated_by=by, picked_from=k, phases=phases)
    best = _most_saving(sweep, searched)
    if best:
        return Headline(sweep.name, best[1], best[0], "", picked_from=k, phases=phases)
    reason = _no_frontier_reason(sweep, searched)
    if reason:
        return Headline(sweep.name, None, None, reason, picked_from=k, phases=phases)
    usable = [f for f in sweep.frontiers if f.energy_axis in {c.energy_axis for c in searched} and f.usable]
    # Above the frontier's best accuracy at no more energy than that budget: nothing can be
    # read off the line, but training less cannot reach it at any budget tried.
    above = []
    for c in searched:
        top = next((f.envelope[-1] for f in usable if f.energy_axis == c.energy_axis), None)
        acc, energy = c.metrics.get(accuracy, math.nan), c.metrics.get("energy_j", math.nan)
        if top is not None and acc > top.accuracy.mean and energy <= top.energy.mean:
            above.append((1.0 - energy / top.energy.mean, c, top))
    if above:
        saving, c, top = max(above, key=lambda x: (x[0], x[1].metrics[accuracy]))
        return Headline(sweep.name, None, None, "", picked_from=k, phases=phases, dominates_frontier=(
            f"{c.config_id} is more accurate than dense at every budget tried ({accuracy} "
            f"{c.metrics[accuracy]:.4g} against at most {top.accuracy.mean:.4g}) and uses {100 * saving:.1f}% less "
            f"energy than that budget ({top.config_id}), so it beats training less by more than the frontier can "
            "measure"))
    ranges = ", ".join(f"{f.envelope[0].accuracy.mean:.4g}..{f.envelope[-1].accuracy.mean:.4g}"
                       + (f" on {f.energy_axis}" if len(usable) > 1 else "") for f in usable)
    return Headline(sweep.name, None, None, "every searched front configuration lies outside the dense "
                    f"frontier's accuracy range ({ranges})", picked_from=k, phases=phases)
