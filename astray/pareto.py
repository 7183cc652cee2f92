"""Non-dominated sets and hypervolumes for any number of objectives, each maximised or
minimised: pure maths that the report (``astray.analysis``) and the sweep's progress
line (``astray.sweep.recorder``) share."""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y, up in zip(a, b, maximize):
        if not up:
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def non_dominated(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the points no other point dominates.

    Points with a NaN coordinate are left out (a failed or unfinished trial is not a
    trade-off). Equal points are all kept: neither dominates the other.
    """
    valid = [i for i, p in enumerate(points) if all(not math.isnan(v) for v in p)]
    return [i for i in valid if not any(dominates(points[j], points[i], maximize) for j in valid if j != i)]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float], maximize: Sequence[bool]) -> float:
    """Exact volume of objective space the points dominate, bounded by ``reference``.

    Each objective is maximised or minimised as ``maximize`` says. A point contributes
    only where it is strictly better than the reference on every objective; points with
    a NaN coordinate contribute nothing. Dominated points and duplicates are harmless:
    the volume is that of the union of the boxes [point, reference].

    Two objectives take one sorted sweep (O(n log n)); more objectives slice along the
    last one and recurse (HSO, O(n^(d-1)) — fine for the few hundred trials of a sweep).
    """
    if len(reference) != len(maximize):
        raise ValueError(f"reference has {len(reference)} values for {len(maximize)} objectives")
    # Work in minimisation form: a maximised objective's sign flips, so "better" is
    # always "smaller" and every box is [p, ref].
    ref = tuple(-r if up else r for r, up in zip(reference, maximize))
    boxes = []
    for p in points:
        if len(p) != len(ref):
            raise ValueError(f"point {tuple(p)} has {len(p)} values for {len(ref)} objectives")
        q = tuple(-v if up else v for v, up in zip(p, maximize))
        if all(not math.isnan(v) and v < r for v, r in zip(q, ref)):
            boxes.append(q)
    return _hv_min(boxes, ref)


def _hv_min(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume for minimisation; every point is strictly below ``ref`` everywhere."""
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    if len(ref) == 2:
        volume, best_y = 0.0, ref[1]
        for x, y in sorted(points):  # by x, then y: a tie in x keeps its best y first
            if y < best_y:  # each point that lowers the staircase adds one rectangle
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    # Slice along the last objective: between consecutive values of it, the dominated
    # region is the (d-1)-dimensional hypervolume of the points already passed, times
    # the slice's depth.
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if upper > p[-1]:
            volume += (upper - p[-1]) * _hv_min([q[:-1] for q in ordered[: i + 1]], ref[:-1])
    return volume
