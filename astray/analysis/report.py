"""Pareto reports of sweeps: fronts, hypervolumes, savings against the dense baseline.

``python -m astray.report SWEEP_DIR [SWEEP_DIR ...] [--objectives val_acc:max,energy_j:min] [--out DIR]``

Reads one sweep's store, finished or still running (or several, compared), and writes
``pareto.png``/``.svg``, ``front.csv``, ``controller.png``, ``hypervolume.png``,
``report.html`` (self-contained) and ``report.md`` to ``SWEEP_DIR/report/`` (several
sweeps: ``<first SWEEP_DIR>/report-comparison/``) or ``--out``. The numbers come from
``astray.analysis``; this module only draws and writes them.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from astray.analysis import (EXCLUSION_REASONS, Analysis, Group, Objective, SweepData, TrialRecord, analyze,
                             objectives_from_manifest, parse_objectives, read_sweep)
from astray.errors import AstrayError, ConfigError, cli_entry

METRIC_LABELS = {
    "val_acc": "validation accuracy (best epoch)",
    "final_val_acc": "validation accuracy (last epoch)",
    "val_macro_f1": "validation macro-F1 (best epoch)",
    "energy_j": "training energy [J]",
    "flops": "training FLOPs executed",
    "time_s": "training wall time [s]",
    "activation_rate": "realised activation rate",
}
METRIC_UNITS = {"energy_j": "J", "flops": "FLOPs", "time_s": "s"}  # the others are fractions
ENERGY_SOURCES = {"model": "model estimate: seconds × watts", "nvml": "measured: NVML energy counter",
                  "nvml_power": "measured: NVML power samples", "rapl": "measured: RAPL"}
SWEEP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
SWEEP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
MAX_LABEL_PARAMS = 6  # hyperparameters in the figure's key per front point (front.csv has them all)
MAX_CONTROLLER_TRIALS = 10  # traces on controller.png before it stops being readable
DPI = 130
FILES = ("pareto.png", "pareto.svg", "front.csv", "controller.png", "hypervolume.png", "report.html", "report.md")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2 via cli_entry, not argparse's usage block
        usage = " ".join(self.format_usage().split()[1:])  # argparse wraps it; the error is one line
        raise ConfigError(f"{message} (usage: {usage})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m astray.report", description=__doc__.splitlines()[0])
    p.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="a sweep's store (<results_dir>/<name>/)")
    p.add_argument("--objectives", default=None, metavar="METRIC:max|min,...",
                   help="e.g. val_acc:max,energy_j:min (default: the objectives the sweep searched)")
    p.add_argument("--out", default=None, metavar="DIR", help="where the report goes (default: SWEEP_DIR/report/)")
    return p.parse_args(argv)


def load_sweeps(paths: Sequence[str]) -> list[SweepData]:
    """Read each sweep once; two sweeps with one folder name get their parent's name too."""
    resolved = [Path(p).resolve() for p in paths]
    for i, r in enumerate(resolved):
        if r in resolved[:i]:
            raise ConfigError(f"SWEEP_DIR {paths[i]!r} is given twice")
    sweeps = [read_sweep(p) for p in paths]
    names = [s.name for s in sweeps]
    return [replace(s, name=f"{r.parent.name}/{s.name}") if names.count(s.name) > 1 else s
            for s, r in zip(sweeps, resolved)]


def choose_objectives(text: str | None, sweeps: Sequence[SweepData]) -> tuple[tuple[Objective, ...], str]:
    """--objectives, else the objectives the (first) sweep searched; and a note saying which."""
    if text is not None:
        return parse_objectives(text), "objectives from --objectives"
    per = [objectives_from_manifest(s.manifest) for s in sweeps]
    if len(per[0]) < 2:
        raise ConfigError(f"sweep {sweeps[0].name!r} searched one objective ({per[0][0]}); "
                          "pass --objectives with two or more, e.g. val_acc:max,energy_j:min")
    note = "objectives from the sweep's search.objectives"
    if any(p != per[0] for p in per[1:]):
        note = (f"the sweeps searched different objectives; all are compared on {sweeps[0].name}'s "
                "(pass --objectives to choose)")
    return per[0], note


