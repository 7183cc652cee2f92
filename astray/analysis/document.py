"""The report as a document: typed blocks built from an Analysis, and two renderers.

:func:`document` decides what the report says; :func:`to_markdown` and :func:`to_html`
only decide how it looks, so ``report.md`` and ``report.html`` always say the same.
:func:`front_rows` is ``front.csv``.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from astray.analysis.compute import EXCLUSION_REASONS, dominated_on_means
from astray.analysis.labels import (
    column,
    config_name,
    fmt,
    fmt_param,
    gain_text,
    headline_text,
    hv_label,
    kind_label,
    mean_ci,
    pct,
    saving_text,
    seeds,
)
from astray.analysis.results import Analysis, Configuration, Front, SweepSummary
from astray.schema import BASELINE_FLAG, OBJECTIVE_METRICS, Objective
from astray.sweep.cost import KINDS as COST_KINDS

HOW_TO_READ = (
    "How to read the plot: every point is a configuration at the mean of its good seed replicates; "
    "with two or more seeds the error bars span the 95 % confidence interval on both axes. The dense "
    "baseline trained for its whole budget is the gold star; the same dense training cut to a share of the "
    "epochs is a diamond labelled with that share (dense ×0.5), and the dash-dotted line through the "
    "diamonds that no cheaper one beats is the dense frontier: what simply training less reaches at each "
    "energy (hollow diamonds lie below it). Grey triangles are random-subset baselines at the labelled "
    "activation. A searched configuration above or left of the frontier line beats training less; the "
    "table above reads both distances off the line, and the numbers on the plot match the key below it "
    "and the front tables."
)


VERDICT_METHOD = (
    "How the verdict is reached: the {accuracy}. Each sweep's dense configurations at several budgets "
    "(shares of training.epochs) make the dense frontier. A configuration's energy saving at equal accuracy "
    "(1 − its energy / the frontier's energy at its accuracy) and its accuracy gain at equal energy (its "
    "accuracy minus the frontier's, in points) are computed per seed, against the line through that seed's "
    "own dense runs, and their 95 % interval is Student's t over those paired values. The verdict is a win "
    "only when the interval's low end is above 0. A front configuration is not separable from one it "
    "dominates when a paired t-test (5 %) on every objective it is better on cannot tell them apart. The "
    "headline configuration is the best of the searched ones, so its number is optimistic unless it was "
    "confirmed on fresh seeds (docs/design.md §9). Energy is compared on one energy axis only."
)


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    file: str  # a PNG written beside the document
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def front_rows(a: Analysis) -> tuple[list[str], list[list[str]]]:
    """front.csv: every front shown (per sweep, and combined when several), one row per
    configuration. The metric columns hold replicate means (per trial, as before, with one seed)."""
    searched = list(dict.fromkeys(k for s in a.sweeps for k in s.searched))
    savings = {(sv.sweep, sv.trial_id): sv for s in a.sweeps for sv in s.savings}
    advantages = {k: adv for s in a.sweeps for k, adv in s.advantages.items()}
    metrics = list(OBJECTIVE_METRICS)
    header = (["front", "sweep", "trial_id", BASELINE_FLAG, "energy_source"] + metrics
              + ["energy_saving", "flops_saving", "time_saving", "accuracy_diff_points"]
              + ["config_id", "baseline_kind", "budget", "n_good", "n_total", "trial_ids"]
              + [f"{m}_{x}" for m in metrics for x in ("mean", "ci95")]
              + ["energy_saving_vs_frontier", "energy_saving_vs_frontier_lo", "energy_saving_vs_frontier_hi",
                 "acc_gain_vs_frontier_points", "acc_gain_vs_frontier_points_ci95", "not_separable_from",
                 "not_compared_with", "accuracy_metric", "paired_by"]
              + searched)
    rows = []
    for g in a.groups:
        for f in list(g.fronts) + ([g.combined] if g.combined else []):
            for c in f.front:
                sv = savings.get(c.key)
                adv = advantages.get(c.key)
                apart = f.not_separable.get(c.key, ())
                unknown = f.not_compared.get(c.key, ())
                rows.append([f.label, c.sweep, c.trial_id, str(c.is_baseline), c.energy_source or ""]
                            + [repr(c.metrics[m]) for m in metrics]
                            + ([repr(sv.energy), repr(sv.flops), repr(sv.time), repr(sv.accuracy_points)]
                               if sv else [""] * 4)
                            + [c.config_id, c.kind, repr(c.budget), str(c.n_good), str(c.n_total),
                               ";".join(c.trial_ids)]
                            + [repr(v) for m in metrics for v in (c.stats[m].mean, c.stats[m].ci95)]
                            + ([repr(adv.energy_saving), repr(adv.energy_saving_lo), repr(adv.energy_saving_hi),
                                repr(adv.acc_gain_points), repr(adv.acc_gain_ci95)] if adv else [""] * 5)
                            + [";".join(config_name(d, f is g.combined) for d in apart),
                               ";".join(config_name(d, f is g.combined) for d in unknown),
                               a.accuracy, adv.paired if adv else ""]
                            + ["" if c.params.get(k) is None else str(c.params.get(k)) for k in searched])
    return header, rows


def _name(c: Configuration, multi: bool, with_seeds: bool = True) -> str:
    """A configuration in a table: its id, what kind of baseline it is, its seeds when repeated."""
    kind = kind_label(c)
    reps = f", {c.n_good}/{c.n_total} seeds" if c.n_total > 1 and with_seeds else ""
    return config_name(c, multi) + (f" ({kind}{reps})" if kind else (f" ({reps[2:]})" if reps else ""))


def separability(f: Front, c: Configuration, multi: bool, objectives: Sequence[Objective]) -> str:
    """What the paired t-test says of a front configuration against those it dominates:
    ``not separable at 3 seeds from search-0002 (paired t-test, p ≥ 0.05)``, ``not compared
    with search-0004 (one seed)``, ``separable (paired t-test, p < 0.05)``, or
    ``dominates none`` — never "separable" where no test was made."""
    apart, unknown = f.not_separable.get(c.key, ()), f.not_compared.get(c.key, ())
    parts = []
    if apart:
        parts.append(f"not separable at {c.n_good} seeds from " + ", ".join(config_name(d, multi) for d in apart)
                     + " (paired t-test, p ≥ 0.05)")
    if unknown:
        parts.append("not compared with " + ", ".join(config_name(d, multi) for d in unknown)
                     + " (fewer than 2 seeds to pair)")
    skip = {x.key for x in apart + unknown}
    dominated = [d for d, _ in dominated_on_means(c, f.points, objectives) if d.key not in skip]
    if dominated:
        parts.append("separable from " + ", ".join(config_name(d, multi) for d in dominated)
                     + " (paired t-test, p < 0.05)")
    return "; ".join(parts) or "dominates none"


def _advantage_blocks(a: Analysis, s: SweepSummary) -> list[Block]:
    """One sweep's table: the dense budgets, then every searched and random configuration."""
    fronts = [f for g in a.groups for f in g.fronts if f.label == s.name]
    on_front = {c.key: f for f in fronts for c in f.front}
    b: list[Block] = []
    usable = [fr for fr in s.frontiers if fr.usable]
    for fr in s.frontiers:
        if not fr.points:
            continue
        dense = ", ".join(f"×{p.budget:g}" + ("" if p in fr.envelope else " (below the envelope)")
                          for p in sorted(fr.points, key=lambda p: p.budget))
        axis = f" on {fr.energy_axis}" if len(s.frontiers) > 1 else ""
        b.append(Paragraph(f"Dense frontier{axis}: budgets {dense}; " + (fr.note + "." if fr.note else
                           "between its points the frontier is a straight line; beyond its cheapest and "
                           "dearest point (in energy and in accuracy) nothing is read off it.")))
    if not usable and s.repeats <= 1:
        return b  # no frontier and no repeats: the front tables already say everything
    rows, notes = [], []
    frontier_notes = {fr.note for fr in s.frontiers if fr.note}
    dense = sorted((c for c in s.configurations if c.is_dense and c.n_good), key=lambda c: -c.budget)
    # Every searched and random configuration: the headline may name one off the front.
    others = [c for c in s.configurations if not c.is_dense and c.n_good]
    enveloped = {(fr.energy_axis, p.config_id) for fr in s.frontiers for p in fr.envelope}
    for c in dense + others:
        adv = s.advantages.get(c.key)
        point = "— (frontier point)" if (c.energy_axis, c.config_id) in enveloped else "— (below the frontier)"
        mark = separability(on_front[c.key], c, False, a.objectives) if c.key in on_front and not c.is_baseline else ""
        star = " ★" if c.key in on_front else ""
        rows.append([_name(c, False, with_seeds=False) + star, f"{c.n_good}/{c.n_total}",
                     mean_ci(a.accuracy, c.stats[a.accuracy]), mean_ci("energy_j", c.stats["energy_j"]),
                     point if c.is_dense else (saving_text(adv) if adv else "—"),
                     point if c.is_dense else (gain_text(adv) if adv else "—"), mark])
        if adv is not None and adv.note and adv.note not in frontier_notes:
            notes.append(f"{config_name(c)}: {adv.note}")
    if rows:
        b.append(Table(["configuration (★ on a front)", "seeds (good/all)", f"{a.accuracy} mean ± 95 % CI",
                        "energy_j [J] mean ± 95 % CI", "energy saving at equal accuracy [95 % CI]",
                        "accuracy gain at equal energy ± 95 % CI", "separability"], rows))
    if notes:
        b.append(Bullets(notes))
    if not rows:
        b.append(Paragraph("no configuration with a good replicate yet."))
    return b


