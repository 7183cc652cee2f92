"""Run a sweep: ``astray tune CONFIG [--set key=value ...] [--resume] [--address auto|HOST:PORT]``.

Also ``python -m astray.tune``. Optuna searches ``search.space`` on Ray Tune; results
land in the Parquet store at ``<sweep.results_dir>/<sweep.name>/`` (``astray.sweep``).
"""

from __future__ import annotations

import argparse
import sys

from astray.cli.common import EXIT_INCOMPLETE, OneLineParser, add_config_args, cli_entry
from astray.config.sweep import load_sweep_spec
from astray.errors import SweepIncomplete
from astray.sweep.trial_config import check_before_start


def parse_args(argv: list[str] | None, prog: str = "python -m astray.tune") -> argparse.Namespace:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    add_config_args(p, "YAML config with search/sweep/resources sections (see configs/)", "search.num_samples=16")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep of the same name")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster (auto or HOST:PORT; default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="do not write the Pareto report when the sweep finishes (default: write it)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="also print Ray Tune's status table (-v), and its per-trial results (-vv)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None, prog: str = "python -m astray.tune") -> int:
    args = parse_args(argv, prog)
    spec = load_sweep_spec(args.config, args.overrides)
    check_before_start(spec, args.resume)
    # Ray takes seconds to import: bad input has failed above before it loads.
    from astray.sweep.runner import run_sweep
    from astray.cli.report import pick_confirmation  # the analysis (pyarrow, scipy): loaded after the checks

    try:
        root = run_sweep(spec, resume=args.resume, address=args.address, verbose=min(args.verbose, 2),
                         pick=pick_confirmation)
    except KeyboardInterrupt:
        print("[astray] interrupted: finished trials are in the store; continue with --resume", flush=True)
        return 130
    except SweepIncomplete as exc:
        # Never "finished" with trials missing, and no report drawn from part of a sweep
        # (`astray report` draws one on demand).
        print(f"astray: {exc}", file=sys.stderr, flush=True)
        return EXIT_INCOMPLETE
    if args.report:
        # The main job ends with its result: the Pareto report, and where to open it.
        from astray.cli.report import write_sweep_report

        out = write_sweep_report([str(root)])
        print(f"[astray] report: {(out / 'report.html').resolve()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
