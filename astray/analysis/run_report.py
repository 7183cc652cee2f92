"""The report of one ``astray train`` run, optionally against a baseline run.

``astray report RUN_DIR [--baseline RUN_DIR]`` writes ``run.png``/``run.svg`` (four panels:
validation accuracy, activation against the target, the controller's threshold, and the
cumulative training energy and FLOPs) and ``report.md`` to ``RUN_DIR/report/``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from astray.analysis.figures import png_svg
from astray.config.load import load_saved_config
from astray.config.run import RunConfig
from astray.engine.records import controller_rows, read_metrics, read_steps
from astray.engine.state import CONFIG, METRICS, STEPS
from astray.errors import AstrayError
from astray.io import write_bytes, write_text
from astray.sparse import method_class
from astray.sweep.store import is_store


@dataclass
class Run:
    path: Path
    cfg: RunConfig
    rows: list[dict[str, Any]]
    steps: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.cfg.ast.strategy})"


def is_run_dir(path: Path) -> bool:
    return (path / METRICS).is_file() and not is_store(path)


def read_run(path: str | Path, what: str = "RUN_DIR") -> Run:
    root = Path(path)
    if not root.is_dir():
        raise AstrayError(f"{what} {str(root)!r} is not a directory")
    if not (root / METRICS).is_file() or not (root / CONFIG).is_file():
        raise AstrayError(f"{what} {str(root)!r} holds no {METRICS} and {CONFIG}; pass an astray train "
                          "output directory (logging.output_dir)")
    rows = sorted(read_metrics(root / METRICS), key=lambda r: r["epoch"])
    if not rows:
        raise AstrayError(f"{what} {str(root / METRICS)!r} has no epochs yet")
    steps = read_steps(root / STEPS) if (root / STEPS).is_file() else []
    return Run(root, load_saved_config(root / CONFIG), rows, steps)


def run_figure(run: Run, baseline: Run | None) -> Figure:
    fig = Figure(figsize=(12, 8), layout="constrained")
    (acc, act), (thr, cost) = fig.subplots(2, 2)
    runs = [(run, "C0", "-")] + ([(baseline, "C1", "--")] if baseline else [])
    for r, color, style in runs:
        epochs = [x["epoch"] for x in r.rows]
        acc.plot(epochs, [x["val_acc"] for x in r.rows], style, marker="o", color=color, label=r.label)
        act.plot(epochs, [x["activation_rate"] for x in r.rows], style, marker="o", color=color, label=r.label)
        # Cumulative cost: energy on the left axis, executed FLOPs (dotted) on the right.
        cost.plot(epochs, list(itertools.accumulate(x["energy_j"] for x in r.rows)), style, marker="o",
                  color=color, label=f"{r.label}: energy")
    target = run.cfg.ast.target_activation
    if method_class(run.cfg.ast.strategy).aims_at_target:
        act.axhline(target, color="C0", linestyle=":", linewidth=1.2, label=f"target {target:g}")
    trace = controller_rows(run.steps)
    if trace:
        thr.plot([s["progress"] for s in trace], [s["threshold"] for s in trace], color="C0", linewidth=0.8,
                 alpha=0.6, label="every recorded step (steps.parquet)")
    thr.plot([x["epoch"] for x in run.rows], [x["threshold"] for x in run.rows], marker="o", color="C0",
             label="at epoch end")
    if all(x["threshold"] > 0 for x in run.rows):
        thr.set_yscale("log")
    flops = cost.twinx()
    for r, color, style in runs:
        flops.plot([x["epoch"] for x in r.rows], list(itertools.accumulate(x["flops"] for x in r.rows)), ":",
                   color=color, label=f"{r.label}: FLOPs")
    source = run.rows[-1]["energy_source"]
    acc.set(title="validation accuracy", xlabel="epoch", ylabel="val_acc")
    act.set(title="activation rate (share of samples backpropagated)", xlabel="epoch", ylabel="activation_rate")
    thr.set(title="controller threshold", xlabel="epochs trained", ylabel="threshold (significance units)")
    cost.set(title="cumulative training cost", xlabel="epoch", ylabel=f"energy [J] ({source})")
    flops.set_ylabel("executed FLOPs (dotted)")
    for ax in (acc, act, thr, cost):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    flops.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{run.label}" + (f" against {baseline.label}" if baseline else ""), fontsize=12)
    return fig


def _summary(r: Run) -> dict[str, float]:
    return {"final": r.rows[-1]["val_acc"], "best": max(x["val_acc"] for x in r.rows),
            "energy": sum(x["energy_j"] for x in r.rows), "flops": sum(x["flops"] for x in r.rows),
            "time": sum(x["train_time_s"] for x in r.rows), "epochs": len(r.rows),
            "activation": sum(x["activation_rate"] for x in r.rows) / len(r.rows)}


def run_markdown(run: Run, baseline: Run | None) -> str:
    s = _summary(run)
    source = run.rows[-1]["energy_source"]
    lines = [f"# {run.label}", "", f"- run: `{run.path}`", f"- model: {run.cfg.model.name}; data: "
             f"{run.cfg.dataset.type}; strategy {run.cfg.ast.strategy} at target "
             f"{run.cfg.ast.target_activation:g}; {s['epochs']} epochs", "",
             "| run | final val_acc | best val_acc | training energy [J] | FLOPs | train time [s] | mean activation |",
             "|---|---|---|---|---|---|---|"]
    for r in [run] + ([baseline] if baseline else []):
        t = _summary(r)
        lines.append(f"| {r.label} | {t['final']:.4f} | {t['best']:.4f} | {t['energy']:.1f} | {t['flops']:.3g} | "
                     f"{t['time']:.1f} | {t['activation']:.3f} |")
    lines += ["", f"Energy source: {source}" + (" (an estimate: seconds × watts)" if source == "model" else "") + "."]
    if baseline:
        b = _summary(baseline)
        ratio = (lambda x, y: x / y if y else math.nan)
        lines += ["", f"Against the baseline: {(s['final'] - b['final']) * 100:+.2f} points of final val_acc, "
                      f"{ratio(s['energy'], b['energy']):.3f} × its training energy, "
                      f"{ratio(s['flops'], b['flops']):.3f} × its FLOPs, {ratio(s['time'], b['time']):.3f} × its "
                      "training time. One run each: seeds and validation-set size decide how much that says."]
        if baseline.rows[-1]["energy_source"] != source:
            lines += ["", f"Warning: the energy sources differ ({source} vs "
                          f"{baseline.rows[-1]['energy_source']}); the energy ratio compares different meters."]
    lines += ["", "![run](run.png)", ""]
    return "\n".join(lines)


def write_run_report(run_dir: str, baseline_dir: str | None = None, out_dir: str | None = None) -> Path:
    run = read_run(run_dir)
    baseline = read_run(baseline_dir, "--baseline") if baseline_dir else None
    out = Path(out_dir) if out_dir else run.path / "report"
    if out.exists() and not out.is_dir():
        raise AstrayError(f"--out {str(out)!r} exists and is not a directory")
    png, svg = png_svg(run_figure(run, baseline), svg=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(out / "run.png", png)
        write_bytes(out / "run.svg", svg or b"")
        write_text(out / "report.md", run_markdown(run, baseline))
    except OSError as exc:
        raise AstrayError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}") from None
    s = _summary(run)
    print(f"[astray] {run.label}: final val_acc {s['final']:.4f}, {s['energy']:.1f} J "
          f"({run.rows[-1]['energy_source']}), {s['flops']:.3g} FLOPs over {s['epochs']} epochs")
    print(f"[astray] wrote {out}/: run.png run.svg report.md")
    return out
