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

from astray.analysis.compute import EXCLUSION_REASONS
from astray.analysis.labels import column, fmt, fmt_param, hv_label, pct
from astray.analysis.model import Analysis
from astray.schema import BASELINE_FLAG, OBJECTIVE_METRICS


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
    """front.csv: every front shown (per sweep, and combined when several), one row per trial."""
    searched = list(dict.fromkeys(k for s in a.sweeps for k in s.searched))
    savings = {(sv.sweep, sv.trial_id): sv for s in a.sweeps for sv in s.savings}
    metrics = list(OBJECTIVE_METRICS)
    header = (["front", "sweep", "trial_id", BASELINE_FLAG, "energy_source"] + metrics
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


def document(a: Analysis, images: Sequence[tuple[str, str]]) -> list[Block]:
    """The report as neutral blocks: Heading(level, text), Paragraph(text), Bullets(items),
    Table(header, rows), Image(file, caption). Markdown and HTML render the same blocks."""
    b: list[Block] = [Heading(1, "astray report: " + ", ".join(s.name for s in a.sweeps)),
                      Paragraph("objectives: " + ", ".join(f"{o.metric} ({'max' if o.maximize else 'min'})"
                                                       for o in a.objectives))]
    if a.notes:
        b.append(Bullets(list(a.notes)))
    b.append(Heading(2, "Trials"))
    b.append(Table(["sweep", "in store", "expected", "completed", "good (on the fronts' input)"]
              + [f"excluded: {r}" for r in EXCLUSION_REASONS] + ["excluded: other"],
              [[s.name, str(len(s.trials)), str(s.manifest.get("total_trials", "—")),
                str(sum(t.status == "completed" for t in s.trials)), str(len(s.good))]
               + [str(s.excluded_counts.get(r, 0)) for r in EXCLUSION_REASONS]
               + [str(sum(v for r, v in s.excluded_counts.items() if r not in EXCLUSION_REASONS))]
               for s in a.sweeps]))
    b.append(Paragraph("Unfinished (running/retrying), failed (diverged/error) and completed trials with a "
                   "NaN objective are left out of fronts and hypervolumes and counted above."))
    for g in a.groups:
        head = "Front" + (f" — energy source {g.energy_label}" if a.split_by_energy_source else "")
        b.append(Heading(2, head))
        ref = ", ".join(f"{o.metric} = {r:.6g}" for o, r in zip(a.objectives, g.reference))
        b.append(Paragraph(f"Hypervolume reference point: {ref} ({g.reference_rule})."))
        fronts = list(g.fronts) + ([g.combined] if g.combined else [])
        b.append(Table(["front", "good trials", "front size", hv_label(a.objectives)],
                  [[f.label, str(len(f.points)), str(len(f.front)), f"{f.hypervolume:.6g}"] for f in fronts]))
        for f in fronts:
            if len(fronts) > 1:
                b.append(Heading(3, "combined front" if f is g.combined else f"front of {f.label}"))
            searched = list(dict.fromkeys(k for t in f.front for k in next(
                s.searched for s in a.sweeps if s.name == t.sweep)))
            rows = [[(f"{t.sweep}/" if len(a.sweeps) > 1 else "") + t.trial_id
                     + (" (dense baseline)" if t.is_baseline else "")]
                    + [fmt(o.metric, t.metrics[o.metric]) for o in a.objectives]
                    + ["—" if t.is_baseline else fmt_param(t.params.get(k)) for k in searched] for t in f.front]
            b.append(Table(["trial"] + [column(o) for o in a.objectives] + searched, rows)
                     if rows else Paragraph("no trial on this front yet."))
    b.append(Heading(2, "Savings against the dense baseline"))
    on_front = {t.key for t in a.front_trials()}
    for s in a.sweeps:
        if len(a.sweeps) > 1:
            b.append(Heading(3, s.name))
        if s.baseline is None:
            b.append(Paragraph(s.baseline_note))
            continue
        bl = s.baseline
        b.append(Paragraph(f"baseline {bl.trial_id}: val_acc {fmt('val_acc', bl.metrics['val_acc'])}, "
                       f"energy {fmt('energy_j', bl.metrics['energy_j'])} J ({bl.energy_source}), "
                       f"FLOPs {fmt('flops', bl.metrics['flops'])}, time {fmt('time_s', bl.metrics['time_s'])} s. "
                       "Saving = 1 − trial / baseline; accuracy as the val_acc difference in percentage points."
                       + (f" {s.baseline_note}." if s.baseline_note else "")))
        rows = [[sv.trial_id + (" ★" if (sv.sweep, sv.trial_id) in on_front else ""),
                 pct(sv.energy) if sv.energy_comparable else "— (other energy source or device sharing)",
                 pct(sv.flops), pct(sv.time), f"{sv.val_acc_points:+.2f} pt"]
                for sv in sorted(s.savings, key=lambda v: (math.isnan(v.energy), -v.energy, v.trial_id))]
        b.append(Table(["trial (★ on a front)", "energy saving", "FLOPs saving", "time saving",
                            "accuracy vs baseline"], rows) if rows else Paragraph("no completed trial besides it yet."))
    b.append(Heading(2, "Failed trials"))
    failed = [(s.name, t) for s in a.sweeps for t in s.failed]
    b.append(Table(["sweep", "trial", "status", "error"],
              [[n, t.trial_id, t.status, (t.error or "").strip()] for n, t in failed])
             if failed else Paragraph("none."))
    b.append(Heading(2, "Figures"))
    for file, caption in images:
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
