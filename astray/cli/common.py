"""What every command shares: one-line errors with exit code 2, and their parser."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from astray.errors import AstrayError, ConfigError

EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3  # astray tune: the run ended with planned trials missing; --resume trains them

F = TypeVar("F", bound=Callable[..., int | None])


def cli_entry(main: F) -> F:
    """Wrap a command's ``main`` so user errors print one line and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except AstrayError as exc:
            print(f"astray: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return wrapper  # type: ignore[return-value]


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2 (through ``cli_entry``), not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = " ".join(self.format_usage().split()[1:])  # argparse wraps it; the error is one line
        raise ConfigError(f"{message} (usage: {usage})")


def add_config_args(p: argparse.ArgumentParser, config_help: str, example: str) -> None:
    """The config file and its ``--set`` overrides (train and tune)."""
    p.add_argument("config", help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config value, e.g. --set {example} (repeatable)")


def add_source_args(p: argparse.ArgumentParser, out_default: str) -> None:
    """The arguments every trained-model command shares: what to load, where to write."""
    p.add_argument("path", metavar="SWEEP_DIR", help="a sweep directory, or a training run directory")
    p.add_argument("--trial", default=None, help="sweeps: best, front, or a trial id (default: best); "
                   "ignored for a run directory")
    p.add_argument("--out", type=Path, default=None, help=f"output directory (default: {out_default})")
