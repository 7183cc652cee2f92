"""How the report names things: axis labels, table headers, number formats, point keys."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from astray.analysis.results import Advantage, Configuration, Estimate, Group, Headline
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


def mean_ci(metric: str, e: Estimate) -> str:
    """``0.9012 ± 0.0040``, or the mean alone when there is no interval (one seed)."""
    if math.isfinite(e.ci95):
        return f"{fmt(metric, e.mean)} ± {fmt(metric, e.ci95)}"
    return fmt(metric, e.mean)


def pct_interval(lo: float, hi: float) -> str:
    """``12.0%..30.5%``; an end that fell off the frontier is a dash."""
    def end(v: float) -> str:
        return "—" if math.isnan(v) else f"{100 * v:.1f}%"

    return f"{end(lo)}..{end(hi)}"


def seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def kind_label(c: Configuration) -> str:
    """What a baseline is: ``dense baseline`` (the whole budget), ``dense ×0.5``, ``random a=0.3``;
    "" for a searched configuration."""
    if c.is_dense:
        return "dense baseline" if c.is_dense_full else f"dense ×{c.budget:g}"
    if c.is_random:
        a = c.target_activation
        return f"random a={a:g}" if a is not None else "random"
    return ""


def config_name(c: Configuration, multi: bool = False) -> str:
    """How tables and keys name a configuration: its id (``sweep/id`` when sweeps are compared)."""
    return f"{c.sweep}/{c.config_id}" if multi else c.config_id


def saving_text(adv: Advantage) -> str:
    """``+33.3% [12.0%..50.1%]`` for the table; a dash when it cannot be read off the frontier."""
    if math.isnan(adv.energy_saving):
        return "—"
    interval = f" [{pct_interval(adv.energy_saving_lo, adv.energy_saving_hi)}]" if adv.n >= 2 else ""
    return f"{100 * adv.energy_saving:+.1f}%" + interval


def gain_text(adv: Advantage) -> str:
    """``+5.00 ± 1.20 pt``; the ± part only with an interval."""
    if math.isnan(adv.acc_gain_points):
        return "—"
    ci = f" ± {adv.acc_gain_ci95:.2f}" if math.isfinite(adv.acc_gain_ci95) else ""
    return f"{adv.acc_gain_points:+.2f}{ci} pt"


PHASE_WORDS = {"startup": "drawn at random (start-up)", "guided": "guided by the sampler"}
PAIRING = {"seed": "paired by seed", "order": "replicates paired in order: seeds not shared", "": "no pairs"}


def _interval_words(adv: Advantage) -> str:
    """``95% CI 3.1%..12.0%, 3 seeds paired by seed``, or why there is none."""
    if adv.n < 2:
        return "1 seed: no interval"
    how = PAIRING.get(adv.paired, adv.paired)
    if math.isnan(adv.energy_saving_lo):
        return f"no interval: too few seeds' dense runs rise, {seeds(adv.n)}"
    return f"95% CI {pct_interval(adv.energy_saving_lo, adv.energy_saving_hi)}, {seeds(adv.n)} {how}"


def headline_text(h: Headline, multi: bool = False) -> str:
    """The report's answer to "is AST better than simply training less?", in one sentence.

    The verdict follows the interval's low end (:attr:`Headline.beats`), and the sentence
    says the configuration is the best of k searched and not confirmed on fresh seeds."""
    where = f"{h.sweep}: " if multi else ""
    picked = f"; best of {h.picked_from} searched, unconfirmed" if h.picked_from > 1 else ""
    if picked and h.phases:
        picked += " (" + ", ".join(f"{n} {PHASE_WORDS.get(p, p)}" for p, n in sorted(h.phases.items(), reverse=True)) + ")"
    if h.dominates_frontier:
        return f"{where}{h.dominates_frontier} (on means{picked})."
    if not h.on_front and (h.best is None or h.advantage is None):
        return (f"{where}No searched configuration beats training less: none is on the front, and by how "
                f"much cannot be read ({h.reason}).")
    if h.best is None or h.advantage is None:
        return f"{where}No comparison with training less: {h.reason}."
    adv = h.advantage
    number = f"{100 * adv.energy_saving:.1f}%"
    ci = _interval_words(adv)
    if not h.on_front:
        by = f"; {h.dominated_by} dominates it" if h.dominated_by else ""
        conf = h.confirmation
        fresh = (f" On {seeds(conf.n)} never used in the search it saves {100 * conf.energy_saving:.1f}% "
                 f"({_interval_words(conf)}).") if conf is not None else ""
        if conf is None and h.confirmation_note:
            fresh = f" Confirmation not shown: {h.confirmation_note}."
        return (f"{where}No searched configuration beats training less: none is on the front. The closest, "
                f"{h.best.config_id}, saves {number} energy against dense at equal accuracy ({ci}){by}.{fresh}")
    if h.confirmation is not None:
        conf = h.confirmation
        fresh = f"{100 * conf.energy_saving:.1f}%"
        k = f"the best of {h.picked_from} searched" if h.picked_from > 1 else "the searched configuration"
        if h.beats:
            return (f"{where}best configuration {h.best.config_id} beats training less by {fresh} energy at equal "
                    f"accuracy, confirmed on {seeds(conf.n)} never used in the search ({_interval_words(conf)}); in "
                    f"the search, as {k}, it saved {number} ({ci}).")
        return (f"{where}Not confirmed: {h.best.config_id}, {k}, saved {number} energy at equal accuracy in the "
                f"search ({ci}); on {seeds(conf.n)} never used in the search it saves {fresh} "
                f"({_interval_words(conf)}).")
    if h.confirmation_note:
        picked += f"; confirmation not shown: {h.confirmation_note}"
    if h.beats:
        return (f"{where}best configuration {h.best.config_id} beats training less by {number} energy at "
                f"equal accuracy ({ci}{picked}).")
    if adv.energy_saving > 0:
        return (f"{where}Not shown to beat training less: the best, {h.best.config_id}, saves {number} energy "
                f"at equal accuracy, but {'its interval reaches 0' if adv.n >= 2 else 'with no interval'} "
                f"({ci}{picked}).")
    return (f"{where}No searched configuration beats training less: the best, {h.best.config_id}, saves "
            f"{number} energy at equal accuracy ({ci}).")


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """``ast.kp`` → ``kp`` unless two searched keys share a last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def point_label(c: Configuration, searched: Sequence[str], multi: bool) -> str:
    """One line of the figure's key: the configuration, its searched hyperparameters and seeds."""
    name = config_name(c, multi)
    reps = f"  ({seeds(c.n_good)})" if c.n_total > 1 else ""
    if c.is_baseline:
        return f"{name}  {kind_label(c)}{reps}"
    names = short_names(searched)
    items = [f"{names[k]}={fmt_param(c.params.get(k))}" for k in searched[:MAX_LABEL_PARAMS]]
    if len(searched) > MAX_LABEL_PARAMS:
        items.append(f"+{len(searched) - MAX_LABEL_PARAMS} more in front.csv")
    return f"{name}  " + ", ".join(items) + reps

