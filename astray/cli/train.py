"""Train one model: ``astray train CONFIG [--set key=value ...] [--resume]``.

Also ``python -m astray.train``, and ``torchrun --nproc_per_node N -m astray.train CONFIG``
for DDP. The engine is ``astray.engine.trainer``.
"""

from __future__ import annotations

import argparse
import sys

from astray.cli.common import OneLineParser, add_config_args, cli_entry
from astray.config.load import load_config
from astray.engine.trainer import log, run
from astray.errors import TrainingDiverged


def parse_args(argv: list[str] | None, prog: str = "python -m astray.train") -> argparse.Namespace:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    add_config_args(p, "YAML config file (see configs/)", "ast.target_activation=0.3")
    p.add_argument("--resume", action="store_true", help="continue from <logging.output_dir>/last.pt")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None, prog: str = "python -m astray.train") -> int:
    args = parse_args(argv, prog)
    cfg = load_config(args.config, args.overrides)
    try:
        result = run(cfg, resume=args.resume)
    except KeyboardInterrupt:
        log("interrupted: the last finished epoch is in last.pt; continue with --resume")
        return 130
    except TrainingDiverged as exc:
        log(f"diverged: {exc}; finished epochs are kept in {cfg.logging.output_dir}")
        return 1
    last = result.rows[-1] if result.rows else None
    if last is not None:
        log(f"done ({result.stopped}): val_acc {last['val_acc']:.4f}, "
            f"results in {result.output_dir}/metrics.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
