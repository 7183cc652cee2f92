"""The report's figures, drawn from an :class:`~astray.analysis.results.Analysis`.

Only matplotlib's object API (``Figure``), never pyplot: no global state, no GUI backend.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from astray.analysis.frontier import upper_envelope
from astray.analysis.labels import axis_label, hv_label, point_label
from astray.analysis.results import Analysis, Configuration, Front, FrontierPoint, Group
from astray.schema import METRIC_UNITS, Objective

SWEEP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
SWEEP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
MAX_CONTROLLER_TRIALS = 10  # traces on controller.png before it stops being readable
BASELINE_GREY = "0.45"  # random baselines: their own grey triangles, whatever the sweep's colour
DPI = 130


# matplotlib logs "findfont: Font family ... not found" for each mathtext family it falls
# back from; after ray.init a root handler prints them (21 lines at the end of make run).
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


def png_svg(fig: Figure, svg: bool = False) -> tuple[bytes, bytes | None]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    out_svg = None
    if svg:
        sbuf = io.BytesIO()
        fig.savefig(sbuf, format="svg", bbox_inches="tight")
        out_svg = sbuf.getvalue()
    return buf.getvalue(), out_svg


def pareto_figure(a: Analysis) -> Figure:
    """One row per energy-source group, one panel per objective pair, and a key beneath.

    Every point is a configuration at its replicates' means, with 95 % error bars on both
    axes when it has two or more good seeds. Front points carry numbers; the key under
    each row gives each number's configuration and searched hyperparameters. (Labels
    written next to the points collided as soon as two front points sat close, and ran
    off the axes at the extremes.) The dense budgets are drawn as the frontier of training
    less (docs/design.md §9): their upper envelope in the energy-vs-accuracy panel, a line
    in budget order in the others; random baselines are grey triangles.
    """
    pairs = [(i, j) for i in range(len(a.objectives)) for j in range(i + 1, len(a.objectives))]
    labelled = [g.combined.front if g.combined else (g.fronts[0].front if g.fronts else ()) for g in a.groups]
    key_h = [0.2 * (len(lab) + 1.5) for lab in labelled]  # inches: one line per front point
    fig = Figure(figsize=(7.5 * len(pairs), sum(5.2 + h for h in key_h)))
    grid = fig.add_gridspec(2 * len(a.groups), len(pairs),
                            height_ratios=[r for h in key_h for r in (5.2, h)], hspace=0.35)
    searched = {s.name: s.searched for s in a.sweeps}
    multi = len(a.sweeps) > 1
    for row, g in enumerate(a.groups):
        for col, (yi, xi) in enumerate(pairs):
            ax = fig.add_subplot(grid[2 * row, col])
            _pareto_panel(ax, a, g, a.objectives[xi], a.objectives[yi], labelled[row], multi)
        key = fig.add_subplot(grid[2 * row + 1, :])
        key.axis("off")
        lines = [f"{n:>2}  {point_label(t, searched[t.sweep], multi)}" for n, t in enumerate(labelled[row], 1)]
        which = "combined front" if g.combined else "front"
        key.text(0, 1, f"{which} (numbered on the plot):\n" + "\n".join(lines) if lines else "no front yet",
                 transform=key.transAxes, va="top", ha="left", family="monospace", fontsize=8)
    return fig


def _pareto_panel(ax: Any, a: Analysis, g: Group, xo: Objective, yo: Objective,
                  labelled: Sequence[Configuration], multi: bool) -> None:
    if not any(f.points for f in g.fronts):
        ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center", transform=ax.transAxes)
    # Numbers sit toward the better corner, where (by definition of a front) no point lies;
    # baseline labels sit toward the worse corner.
    dx, dy = (1 if xo.maximize else -1), (1 if yo.maximize else -1)
    for k, f in enumerate(g.fronts):
        color, marker = SWEEP_COLORS[k % len(SWEEP_COLORS)], SWEEP_MARKERS[k % len(SWEEP_MARKERS)]
        tag = f" ({f.label})" if multi else ""
        rest = [c for c in f.points if not c.is_baseline]
        if rest:
            what = "configurations" if any(c.n_total > 1 for c in f.points) else "trials"
            ax.scatter([c.metrics[xo.metric] for c in rest], [c.metrics[yo.metric] for c in rest],
                       color=color, marker=marker, alpha=0.25, s=36, label=f"{what}{tag}")
            _error_bars(ax, rest, xo, yo, color, alpha=0.35)
        _front_line(ax, f.front, xo, yo, len(a.objectives), color, marker, f"front{tag}")
        _error_bars(ax, [c for c in f.front if not c.is_baseline], xo, yo, color, alpha=0.9)
        _dense(ax, f, xo, yo, color, tag, (-dx, -dy))
        _random(ax, f, xo, yo, tag, (-dx, -dy))
    if g.combined:
        _front_line(ax, g.combined.front, xo, yo, len(a.objectives), "black", "o", "combined front", dashed=True)
    at: dict[tuple[float, float], list[str]] = {}  # equal points (in this projection) share one label
    for n, c in enumerate(labelled, 1):
        at.setdefault((c.metrics[xo.metric], c.metrics[yo.metric]), []).append(str(n))
    for xy, numbers in at.items():
        ax.annotate(",".join(numbers), xy, xytext=(7 * dx, 7 * dy),
                    textcoords="offset points", fontsize=9, fontweight="bold",
                    ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top", zorder=6)
    ax.margins(0.08)
    _clip_fractions(ax, xo, yo)
    ax.set_xlabel(axis_label(xo, g))
    ax.set_ylabel(axis_label(yo, g))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    title = "Pareto front: " + ", ".join(f.label for f in g.fronts if f.points or not a.split_by_energy_source)
    if a.split_by_energy_source:
        title += f"\nenergy source {g.energy_label} only"
    if len(a.objectives) > 2:
        title += f"\n({len(a.objectives)}-objective front, projected on two)"
    ax.set_title(title, fontsize=10)


def _clip_fractions(ax: Any, xo: Objective, yo: Objective) -> None:
    """Accuracies and rates live in [0, 1]: a wide interval (2 seeds: t = 12.7) must not
    stretch the axis past what a value can be and squash the points together."""
    for o, get, put in ((xo, ax.get_xlim, ax.set_xlim), (yo, ax.get_ylim, ax.set_ylim)):
        if o.metric not in METRIC_UNITS:
            lo, hi = get()
            put(max(lo, -0.02), min(hi, 1.02))


def _error_bars(ax: Any, configs: Sequence[Configuration], xo: Objective, yo: Objective, color: str,
                alpha: float) -> None:
    """Mean ± 95 % half-width on both axes, for configurations with two or more good seeds."""
    shown = [c for c in configs if c.n_good >= 2]
    if not shown:
        return
    def half(c: Configuration, metric: str) -> float:
        h = c.stats[metric].ci95
        return h if math.isfinite(h) else 0.0

    ax.errorbar([c.metrics[xo.metric] for c in shown], [c.metrics[yo.metric] for c in shown],
                xerr=[half(c, xo.metric) for c in shown], yerr=[half(c, yo.metric) for c in shown],
                fmt="none", ecolor=color, elinewidth=1.0, capsize=2.5, alpha=alpha, zorder=2)


def _label_points(ax: Any, points: Sequence[tuple[float, float, str]], away: tuple[int, int], color: str) -> None:
    for x, y, text in points:
        ax.annotate(text, (x, y), xytext=(6 * away[0], 6 * away[1]), textcoords="offset points", fontsize=7,
                    color=color, ha="left" if away[0] > 0 else "right", va="bottom" if away[1] > 0 else "top",
                    zorder=6)


def _dense(ax: Any, f: Front, xo: Objective, yo: Objective, color: str, tag: str, away: tuple[int, int]) -> None:
    """The dense budgets: the frontier of training less, and the full-budget baseline's gold star."""
    dense = sorted((c for c in f.points if c.is_dense), key=lambda c: c.budget)
    xy = {c.key: (c.metrics[xo.metric], c.metrics[yo.metric]) for c in dense}
    on = {c.key for c in dense}
    if len(dense) > 1:
        accuracy = {xo.metric, yo.metric} & {"val_acc", "test_acc"}
        if "energy_j" in {xo.metric, yo.metric} and accuracy:
            # The upper envelope, drawn where it is defined: from its cheapest to its dearest point.
            by_id = {c.config_id: c for c in dense}
            env = upper_envelope([FrontierPoint(c.stats["energy_j"], c.stats[min(accuracy)], c.config_id, c.budget)
                                  for c in dense])
            on = {by_id[p.config_id].key for p in env}
            line = [xy[by_id[p.config_id].key] for p in env]
            style, label = "-.", f"dense frontier (training less){tag}"
        else:
            line, style, label = [xy[c.key] for c in dense], ":", f"dense budgets{tag}"
        ax.plot([p[0] for p in line], [p[1] for p in line], color=color, linestyle=style, linewidth=1.6,
                zorder=3, label=label)
    partial = [c for c in dense if not c.is_dense_full]
    if partial:  # filled on the envelope, hollow below it
        ax.scatter([xy[c.key][0] for c in partial], [xy[c.key][1] for c in partial], marker="D", s=44,
                   facecolor=[color if c.key in on else "white" for c in partial], edgecolor="black",
                   linewidth=0.8, zorder=4)
        _error_bars(ax, partial, xo, yo, color, alpha=0.8)
        _label_points(ax, [(*xy[c.key], f"dense ×{c.budget:g}") for c in dense], away, color)
    for c in dense:
        if c.is_dense_full:
            ax.scatter([xy[c.key][0]], [xy[c.key][1]], marker="*", s=320, facecolor="gold",
                       edgecolor=color, linewidth=1.5, zorder=5, label=f"dense baseline{tag}")
            _error_bars(ax, [c], xo, yo, color, alpha=0.8)


