"""Export trained models to ONNX: ``astray export SWEEP_OR_RUN_DIR [--trial best|front|ID]``.

Each model becomes ``<out>/<trial>-<precision>/model.onnx`` with a dynamic batch axis,
checked by ``onnx.checker`` and run by onnxruntime next to the PyTorch fp32 model on real
validation images; ``export.json`` beside it records the result. Also
``python -m astray.export``; the work is ``astray.deploy.export``.
"""

from __future__ import annotations

import argparse
import sys

from astray.cli.common import OneLineParser, add_source_args, cli_entry
from astray.deploy.export import DEFAULT_OPSET, check_opset, export_trained, require_onnxruntime
from astray.deploy.trained import find_trained
from astray.errors import AstrayError


def parse_args(argv: list[str] | None, prog: str = "python -m astray.export") -> argparse.Namespace:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    add_source_args(p, "SWEEP_DIR/export")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--samples", type=int, default=512,
                   help="validation images for the parity check, spread over the split; 0 = all (default 512)")
    p.add_argument("--batch-size", type=int, default=64, help="parity-check batch size (default 64)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None, prog: str = "python -m astray.export") -> int:
    args = parse_args(argv, prog)
    check_opset(args.opset)
    require_onnxruntime()  # before any work: every export ends in the parity check
    if args.batch_size < 1:
        raise AstrayError(f"--batch-size {args.batch_size} must be at least 1")
    models = find_trained(args.path, args.trial or "best")
    failed = 0
    for trained in models:
        out = args.out if args.out is not None else trained.out_root / "export"
        path, record = export_trained(trained, out, args.precision, args.opset, args.samples, args.batch_size)
        p = record["parity"]
        failed += not p["passed"]
        print(f"{trained.name}: {path} from {trained.checkpoint.name}, opset {args.opset}, {args.precision}; "
              f"parity {'ok' if p['passed'] else 'FAILED'}: max |diff| {p['max_abs_diff']:.3g} "
              f"(allowed {p['tolerance']:.3g}), top-1 agreement {p['top1_agreement']:.4f} "
              f"on {p['samples']} validation images", flush=True)
    # A file that disagrees with its model is written (export.json says how) but fails the command.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