def cost_blocks(sweeps: Sequence[SweepSummary]) -> list[Block]:
    """What each sweep itself cost (``sweep.json``'s ``cost``, astray.sweep.cost), when recorded."""
    rows = []
    for s in sweeps:
        cost = s.manifest.get("cost")
        if not cost:
            continue
        kinds = cost["by_kind"]
        wall = cost.get("wall_s")
        rows.append([s.name, cost.get("energy_source") or "—"]
                    + [f"{kinds[k]['energy_j'] + kinds[k]['val_energy_j']:.4g} J ({kinds[k]['trials']})"
                       for k in COST_KINDS]
                    + [f"{cost['total_energy_j']:.4g} J", "—" if wall is None else f"{wall / 60:.1f} min",
                       f"{cost['early_stop_saved_j']:.4g} J ({100 * cost['early_stop_saved_share']:.0f} %), "
                       f"{cost['early_stop_epochs_not_run']} epochs"])
    if not rows:
        return []
    return [Heading(2, "What the sweep cost"),
            Table(["sweep", "energy source"] + [f"{k} (trials)" for k in COST_KINDS]
                  + ["total", "wall time", "early stopping saved (estimate)"], rows),
            Paragraph("Training and evaluation energy of every trial in the store, by kind; wall time from the "
                      "first trial's start to the last one's end. Early stopping's saving is an estimate: each "
                      "stopped trial's epochs not run × its own measured energy per epoch, and a replicate never "
                      "started at its siblings' mean; the share is of what the sweep would have spent without it.")]