def _random(ax: Any, f: Front, xo: Objective, yo: Objective, tag: str, away: tuple[int, int]) -> None:
    """Random-subset baselines: grey triangles labelled with their activation."""
    rnd = [c for c in f.points if c.is_random]
    if not rnd:
        return
    ax.scatter([c.metrics[xo.metric] for c in rnd], [c.metrics[yo.metric] for c in rnd], marker="^", s=60,
               color=BASELINE_GREY, edgecolor="black", linewidth=0.6, zorder=4, label=f"random baseline{tag}")
    _error_bars(ax, rnd, xo, yo, BASELINE_GREY, alpha=0.8)
    _label_points(ax, [(c.metrics[xo.metric], c.metrics[yo.metric],
                        f"random a={c.target_activation:g}" if c.target_activation is not None else "random")
                       for c in rnd], away, BASELINE_GREY)


def _front_line(ax: Any, front: Sequence[Configuration], xo: Objective, yo: Objective, n_obj: int, color: str,
                marker: str, label: str, dashed: bool = False) -> None:
    if not front:
        return
    pts = sorted((t.metrics[xo.metric], t.metrics[yo.metric]) for t in front)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if dashed:  # the combined front: rings around the sweeps' own markers
        ax.scatter(xs, ys, s=170, facecolor="none", edgecolor="black", linewidth=1.2, zorder=3, label=label)
    else:
        ax.scatter(xs, ys, s=70, color=color, marker=marker, edgecolor="black", linewidth=1.0, zorder=4,
                   label=label)
    if n_obj == 2:
        # The staircase bounds the dominated region: between two front points sorted by x,
        # the best y reachable is the one of the point on the better side of x.
        ax.plot(xs, ys, color=color, linestyle="--" if dashed else "-", linewidth=1.3,
                drawstyle="steps-pre" if xo.maximize else "steps-post", zorder=3)


