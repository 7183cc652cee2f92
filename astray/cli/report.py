"""Pareto reports of sweeps: fronts, hypervolumes, savings, and the advantage over training less.

``astray report SWEEP_DIR [SWEEP_DIR ...] [--objectives val_acc:max,energy_j:min] [--accuracy test_acc|val_acc]
[--out DIR]``
(also ``python -m astray.report``); ``astray report RUN_DIR [--baseline RUN_DIR]`` reports one
``astray train`` run (``astray.analysis.run_report``).

Reads one sweep's store, finished or still running (or several, compared), and writes
``pareto.png``/``.svg``, ``front.csv``, ``controller.png``, ``hypervolume.png``,
``report.html`` (self-contained) and ``report.md`` to ``SWEEP_DIR/report/`` (several
sweeps: ``<first SWEEP_DIR>/report-comparison/``) or ``--out``, and prints whether the
best searched configuration beats simply training less (docs/design.md §9). The analysis
and the rendering are ``astray.analysis``; this module only parses the command line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from astray.analysis.compute import analyze, confirmation_pick
from astray.analysis.read import choose_objectives, load_sweeps, read_sweep
from astray.analysis.report import summary_lines, write_report
from astray.analysis.run_report import is_run_dir, write_run_report
from astray.cli.common import OneLineParser, cli_entry
from astray.errors import AstrayError


def parse_args(argv: list[str] | None, prog: str = "python -m astray.report") -> argparse.Namespace:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR",
                   help="a sweep's store (<results_dir>/<name>/), or one astray train run's output directory")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="with a single run: the run to compare it with (e.g. dense)")
    p.add_argument("--objectives", default=None, metavar="METRIC:max|min,...",
                   help="e.g. val_acc:max,energy_j:min (default: the objectives the sweep searched)")
    p.add_argument("--accuracy", default=None, choices=("test_acc", "val_acc"),
                   help="the accuracy of fronts, frontier and headline (default: test_acc when the store has it, "
                        "else val_acc, and the report says so)")
    p.add_argument("--out", default=None, metavar="DIR", help="where the report goes (default: SWEEP_DIR/report/)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None, prog: str = "python -m astray.report") -> int:
    args = parse_args(argv, prog)
    single = len(args.sweep_dirs) == 1 and is_run_dir(Path(args.sweep_dirs[0]))
    if single:
        write_run_report(args.sweep_dirs[0], args.baseline, args.out)
        return 0
    if args.baseline:
        raise AstrayError(f"--baseline {args.baseline!r} compares two astray train runs; "
                          f"{args.sweep_dirs[0]!r} is not a run's output directory (no metrics.parquet)")
    write_sweep_report(args.sweep_dirs, args.objectives, args.out, args.accuracy)
    return 0


def write_sweep_report(sweep_dirs: list[str], objectives: str | None = None, out_dir: str | None = None,
                       accuracy: str | None = None) -> Path:
    """Analyse and write the report; print its summary and where it went. Returns the folder."""
    sweeps = load_sweeps(sweep_dirs)
    objectives, source = choose_objectives(objectives, sweeps)
    a = analyze(sweeps, objectives, accuracy)
    a = replace(a, notes=(source,) + a.notes)
    if out_dir:
        out = Path(out_dir)
    else:
        out = Path(sweep_dirs[0]) / ("report" if len(sweeps) == 1 else "report-comparison")
    if out.exists() and not out.is_dir():
        raise AstrayError(f"--out {str(out)!r} exists and is not a directory")
    try:
        written = write_report(a, out)
    except OSError as exc:
        raise AstrayError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}") from None
    for line in summary_lines(a):
        print(line)
    print(f"[astray] wrote {out}/: {' '.join(p.name for p in written)}")
    return out


def pick_confirmation(root: Path) -> tuple[list[str], str]:
    """What ``search.confirm`` trains once the search has finished: the headline
    configuration, the dense budgets bracketing it and their neighbours (``confirmation_pick``)."""
    return confirmation_pick(read_sweep(root))


if __name__ == "__main__":
    sys.exit(main())