def document(a: Analysis, images: Sequence[tuple[str, str]]) -> list[Block]:
    """The report as neutral blocks: Heading(level, text), Paragraph(text), Bullets(items),
    Table(header, rows), Image(file, caption). Markdown and HTML render the same blocks."""
    b: list[Block] = [Heading(1, "astray report: " + ", ".join(s.name for s in a.sweeps))]
    multi = len(a.sweeps) > 1
    b.append(Heading(2, "Verdict: is AST better than simply training less?"))
    b.append(Bullets([headline_text(h, multi) for h in a.headlines]))
    b.append(Paragraph(VERDICT_METHOD.format(accuracy=a.accuracy_note or a.accuracy)))
    pareto = [(f, c) for f, c in images if f.startswith("pareto")]
    for file, caption in pareto[:1]:
        b.append(Image(file, caption))
    b.append(Paragraph("objectives: " + ", ".join(f"{o.metric} ({'max' if o.maximize else 'min'})"
                                                   for o in a.objectives)))
    if a.notes:
        b.append(Bullets(list(a.notes)))
    b.append(Heading(2, "Trials"))
    b.append(Table(["sweep", "in store", "expected", "completed", "good (on the fronts' input)", "configurations",
                    "repeats"]
              + [f"excluded: {r}" for r in EXCLUSION_REASONS] + ["excluded: other"],
              [[s.name, str(len(s.trials)), str(s.manifest.get("total_trials", "—")),
                str(sum(t.status == "completed" for t in s.trials)), str(len(s.good)),
                str(len({c.config_id for c in s.configurations})), str(s.repeats)]
               + [str(s.excluded_counts.get(r, 0)) for r in EXCLUSION_REASONS]
               + [str(sum(v for r, v in s.excluded_counts.items() if r not in EXCLUSION_REASONS))]
               for s in a.sweeps]))
    b.append(Paragraph("Unfinished (running/retrying), failed (diverged/error) and completed trials with a "
                   "NaN objective are left out of fronts and hypervolumes and counted above. Seed replicates "
                   "of one configuration (repeats) make one point, at their mean (docs/design.md §9)."))
    b += cost_blocks(a.sweeps)
    for g in a.groups:
        head = "Front" + (f" — energy source {g.energy_label}" if a.split_by_energy_source else "")
        b.append(Heading(2, head))
        ref = ", ".join(f"{o.metric} = {r:.6g}" for o, r in zip(a.objectives, g.reference))
        b.append(Paragraph(f"Hypervolume reference point: {ref} ({g.reference_rule})."))
        fronts = list(g.fronts) + ([g.combined] if g.combined else [])
        b.append(Table(["front", "good trials", "configurations", "front size", hv_label(a.objectives)],
                  [[f.label, str(f.good_trials), str(len(f.points)), str(len(f.front)), f"{f.hypervolume:.6g}"]
                   for f in fronts]))
        for f in fronts:
            if len(fronts) > 1:
                b.append(Heading(3, "combined front" if f is g.combined else f"front of {f.label}"))
            searched = list(dict.fromkeys(k for c in f.front for k in next(
                s.searched for s in a.sweeps if s.name == c.sweep)))
            repeated = any(c.n_total > 1 for c in f.front)
            rows = [[_name(c, len(a.sweeps) > 1)]
                    + [mean_ci(o.metric, c.stats[o.metric]) for o in a.objectives]
                    + ([separability(f, c, f is g.combined, a.objectives)] if repeated else [])
                    + ["—" if c.is_baseline else fmt_param(c.params.get(k)) for k in searched] for c in f.front]
            b.append(Table(["configuration"] + [column(o) + (" mean ± 95 % CI" if repeated else "")
                                                for o in a.objectives]
                           + (["separability"] if repeated else []) + searched, rows)
                     if rows else Paragraph("no configuration on this front yet."))
    b.append(Heading(2, "Advantage over training less"))
    for s in a.sweeps:
        if multi:
            b.append(Heading(3, s.name))
        b += _advantage_blocks(a, s)
    b.append(Paragraph(HOW_TO_READ))
    b.append(Heading(2, "Savings against the dense baseline"))
    on_front = {c.key for c in a.front_configs()}
    for s in a.sweeps:
        if len(a.sweeps) > 1:
            b.append(Heading(3, s.name))
        if s.baseline is None:
            b.append(Paragraph(s.baseline_note))
            continue
        bl = s.baseline
        reps = f" (mean of {seeds(bl.n_good)})" if bl.n_good > 1 else ""
        b.append(Paragraph(f"baseline {bl.config_id}{reps}: {a.accuracy} {fmt(a.accuracy, bl.metrics[a.accuracy])}, "
                       f"energy {fmt('energy_j', bl.metrics['energy_j'])} J ({bl.energy_source}), "
                       f"FLOPs {fmt('flops', bl.metrics['flops'])}, time {fmt('time_s', bl.metrics['time_s'])} s. "
                       f"Saving = 1 − configuration / baseline, on replicate means; accuracy as the {a.accuracy} "
                       "difference in percentage points."
                       + (f" {s.baseline_note}." if s.baseline_note else "")))
        names = {c.key: _name(c, False) for c in s.configurations}
        rows = [[names.get((sv.sweep, sv.trial_id), sv.trial_id)
                 + (" ★" if (sv.sweep, sv.trial_id) in on_front else ""),
                 pct(sv.energy) if sv.energy_comparable else "— (other energy source or device sharing)",
                 pct(sv.flops), pct(sv.time), f"{sv.accuracy_points:+.2f} pt"]
                for sv in sorted(s.savings, key=lambda v: (math.isnan(v.energy), -v.energy, v.trial_id))]
        b.append(Table(["configuration (★ on a front)", "energy saving", "FLOPs saving", "time saving",
                            "accuracy vs baseline"], rows) if rows else Paragraph("no completed trial besides it yet."))
    b.append(Heading(2, "Failed trials"))
    failed = [(s.name, t) for s in a.sweeps for t in s.failed]
    b.append(Table(["sweep", "trial", "status", "error"],
              [[n, t.trial_id, t.status, (t.error or "").strip()] for n, t in failed])
             if failed else Paragraph("none."))
    b.append(Heading(2, "Figures"))
    for file, caption in [im for im in images if im not in pareto[:1]]:
        b.append(Image(file, caption))
    for s in a.sweeps:
        b += _setup_blocks(s.name, s.path, s.manifest, len(a.sweeps) > 1)
    return b