def controller_figure(a: Analysis) -> Figure:
    """Realised activation rate and threshold of the front's AST configurations (one
    replicate each), with targets: step by step where the store has the trial's trace
    (steps/), else per epoch."""
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    ax_rate, ax_thr = fig.subplots(1, 2)
    epochs = {s.name: s.epochs for s in a.sweeps}
    steps = {s.name: s.steps for s in a.sweeps}
    def trained_sparse(c) -> bool:  # a dense epoch or step trains every sample: activation 1
        e, s = epochs[c.sweep].get(c.trial_id), steps[c.sweep].get(c.trial_id)
        return any(rate < 1 for rate in (e.activation_rate if e else ()) + (s.activation if s else ()))

    trials = [c.representative for c in a.front_configs() if not c.is_baseline and trained_sparse(c)]
    shown = trials[:MAX_CONTROLLER_TRIALS]
    multi = len(a.sweeps) > 1
    by_step = bool(shown) and all(t.trial_id in steps[t.sweep] for t in shown)
    thresholds: list[float] = []
    for k, t in enumerate(shown):
        color = f"C{k % 10}"
        name = f"{t.sweep}/{t.trial_id}" if multi else t.trial_id
        target = f", target {t.target_activation:.3g}" if t.target_activation is not None else ""
        if by_step:
            trace = steps[t.sweep][t.trial_id]
            x, rate, thr, style = trace.progress, trace.activation, trace.threshold, {"linewidth": 1.0}
        else:
            series = epochs[t.sweep][t.trial_id]
            x, rate, thr, style = series.epoch, series.activation_rate, series.threshold, {"marker": "o"}
        ax_rate.plot(x, rate, color=color, label=f"{name}{target}", **style)
        if t.target_activation is not None:
            ax_rate.axhline(t.target_activation, color=color, linestyle=":", linewidth=1.2)
        ax_thr.plot(x, thr, color=color, label=name, **style)
        thresholds += [v for v in thr if not math.isnan(v)]
    if not shown:
        for ax in (ax_rate, ax_thr):
            ax.text(0.5, 0.5, "no front trial with a controller trace", ha="center", va="center",
                    transform=ax.transAxes)
    unit = "step" if by_step else "epoch"
    x_label = "epoch (fractional: one point per recorded step)" if by_step else "epoch"
    ax_rate.set_xlabel(x_label)
    ax_rate.set_ylabel("realised activation rate (fraction of samples backpropagated)")
    ax_rate.set_title(f"activation rate per {unit} (dotted: ast.target_activation)", fontsize=11)
    ax_thr.set_xlabel(x_label)
    ax_thr.set_ylabel(f"controller threshold ({'after each update' if by_step else 'at epoch end'}; significance units)")
    ax_thr.set_title(f"significance threshold per {unit}", fontsize=11)
    if thresholds and all(v > 0 for v in thresholds):
        ax_thr.set_yscale("log")
    for ax in (ax_rate, ax_thr):
        if not by_step:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="best")
    note = f" (first {MAX_CONTROLLER_TRIALS} of {len(trials)})" if len(trials) > len(shown) else ""
    fig.suptitle(f"controller of the front's trials{note}; dense epochs (warm-up) run at rate 1", fontsize=11)
    return fig


def hypervolume_figure(a: Analysis) -> Figure:
    """Hypervolume after each finished trial, one line per sweep, one panel per group."""
    fig = Figure(figsize=(7.5, 4.6 * len(a.groups)), layout="constrained")
    axes = fig.subplots(len(a.groups), 1, squeeze=False)
    for g, (ax,) in zip(a.groups, axes):
        for k, f in enumerate(g.fronts):
            if f.curve and (f.points or not a.split_by_energy_source):
                ax.plot([c[0] for c in f.curve], [c[1] for c in f.curve], drawstyle="steps-post", marker="o",
                        color=SWEEP_COLORS[k % len(SWEEP_COLORS)], label=f.label)
        if not any(f.curve for f in g.fronts):
            ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("trials finished (completed, diverged or error; by ended_at)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(hv_label(a.objectives))
        ref = ", ".join(f"{o.metric}={r:.4g}" for o, r in zip(a.objectives, g.reference))
        src = f"energy source {g.energy_label}; " if a.split_by_energy_source else ""
        ax.set_title(f"{src}reference ({ref})", fontsize=10)
        ax.grid(alpha=0.3)
        if any(f.curve for f in g.fronts):
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("hypervolume against trials finished", fontsize=12)
    return fig

