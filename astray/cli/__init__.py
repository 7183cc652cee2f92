"""The ``astray`` command: ``astray train|tune|report|export|eval|explain ...``.

Each subcommand is one thin module here (``python -m astray.<command>`` runs the same
``main``). Bad input is one line on stderr and exit code 2 (``cli.common``).
"""

from __future__ import annotations

import importlib
import sys

from astray import __version__

COMMANDS = {
    "train": ("astray.cli.train", "train one model (alone, or under torchrun for DDP)"),
    "tune": ("astray.cli.tune", "run a sweep on Ray: Optuna searches the AST knobs"),
    "report": ("astray.cli.report", "Pareto report of one sweep or several"),
    "export": ("astray.cli.export", "ONNX export of trained models, with an onnxruntime parity check"),
    "eval": ("astray.cli.eval", "per-class evaluation of trained models"),
    "explain": ("astray.cli.explain", "Grad-CAM overlays of a trained model's validation images"),
}
USAGE = "usage: astray {" + ",".join(COMMANDS) + "} ... (astray COMMAND --help for its arguments)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        print("\n".join(f"  {name:<7} {about}" for name, (_, about) in COMMANDS.items()))
        return 0 if args else 2
    if args[0] == "--version":
        print(f"astray {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(f"astray: error: unknown command {args[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    # Each command imports only what it needs (Ray for tune, matplotlib for report).
    command = importlib.import_module(COMMANDS[args[0]][0])
    return command.main(args[1:], prog=f"astray {args[0]}")