def _setup_blocks(name: str, path: str, m: Mapping[str, Any], multi: bool) -> list[Block]:
    b: list[Block] = [Heading(2, f"Setup of {name}" if multi else "Setup")]
    if not m:
        return b + [Paragraph(f"{path}: no sweep.json manifest.")]
    cfg = m.get("config", {})
    search = cfg.get("search", {})
    b.append(Bullets([f"store: {path}", f"created: {m.get('created', '—')}",
                     f"astray {m.get('astray_version', '—')}, git commit {m.get('git_commit', '—')}",
                     f"Optuna study: {m.get('study_name', '—')}; command: {m.get('command', '—')}",
                     "search: " + ", ".join(f"{k}={v}" for k, v in search.items() if k not in ("space", "objectives")),
                     "sweep: " + ", ".join(f"{k}={v}" for k, v in cfg.get("sweep", {}).items()),
                     "resources: " + ", ".join(f"{k}={v}" for k, v in cfg.get("resources", {}).items()),
                     "hardware: " + ", ".join(f"{k}={v}" for k, v in m.get("hardware", {}).items()),
                     "libraries: " + ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())]))
    space = search.get("space", {})
    if space:
        b.append(Table(["searched key", "distribution"],
                  [[k, ", ".join(f"{a}={v}" for a, v in spec.items())] for k, spec in space.items()]))
    return b


