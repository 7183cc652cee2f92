"""Replicate statistics and the dense frontier: is AST better than simply training less?

Pure maths on numbers (``astray.analysis.compute`` applies it to a sweep's
configurations). The method, in words, is docs/design.md §9:

- A metric over a configuration's good replicates is an :class:`Estimate`: the mean, the
  sample standard deviation and the 95 % half-width ``t(0.975, n − 1) · s / √n``
  (Student's t: a handful of seeds is far from the normal limit); NaN with one value.
- The dense configurations (every budget) are points (energy, accuracy). Their *upper
  envelope* keeps, in order of energy, each point more accurate than every cheaper one;
  between those it is linear, and outside its energy range or its accuracy range it
  says nothing (NaN), since training less beyond the budgets run was never measured.
- A configuration's *energy saving at equal accuracy* is ``1 − E / E_frontier(acc)``;
  its *accuracy gain at equal energy* is ``(acc − acc_frontier(E)) × 100`` points, both
  computed per seed against that seed's dense runs, their intervals Student's t over
  the seeds (paired: the seeds are shared).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from scipy import stats

from astray.analysis.results import Advantage, Estimate, FrontierPoint, Run

CONFIDENCE = 0.95


@functools.lru_cache(maxsize=256)
def t_quantile(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom; NaN below 1."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) if df >= 1 else math.nan


def estimate(values: Sequence[float]) -> Estimate:
    """Mean, sample standard deviation and 95 % half-width of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return Estimate(math.nan, math.nan, 0, math.nan)
    mean = math.fsum(xs) / n
    if n == 1:
        return Estimate(mean, math.nan, 1, math.nan)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Estimate(mean, std, n, t_quantile(n - 1) * std / math.sqrt(n))


def upper_envelope(points: Sequence[FrontierPoint]) -> tuple[FrontierPoint, ...]:
    """The points no cheaper point matches in accuracy, by energy.

    A dearer budget that reached no higher accuracy than a cheaper one is not what
    training less costs, so it drops out; equal energies keep the more accurate point.
    Energy and accuracy both rise strictly along the result.
    """
    usable = [p for p in points if math.isfinite(p.energy.mean) and math.isfinite(p.accuracy.mean)]
    out: list[FrontierPoint] = []
    for p in sorted(usable, key=lambda p: (p.energy.mean, -p.accuracy.mean)):
        if not out or p.accuracy.mean > out[-1].accuracy.mean and p.energy.mean > out[-1].energy.mean:
            out.append(p)
    return tuple(out)


def _weights(xs: Sequence[float], x: float) -> tuple[tuple[int, float], ...]:
    """Linear-interpolation weights of ``x`` among rising ``xs`` (zero weights left out);
    () outside ``[xs[0], xs[-1]]``: no extrapolation."""
    if not xs or not math.isfinite(x):
        return ()
    # Means of equal counts can differ in the last bit (0.99444… as (a+b)/2 and (c+d)/2):
    # a value that close to an end is at that end, not off the frontier.
    tol = 1e-9 * max(abs(xs[0]), abs(xs[-1]), 1e-300)
    if xs[0] - tol <= x < xs[0]:
        x = xs[0]
    elif xs[-1] < x <= xs[-1] + tol:
        x = xs[-1]
    if x < xs[0] or x > xs[-1]:
        return ()
    if len(xs) == 1:
        return ((0, 1.0),)
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            w = (x - xs[i]) / (xs[i + 1] - xs[i])
            return tuple((j, wj) for j, wj in ((i, 1.0 - w), (i + 1, w)) if wj > 0)
    return ()


def frontier_accuracy_at(frontier: Sequence[FrontierPoint], energy: float) -> float:
    """The envelope's accuracy at ``energy``; NaN outside its energy range."""
    ws = _weights([p.energy.mean for p in frontier], energy)
    return math.fsum(w * frontier[i].accuracy.mean for i, w in ws) if ws else math.nan


