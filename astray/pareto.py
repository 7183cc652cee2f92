"""Non-dominated sets for any number of objectives, each maximised or minimised."""

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
