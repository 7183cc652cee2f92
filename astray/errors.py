"""Errors astray raises on purpose.

A user-input error (:class:`AstrayError`) reaches the user as one line and exit code 2
(``astray.cli.common.cli_entry``), never as a traceback.
"""

from __future__ import annotations


class AstrayError(Exception):
    """Bad input from the user: config key or value, path, model name.

    The message is one line that names what is wrong and what is allowed.
    """


class ConfigError(AstrayError):
    """A config key, type or value is not allowed."""


class SweepIncomplete(RuntimeError):
    """A sweep's run ended with planned trials missing (an interrupted run). Not bad
    input: the message is one line naming them, and the command exits 3."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. Not a user-input error: a sweep records it."""
