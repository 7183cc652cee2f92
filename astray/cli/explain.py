"""Grad-CAM of a trained model: ``astray explain SWEEP_OR_RUN_DIR [--trial best|ID] [--images N]``.

Writes ``gradcam.png``: N validation images (the most confident mistakes and the most
confident correct ones, half each) with the Grad-CAM map of the predicted class over
them, labelled with the true and predicted class and the confidence, to
``SWEEP_DIR/explain/<trial_id>/`` or ``RUN_DIR/explain/``. Needs the ``explain`` extra
(Captum). Also ``python -m astray.explain``; the work is ``astray.deploy.explain``.
"""

from __future__ import annotations

import argparse
import sys

from astray.cli.common import OneLineParser, add_source_args, cli_entry
from astray.cli.eval import pick_device
from astray.deploy.explain import write_gradcam
from astray.deploy.trained import find_trained
from astray.errors import AstrayError
from astray.extras import require_extra


def parse_args(argv: list[str] | None, prog: str = "python -m astray.explain") -> argparse.Namespace:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    add_source_args(p, "SWEEP_DIR/explain/<trial_id>, or RUN_DIR/explain")
    p.add_argument("--images", type=int, default=8, help="validation images to explain")
    p.add_argument("--layer", default=None, help="the layer Grad-CAM reads (default: chosen per model family)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None, prog: str = "python -m astray.explain") -> int:
    args = parse_args(argv, prog)
    if not 1 <= args.images <= 64:
        raise AstrayError(f"--images {args.images} must be between 1 and 64")
    require_extra("explain", "captum", "astray explain")
    device = pick_device(args.device)
    models = find_trained(args.path, args.trial or "best")
    if len(models) > 1:
        raise AstrayError(f"--trial {args.trial!r} names {len(models)} trials; explain one: best or a trial id")
    (trained,) = models
    out = args.out or (trained.out_root / "explain" if trained.is_run else trained.out_root / "explain" / trained.name)
    path = write_gradcam(trained, out, args.images, device, args.layer)
    print(f"{trained.name}: Grad-CAM of {args.images} validation images from {trained.checkpoint.name} in {path}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
