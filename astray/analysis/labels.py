"""How the report names things: axis labels, table headers, number formats, point keys."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from astray.analysis.model import Group, TrialRecord
from astray.schema import ENERGY_SOURCES, METRIC_LABELS, METRIC_UNITS, Objective

MAX_LABEL_PARAMS = 6  # hyperparameters in the figure's key per front point (front.csv has them all)


def axis_label(o: Objective, group: Group) -> str:
    """The metric with its unit, the energy source for energy, and which way is better."""
    label = METRIC_LABELS[o.metric]
    if o.metric == "energy_j":
        src = group.energy_source
        label += f" ({ENERGY_SOURCES.get(src, src)})" if src else " (source unknown)"
        if group.energy_shared:
            label += ", device shared with other jobs"
    return f"{label} {'↑' if o.maximize else '↓'} better"


def hv_label(objectives: Sequence[Objective]) -> str:
    """``hypervolume [J] (val_acc × energy_j)``: fractions (accuracies, rates) carry no unit."""
    units = [METRIC_UNITS[o.metric] for o in objectives if o.metric in METRIC_UNITS]
    return f"hypervolume [{' × '.join(units) or 'unitless'}] ({' × '.join(o.metric for o in objectives)})"


def column(o: Objective) -> str:
    """A table header: ``energy_j [J] (min)``."""
    unit = METRIC_UNITS.get(o.metric)
    return f"{o.metric}{f' [{unit}]' if unit else ''} ({'max' if o.maximize else 'min'})"


def fmt(metric: str, v: float) -> str:
    """A metric value at the precision its table column needs; NaN as a dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if metric == "flops":
        return f"{v:.3e}"
    if metric == "energy_j":
        return f"{v:.1f}"
    if metric == "time_s":
        return f"{v:.2f}"
    return f"{v:.4f}"


def fmt_param(v: Any) -> str:
    """A hyperparameter value, three significant digits for floats."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return "—" if v is None else str(v)


def pct(v: float) -> str:
    """A saving fraction as signed percent."""
    return "—" if math.isnan(v) else f"{100 * v:+.1f} %"


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """``ast.kp`` → ``kp`` unless two searched keys share a last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def point_label(t: TrialRecord, searched: Sequence[str], multi: bool) -> str:
    """One line of the figure's key: the trial and its searched hyperparameters."""
    name = f"{t.sweep}/{t.trial_id}" if multi else t.trial_id
    if t.is_baseline:
        return f"{name}  dense baseline"
    names = short_names(searched)
    items = [f"{names[k]}={fmt_param(t.params.get(k))}" for k in searched[:MAX_LABEL_PARAMS]]
    if len(searched) > MAX_LABEL_PARAMS:
        items.append(f"+{len(searched) - MAX_LABEL_PARAMS} more in front.csv")
    return f"{name}  " + ", ".join(items)