def axis_label(o: Objective, group: Group) -> str:
    """The metric with its unit, the energy source for energy, and which way is better."""
    label = METRIC_LABELS[o.metric]
    if o.metric == "energy_j":
        src = group.energy_source
        label += f" ({ENERGY_SOURCES.get(src, src)})" if src else " (source unknown)"
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


def _png_svg(fig: Figure, svg: bool = False) -> tuple[bytes, bytes | None]:
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

    Front points carry numbers; the key under each row gives each number's trial and
    searched hyperparameters. (Labels written next to the points collided as soon as two
    front points sat close, and ran off the axes at the extremes.)
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
                  labelled: Sequence[TrialRecord], multi: bool) -> None:
    if not any(f.points for f in g.fronts):
        ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center", transform=ax.transAxes)
    for k, f in enumerate(g.fronts):
        color, marker = SWEEP_COLORS[k % len(SWEEP_COLORS)], SWEEP_MARKERS[k % len(SWEEP_MARKERS)]
        tag = f" ({f.label})" if multi else ""
        rest = [t for t in f.points if not t.is_baseline]
        if rest:
            ax.scatter([t.metrics[xo.metric] for t in rest], [t.metrics[yo.metric] for t in rest],
                       color=color, marker=marker, alpha=0.25, s=36, label=f"trials{tag}")
        _front_line(ax, f.front, xo, yo, len(a.objectives), color, marker, f"front{tag}")
        for t in f.points:
            if t.is_baseline:
                ax.scatter([t.metrics[xo.metric]], [t.metrics[yo.metric]], marker="*", s=320, facecolor="gold",
                           edgecolor=color, linewidth=1.5, zorder=5, label=f"dense baseline{tag}")
    if g.combined:
        _front_line(ax, g.combined.front, xo, yo, len(a.objectives), "black", "o", "combined front", dashed=True)
    # Numbers sit toward the better corner, where (by definition of a front) no trial lies.
    dx, dy = (1 if xo.maximize else -1), (1 if yo.maximize else -1)
    at: dict[tuple[float, float], list[str]] = {}  # equal points (in this projection) share one label
    for n, t in enumerate(labelled, 1):
        at.setdefault((t.metrics[xo.metric], t.metrics[yo.metric]), []).append(str(n))
    for xy, numbers in at.items():
        ax.annotate(",".join(numbers), xy, xytext=(7 * dx, 7 * dy),
                    textcoords="offset points", fontsize=9, fontweight="bold",
                    ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top", zorder=6)
    ax.margins(0.08)
    ax.set_xlabel(axis_label(xo, g))
    ax.set_ylabel(axis_label(yo, g))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    title = "Pareto front: " + ", ".join(f.label for f in g.fronts if f.points or not a.split_by_energy_source)
    if a.split_by_energy_source:
        title += f"\nenergy source {g.energy_source} only"
    if len(a.objectives) > 2:
        title += f"\n({len(a.objectives)}-objective front, projected on two)"
    ax.set_title(title, fontsize=10)


def _front_line(ax: Any, front: Sequence[TrialRecord], xo: Objective, yo: Objective, n_obj: int, color: str,
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
    """Realised activation rate and threshold per epoch of the front's AST trials, with targets."""
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    ax_rate, ax_thr = fig.subplots(1, 2)
    epochs = {s.name: s.epochs for s in a.sweeps}
    trials = [t for t in a.front_trials() if not t.is_baseline and t.strategy != "dense"
              and t.trial_id in epochs[t.sweep]]
    shown = trials[:MAX_CONTROLLER_TRIALS]
    multi = len(a.sweeps) > 1
    for k, t in enumerate(shown):
        color = f"C{k % 10}"
        series = epochs[t.sweep][t.trial_id]
        name = f"{t.sweep}/{t.trial_id}" if multi else t.trial_id
        target = f", target {t.target_activation:.3g}" if t.target_activation is not None else ""
        ax_rate.plot(series.epoch, series.activation_rate, marker="o", color=color, label=f"{name}{target}")
        if t.target_activation is not None:
            ax_rate.axhline(t.target_activation, color=color, linestyle=":", linewidth=1.2)
        ax_thr.plot(series.epoch, series.threshold, marker="o", color=color, label=name)
    if not shown:
        for ax in (ax_rate, ax_thr):
            ax.text(0.5, 0.5, "no front trial with a controller trace", ha="center", va="center",
                    transform=ax.transAxes)
    ax_rate.set_xlabel("epoch")
    ax_rate.set_ylabel("realised activation rate (fraction of samples backpropagated)")
    ax_rate.set_title("activation rate per epoch (dotted: ast.target_activation)", fontsize=11)
    ax_thr.set_xlabel("epoch")
    ax_thr.set_ylabel("controller threshold at epoch end (significance units)")
    ax_thr.set_title("significance threshold per epoch", fontsize=11)
    if shown and all(v > 0 for t in shown for v in epochs[t.sweep][t.trial_id].threshold if not math.isnan(v)):
        ax_thr.set_yscale("log")
    for ax in (ax_rate, ax_thr):
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
        src = f"energy source {g.energy_source}; " if a.split_by_energy_source else ""
        ax.set_title(f"{src}reference ({ref})", fontsize=10)
        ax.grid(alpha=0.3)
        if any(f.curve for f in g.fronts):
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("hypervolume against trials finished", fontsize=12)
    return fig


def front_rows(a: Analysis) -> tuple[list[str], list[list[str]]]:
    """front.csv: every front shown (per sweep, and combined when several), one row per trial."""
    searched = list(dict.fromkeys(k for s in a.sweeps for k in s.searched))
    savings = {(sv.sweep, sv.trial_id): sv for s in a.sweeps for sv in s.savings}
    metrics = ["val_acc", "final_val_acc", "val_macro_f1", "energy_j", "flops", "time_s", "activation_rate"]
    header = (["front", "sweep", "trial_id", "is_baseline", "energy_source"] + metrics
              + ["energy_saving", "flops_saving", "time_saving", "val_acc_diff_points"] + searched)
    rows = []
    for g in a.groups:
        for f in list(g.fronts) + ([g.combined] if g.combined else []):
            for t in f.front:
                sv = savings.get(t.key)
                rows.append([f.label, t.sweep, t.trial_id, str(t.is_baseline), t.energy_source or ""]
                            + [repr(t.metrics[m]) for m in metrics]
                            + ([repr(sv.energy), repr(sv.flops), repr(sv.time), repr(sv.val_acc_points)]
                               if sv else [""] * 4)
                            + ["" if t.params.get(k) is None else str(t.params.get(k)) for k in searched])
    return header, rows


def document(a: Analysis, images: Sequence[tuple[str, str]]) -> list[tuple]:
    """The report as neutral blocks: ("h", level, text), ("p", text), ("ul", items),
    ("table", header, rows), ("img", file, caption). Markdown and HTML render the same blocks."""
    b: list[tuple] = [("h", 1, "astray report: " + ", ".join(s.name for s in a.sweeps)),
                      ("p", "objectives: " + ", ".join(f"{o.metric} ({'max' if o.maximize else 'min'})"
                                                       for o in a.objectives))]
    if a.notes:
        b.append(("ul", list(a.notes)))
    b.append(("h", 2, "Trials"))
    b.append(("table", ["sweep", "in store", "expected", "completed", "good (on the fronts' input)"]
              + [f"excluded: {r}" for r in EXCLUSION_REASONS] + ["excluded: other"],
              [[s.name, str(len(s.trials)), str(s.manifest.get("total_trials", "—")),
                str(sum(t.status == "completed" for t in s.trials)), str(len(s.good))]
               + [str(s.excluded_counts.get(r, 0)) for r in EXCLUSION_REASONS]
               + [str(sum(v for r, v in s.excluded_counts.items() if r not in EXCLUSION_REASONS))]
               for s in a.sweeps]))
    b.append(("p", "Unfinished (running/retrying), failed (diverged/error) and completed trials with a "
                   "NaN objective are left out of fronts and hypervolumes and counted above."))
    for g in a.groups:
        head = "Front" + (f" — energy source {g.energy_source}" if a.split_by_energy_source else "")
        b.append(("h", 2, head))
        ref = ", ".join(f"{o.metric} = {r:.6g}" for o, r in zip(a.objectives, g.reference))
        b.append(("p", f"Hypervolume reference point: {ref} ({g.reference_rule})."))
        fronts = list(g.fronts) + ([g.combined] if g.combined else [])
        b.append(("table", ["front", "good trials", "front size", hv_label(a.objectives)],
                  [[f.label, str(len(f.points)), str(len(f.front)), f"{f.hypervolume:.6g}"] for f in fronts]))
        for f in fronts:
            if len(fronts) > 1:
                b.append(("h", 3, "combined front" if f is g.combined else f"front of {f.label}"))
            searched = list(dict.fromkeys(k for t in f.front for k in next(
                s.searched for s in a.sweeps if s.name == t.sweep)))
            rows = [[(f"{t.sweep}/" if len(a.sweeps) > 1 else "") + t.trial_id
                     + (" (dense baseline)" if t.is_baseline else "")]
                    + [fmt(o.metric, t.metrics[o.metric]) for o in a.objectives]
                    + ["—" if t.is_baseline else fmt_param(t.params.get(k)) for k in searched] for t in f.front]
            b.append(("table", ["trial"] + [column(o) for o in a.objectives] + searched, rows)
                     if rows else ("p", "no trial on this front yet."))
    b.append(("h", 2, "Savings against the dense baseline"))
    on_front = {t.key for t in a.front_trials()}
    for s in a.sweeps:
        if len(a.sweeps) > 1:
            b.append(("h", 3, s.name))
        if s.baseline is None:
            b.append(("p", s.baseline_note))
            continue
        bl = s.baseline
        b.append(("p", f"baseline {bl.trial_id}: val_acc {fmt('val_acc', bl.metrics['val_acc'])}, "
                       f"energy {fmt('energy_j', bl.metrics['energy_j'])} J ({bl.energy_source}), "
                       f"FLOPs {fmt('flops', bl.metrics['flops'])}, time {fmt('time_s', bl.metrics['time_s'])} s. "
                       "Saving = 1 − trial / baseline; accuracy as the val_acc difference in percentage points."
                       + (f" {s.baseline_note}." if s.baseline_note else "")))
        rows = [[sv.trial_id + (" ★" if (sv.sweep, sv.trial_id) in on_front else ""),
                 pct(sv.energy) if sv.energy_comparable else "— (other energy source)",
                 pct(sv.flops), pct(sv.time), f"{sv.val_acc_points:+.2f} pt"]
                for sv in sorted(s.savings, key=lambda v: (math.isnan(v.energy), -v.energy, v.trial_id))]
        b.append(("table", ["trial (★ on a front)", "energy saving", "FLOPs saving", "time saving",
                            "accuracy vs baseline"], rows) if rows else ("p", "no completed trial besides it yet."))
    b.append(("h", 2, "Failed trials"))
    failed = [(s.name, t) for s in a.sweeps for t in s.failed]
    b.append(("table", ["sweep", "trial", "status", "error"],
              [[n, t.trial_id, t.status, (t.error or "").strip()] for n, t in failed])
             if failed else ("p", "none."))
    b.append(("h", 2, "Figures"))
    for file, caption in images:
        b.append(("img", file, caption))
    for s in a.sweeps:
        b += _setup_blocks(s.name, s.path, s.manifest, len(a.sweeps) > 1)
    return b


def _setup_blocks(name: str, path: str, m: Mapping[str, Any], multi: bool) -> list[tuple]:
    b: list[tuple] = [("h", 2, f"Setup of {name}" if multi else "Setup")]
    if not m:
        return b + [("p", f"{path}: no sweep.json manifest.")]
    cfg = m.get("config", {})
    search = cfg.get("search", {})
    b.append(("ul", [f"store: {path}", f"created: {m.get('created', '—')}",
                     f"astray {m.get('astray_version', '—')}, git commit {m.get('git_commit', '—')}",
                     f"Optuna study: {m.get('study_name', '—')}; command: {m.get('command', '—')}",
                     "search: " + ", ".join(f"{k}={v}" for k, v in search.items() if k not in ("space", "objectives")),
                     "sweep: " + ", ".join(f"{k}={v}" for k, v in cfg.get("sweep", {}).items()),
                     "resources: " + ", ".join(f"{k}={v}" for k, v in cfg.get("resources", {}).items()),
                     "hardware: " + ", ".join(f"{k}={v}" for k, v in m.get("hardware", {}).items()),
                     "libraries: " + ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())]))
    space = search.get("space", {})
    if space:
        b.append(("table", ["searched key", "distribution"],
                  [[k, ", ".join(f"{a}={v}" for a, v in spec.items())] for k, spec in space.items()]))
    return b


def to_markdown(blocks: Sequence[tuple]) -> str:
    """GitHub-flavoured Markdown; images are referenced by file name (they sit beside it)."""
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    out = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + blk[2])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "ul":
            out.append("\n".join(f"- {x}" for x in blk[1]))
        elif kind == "table":
            header, rows = blk[1], blk[2]
            lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{blk[2]}]({blk[1]})\n\n*{blk[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: Sequence[tuple], pngs: dict[str, bytes]) -> str:
    """A self-contained page: every image is a base64 data URI, no external file or style."""
    e = html.escape
    body = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            body.append(f"<h{blk[1]}>{e(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            body.append(f"<p>{e(blk[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in blk[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in blk[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(pngs[blk[1]]).decode("ascii")
            body.append(f'<figure><img alt="{e(blk[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(blk[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
             "figcaption{font-size:13px;color:#555}")
    title = e(blocks[0][2]) if blocks and blocks[0][0] == "h" else "astray report"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a dot-prefixed temporary name, then rename: a crash leaves no half file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(a: Analysis, out: Path) -> list[Path]:
    """Render every output into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    pareto_png, pareto_svg = _png_svg(pareto_figure(a), svg=True)
    pngs = {"pareto.png": pareto_png,
            "controller.png": _png_svg(controller_figure(a))[0],
            "hypervolume.png": _png_svg(hypervolume_figure(a))[0]}
    header, rows = front_rows(a)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header] + rows)
    images = [("pareto.png", "Pareto front: every good trial faded, fronts highlighted, the dense baseline a star"),
              ("hypervolume.png", "Hypervolume against trials finished"),
              ("controller.png", "Controller of the front's trials: realised activation rate and threshold per epoch")]
    blocks = document(a, images)
    files = {**pngs, "pareto.svg": pareto_svg, "front.csv": buf.getvalue().encode(),
             "report.md": to_markdown(blocks).encode(), "report.html": to_html(blocks, pngs).encode()}
    for name in FILES:
        write_atomic(out / name, files[name])
    return [out / n for n in FILES]


def summary_lines(a: Analysis) -> list[str]:
    """What the command prints: per sweep, the counts, each front's size and hypervolume."""
    lines = []
    for s in a.sweeps:
        excluded = ", ".join(f"{v} {r}" for r, v in s.excluded_counts.items() if v) or "none"
        lines.append(f"[astray] {s.name}: {len(s.trials)} trials, {len(s.good)} good, "
                     f"excluded: {excluded}" + (f"; {s.baseline_note}" if s.baseline_note else ""))
    for g in a.groups:
        src = f"[{g.energy_source}] " if a.split_by_energy_source else ""
        for f in list(g.fronts) + ([g.combined] if g.combined else []):
            lines.append(f"[astray] {src}front of {f.label}: {len(f.front)} of {len(f.points)} trials "
                         f"({', '.join(t.trial_id for t in f.front) or 'none'}), "
                         + hv_label(a.objectives).replace("hypervolume", f"hypervolume {f.hypervolume:.6g}", 1))
    return lines + [f"[astray] note: {n}" for n in a.notes]


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweeps = load_sweeps(args.sweep_dirs)
    objectives, source = choose_objectives(args.objectives, sweeps)
    a = analyze(sweeps, objectives)
    a = replace(a, notes=(source,) + a.notes)
    if args.out:
        out = Path(args.out)
    else:
        out = Path(args.sweep_dirs[0]) / ("report" if len(sweeps) == 1 else "report-comparison")
    if out.exists() and not out.is_dir():
        raise AstrayError(f"--out {str(out)!r} exists and is not a directory")
    try:
        written = write_report(a, out)
    except OSError as exc:
        raise AstrayError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}") from None
    for line in summary_lines(a):
        print(line)
    print(f"[astray] wrote {out}/: {' '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