def to_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; images are referenced by file name (they sit beside it)."""
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    out = []
    for blk in blocks:
        if isinstance(blk, Heading):
            out.append("#" * blk.level + " " + blk.text)
        elif isinstance(blk, Paragraph):
            out.append(blk.text)
        elif isinstance(blk, Bullets):
            out.append("\n".join(f"- {x}" for x in blk.items))
        elif isinstance(blk, Table):
            lines = ["| " + " | ".join(cell(h) for h in blk.header) + " |", "|" + "---|" * len(blk.header)]
            lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in blk.rows]
            out.append("\n".join(lines))
        elif isinstance(blk, Image):
            out.append(f"![{blk.caption}]({blk.file})\n\n*{blk.caption}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: Sequence[Block], pngs: dict[str, bytes]) -> str:
    """A self-contained page: every image is a base64 data URI, no external file or style."""
    e = html.escape
    body = []
    for blk in blocks:
        if isinstance(blk, Heading):
            body.append(f"<h{blk.level}>{e(blk.text)}</h{blk.level}>")
        elif isinstance(blk, Paragraph):
            body.append(f"<p>{e(blk.text)}</p>")
        elif isinstance(blk, Bullets):
            body.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in blk.items) + "</ul>")
        elif isinstance(blk, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in blk.header)
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in blk.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(blk, Image):
            data = base64.b64encode(pngs[blk.file]).decode("ascii")
            body.append(f'<figure><img alt="{e(blk.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(blk.caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
             "figcaption{font-size:13px;color:#555}")
    title = e(blocks[0].text) if blocks and isinstance(blocks[0], Heading) else "astray report"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