def frontier_energy_at(frontier: Sequence[FrontierPoint], accuracy: float) -> float:
    """The envelope's energy at ``accuracy`` (the inverse: both rise along it); NaN outside
    its accuracy range."""
    ws = _weights([p.accuracy.mean for p in frontier], accuracy)
    return math.fsum(w * frontier[i].energy.mean for i, w in ws) if ws else math.nan


def _range(frontier: Sequence[FrontierPoint], what: str) -> str:
    if what == "energy":
        return f"{frontier[0].energy.mean:.4g}..{frontier[-1].energy.mean:.4g} J"
    return f"{frontier[0].accuracy.mean:.4g}..{frontier[-1].accuracy.mean:.4g}"


def _segment(xs: Sequence[float], x: float) -> tuple[int, int] | None:
    """The envelope segment (i, i + 1) whose range holds ``x`` (an end's tolerance as
    :func:`_weights`); None outside, or with fewer than two points."""
    ws = _weights(xs, x)
    if not ws or len(xs) < 2:
        return None
    i = ws[0][0]
    return (i, i + 1) if i + 1 < len(xs) else (i - 1, i)


def bracketing(frontier: Sequence[FrontierPoint], accuracy: float) -> tuple[FrontierPoint, FrontierPoint] | None:
    """The two envelope points whose segment the saving at ``accuracy`` is read on."""
    seg = _segment([p.accuracy.mean for p in frontier], accuracy)
    return None if seg is None else (frontier[seg[0]], frontier[seg[1]])


def pair_runs(runs: Sequence[Run], *others: Sequence[Run]) -> tuple[list[tuple[Run, ...]], str]:
    """Each of ``runs`` with the same seed's run of each of ``others`` (a dense budget's).

    Seeds are shared in a sweep (common random numbers), so seed s of a configuration
    meets seed s of the dense budgets. Where fewer than two seeds are shared (a store
    from before seeds were recorded, or configurations trained on other seeds) the runs
    are paired in replicate order instead: independent runs, so the differences are
    still independent draws, only not helped by shared noise. Returns the pairs and
    ``"seed"`` or ``"order"``.
    """
    by_seed = [{r.seed: r for r in o if r.seed is not None} for o in others]
    shared = [(r, *(m[r.seed] for m in by_seed)) for r in runs
              if r.seed is not None and all(r.seed in m for m in by_seed)]
    if len(shared) >= 2 or (shared and len(shared) == len(runs)):
        return shared, "seed"
    ordered_ = [sorted(x, key=lambda r: r.replicate) for x in (runs, *others)]
    return list(zip(*ordered_)), "order"


def _per_seed(pairs: Sequence[tuple[Run, Run, Run]], what: str) -> tuple[list[float], int]:
    """Per pair (configuration, dense i, dense j), the seed's own line through its two
    dense runs read at the configuration's accuracy (``what="saving"``: the energy saving
    ``1 − E_c / E_f(A_c)``) or energy (``"gain"``: ``(A_c − A_f(E_c)) × 100``). Returns the
    values and how many seeds were skipped because their dense runs do not rise (a line
    that falls says nothing about what training less costs)."""
    out, skipped = [], 0
    for c, lo, hi in pairs:
        if what == "saving":
            if not hi.accuracy > lo.accuracy:
                skipped += 1
                continue
            e_f = lo.energy + (c.accuracy - lo.accuracy) * (hi.energy - lo.energy) / (hi.accuracy - lo.accuracy)
            if not e_f > 0:
                skipped += 1
                continue
            out.append(1.0 - c.energy / e_f)
        else:
            if not hi.energy > lo.energy:
                skipped += 1
                continue
            a_f = lo.accuracy + (c.energy - lo.energy) * (hi.accuracy - lo.accuracy) / (hi.energy - lo.energy)
            out.append((c.accuracy - a_f) * 100.0)
    return out, skipped


