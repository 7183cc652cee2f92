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
  its *accuracy gain at equal energy* is ``(acc − acc_frontier(E)) × 100`` points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

from astray.analysis.results import Advantage, Estimate, FrontierPoint

CONFIDENCE = 0.95


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


def intervals_overlap(a: Estimate, b: Estimate) -> bool:
    """True when the 95 % intervals (mean ± ci95) share a point; False if either has none."""
    if not (math.isfinite(a.ci95) and math.isfinite(b.ci95)):
        return False
    return abs(a.mean - b.mean) <= a.ci95 + b.ci95


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


def frontier_accuracy_se_at(frontier: Sequence[FrontierPoint], energy: float) -> tuple[float, int]:
    """Standard error of the envelope's accuracy at ``energy``, √(w₁²·se₁² + w₂²·se₂²) over the
    two neighbouring points, and the smallest replicate count among them (0 outside the range)."""
    ws = _weights([p.energy.mean for p in frontier], energy)
    if not ws:
        return math.nan, 0
    var = math.fsum((w * frontier[i].accuracy.se) ** 2 for i, w in ws)
    return math.sqrt(var), min(frontier[i].accuracy.n for i, _ in ws)


def _range(frontier: Sequence[FrontierPoint], what: str) -> str:
    if what == "energy":
        return f"{frontier[0].energy.mean:.4g}..{frontier[-1].energy.mean:.4g} J"
    return f"{frontier[0].accuracy.mean:.4g}..{frontier[-1].accuracy.mean:.4g}"


def _accuracy_half_width(accuracy: Estimate, frontier: Sequence[FrontierPoint], energy: float) -> float:
    """95 % half-width of ``accuracy − accuracy_frontier(energy)``: the two standard errors
    combined, t at the smallest n − 1 involved (conservative); NaN when any n is one."""
    se_f, n_f = frontier_accuracy_se_at(frontier, energy)
    n = min(accuracy.n, n_f)
    if n < 2 or not math.isfinite(se_f):
        return math.nan
    return t_quantile(n - 1) * math.sqrt(accuracy.se ** 2 + se_f ** 2)


def advantage(accuracy: Estimate, energy: Estimate, frontier: Sequence[FrontierPoint]) -> Advantage:
    """A configuration's advantage over training less, read off the envelope ``frontier``.

    Energy saving at equal accuracy ``1 − E / E_f(acc)``; its interval takes the frontier
    energy at the ends of the accuracy interval (acc ∓ h, ``h`` the 95 % half-width of the
    accuracy difference at the point compared against) and, when the configuration's
    energy has an interval, ``E ± its half-width``: the low end pairs the worse accuracy
    with the higher energy. Accuracy gain at equal energy ``(acc − acc_f(E)) × 100`` with
    the half-width of the same difference at ``E``. NaN, with a note, outside the range.
    """
    notes = []
    if not frontier:
        return Advantage(math.nan, math.nan, math.nan, math.nan, math.nan, accuracy.n, "no dense frontier")
    acc, e = accuracy.mean, energy.mean
    e_f = frontier_energy_at(frontier, acc)
    saving = lo = hi = math.nan
    if math.isfinite(e_f) and e_f > 0:
        saving = 1.0 - e / e_f
        h = _accuracy_half_width(accuracy, frontier, e_f)
        if math.isfinite(h):
            h_e = energy.ci95 if math.isfinite(energy.ci95) else 0.0
            e_lo, e_hi = frontier_energy_at(frontier, acc - h), frontier_energy_at(frontier, acc + h)
            lo = 1.0 - (e + h_e) / e_lo if math.isfinite(e_lo) and e_lo > 0 else math.nan
            hi = 1.0 - (e - h_e) / e_hi if math.isfinite(e_hi) and e_hi > 0 else math.nan
    else:
        side = "above" if frontier and acc > frontier[-1].accuracy.mean else "below"
        notes.append(f"val_acc {acc:.4g} is {side} the frontier's range {_range(frontier, 'accuracy')}")
    a_f = frontier_accuracy_at(frontier, e)
    gain = half = math.nan
    if math.isfinite(a_f):
        gain = (acc - a_f) * 100.0
        half = _accuracy_half_width(accuracy, frontier, e) * 100.0
    else:
        side = "above" if e > frontier[-1].energy.mean else "below"
        notes.append(f"energy {e:.4g} J is {side} the frontier's range {_range(frontier, 'energy')}")
    return Advantage(saving, lo, hi, gain, half, accuracy.n, "; ".join(notes))
