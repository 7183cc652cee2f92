"""Errors that reach the user as one line and exit code 2, never as a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., int | None])


class AstrayError(Exception):
    """Bad input from the user: config key or value, path, model name.

    The message is one line that names what is wrong and what is allowed.
    """


class ConfigError(AstrayError):
    """A config key, type or value is not allowed."""


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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. Not a user-input error: a sweep records it."""