def advantage(accuracy: Estimate, energy: Estimate, frontier: Sequence[FrontierPoint],
              runs: Sequence[Run] = (), accuracy_name: str = "accuracy") -> Advantage:
    """A configuration's advantage over training less, read off the envelope ``frontier``,
    with paired per-seed intervals (docs/design.md §9).

    The configuration's mean accuracy (mean energy) picks the envelope segment compared
    against. Per seed, that segment's two dense runs of the same seed make the seed's own
    line, and the configuration's run of that seed is read against it: every noise
    source, the dense runs' energies included, moves the per-seed value. The number is the
    mean over seeds and its interval Student's t over them (n − 1 degrees of freedom),
    whose coverage a simulation in the test suite checks. Without ``runs`` (or runs on the
    frontier) only the point on the means is given, with no interval. NaN, with a note,
    where the mean is outside the frontier's range.
    """
    if not frontier:
        return Advantage(math.nan, math.nan, math.nan, math.nan, math.nan, accuracy.n, "no dense frontier", "")
    notes: list[str] = []
    acc, e = accuracy.mean, energy.mean
    results: dict[str, Estimate] = {}
    n_pairs, how = 0, ""
    for what, xs, x in (("saving", [p.accuracy.mean for p in frontier], acc),
                        ("gain", [p.energy.mean for p in frontier], e)):
        seg = _segment(xs, x)
        if seg is None:
            if what == "saving":
                side = "above" if acc > frontier[-1].accuracy.mean else "below"
                notes.append(f"{accuracy_name} {acc:.4g} is {side} the frontier's range {_range(frontier, 'accuracy')}")
            else:
                side = "above" if e > frontier[-1].energy.mean else "below"
                notes.append(f"energy {e:.4g} J is {side} the frontier's range {_range(frontier, 'energy')}")
            continue
        lo, hi = frontier[seg[0]], frontier[seg[1]]
        pairs, how_ = pair_runs(runs, lo.runs, hi.runs) if runs and lo.runs and hi.runs else ([], "")
        values, skipped = _per_seed(pairs, what)
        if values:
            results[what] = estimate(values)
            n_pairs, how = n_pairs or len(values), how_  # the saving's count first: the headline's
            if skipped:
                notes.append(f"{skipped} seed(s) skipped for the {what}: their dense runs "
                             f"{lo.config_id} and {hi.config_id} do not rise")
        else:  # nothing to pair: the point on the means, no interval
            mean_line = [((Run(None, 0, e, acc), Run(None, 0, lo.energy.mean, lo.accuracy.mean),
                           Run(None, 0, hi.energy.mean, hi.accuracy.mean)))]
            point_, _ = _per_seed(mean_line, what)
            if point_:
                results[what] = Estimate(point_[0], math.nan, 1, math.nan)
    if how == "order":
        notes.append("seeds not shared with the dense runs: replicates paired in order (independent runs)")
    s, g = results.get("saving"), results.get("gain")
    saving = s.mean if s else math.nan
    lo_ = s.mean - s.ci95 if s and math.isfinite(s.ci95) else math.nan
    hi_ = s.mean + s.ci95 if s and math.isfinite(s.ci95) else math.nan
    return Advantage(saving, lo_, hi_, g.mean if g else math.nan, g.ci95 if g else math.nan,
                     n_pairs or (1 if results else accuracy.n), "; ".join(notes), how)


def paired_difference(a: Sequence[Run], b: Sequence[Run], get) -> tuple[Estimate, str]:
    """The difference ``get(a) − get(b)`` over runs paired by seed (in replicate order when
    fewer than two seeds are shared): its mean, spread and 95 % half-width."""
    pairs, how = pair_runs(a, b)
    return estimate([get(x) - get(y) for x, y in pairs]), how


def paired_p_value(d: Estimate) -> float:
    """Two-sided p of the paired t-test that the mean difference is 0; NaN below two pairs.
    Identical non-zero differences (no spread) are as far from 0 as can be: p = 0."""
    if d.n < 2 or not math.isfinite(d.mean):
        return math.nan
    if not d.std > 0:
        return 1.0 if d.mean == 0 else 0.0
    t = d.mean / (d.std / math.sqrt(d.n))
    return float(2 * stats.t.sf(abs(t), d.n - 1))
