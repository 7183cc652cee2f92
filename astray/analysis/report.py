"""Write a report: every figure, ``front.csv``, ``report.md`` and ``report.html``, atomically.

The numbers come from ``astray.analysis.compute``; this module renders them through
``figures`` and ``document`` and writes the files. The command is ``astray.cli.report``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from astray.analysis.document import document, front_rows, to_html, to_markdown
from astray.analysis.figures import controller_figure, hypervolume_figure, pareto_figure, png_svg
from astray.analysis.labels import config_name, headline_text, hv_label
from astray.analysis.results import Analysis
from astray.io import write_bytes

FILES = ("pareto.png", "pareto.svg", "front.csv", "controller.png", "hypervolume.png", "report.html", "report.md")


def write_report(a: Analysis, out: Path) -> list[Path]:
    """Render every output into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    pareto_png, pareto_svg = png_svg(pareto_figure(a), svg=True)
    pngs = {"pareto.png": pareto_png,
            "controller.png": png_svg(controller_figure(a))[0],
            "hypervolume.png": png_svg(hypervolume_figure(a))[0]}
    header, rows = front_rows(a)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header] + rows)
    images = [("pareto.png", "Pareto front: every configuration at its replicate mean (error bars: 95 % CI), "
                             "fronts highlighted, the dense baseline a star, the dense frontier (training less) "
                             "a dash-dotted line, random baselines grey triangles"),
              ("hypervolume.png", "Hypervolume against trials finished"),
              ("controller.png", "Controller of the front's trials: realised activation rate and threshold, "
                                "step by step where the store has the trace (steps/), else per epoch")]
    blocks = document(a, images)
    files = {**pngs, "pareto.svg": pareto_svg, "front.csv": buf.getvalue().encode(),
             "report.md": to_markdown(blocks).encode(), "report.html": to_html(blocks, pngs).encode()}
    for name in FILES:
        write_bytes(out / name, files[name])
    return [out / n for n in FILES]


def summary_lines(a: Analysis) -> list[str]:
    """What the command prints: per sweep, the counts, each front's size and hypervolume, and
    whether AST beats training less."""
    lines = []
    for s in a.sweeps:
        excluded = ", ".join(f"{v} {r}" for r, v in s.excluded_counts.items() if v) or "none"
        lines.append(f"[astray] {s.name}: {len(s.trials)} trials, {len(s.good)} good, "
                     f"excluded: {excluded}" + (f"; {s.baseline_note}" if s.baseline_note else ""))
    for g in a.groups:
        src = f"[{g.energy_label}] " if a.split_by_energy_source else ""
        for f in list(g.fronts) + ([g.combined] if g.combined else []):
            what = "trials" if len(f.points) == f.good_trials else f"configurations ({f.good_trials} good trials)"
            lines.append(f"[astray] {src}front of {f.label}: {len(f.front)} of {len(f.points)} {what} "
                         f"({', '.join(config_name(c, f is g.combined) for c in f.front) or 'none'}), "
                         + hv_label(a.objectives).replace("hypervolume", f"hypervolume {f.hypervolume:.6g}", 1))
    lines += [f"[astray] {headline_text(h, len(a.sweeps) > 1)}" for h in a.headlines]
    if a.accuracy_note:
        lines.append(f"[astray] {a.accuracy_note}")
    return lines + [f"[astray] note: {n}" for n in a.notes]

