"""astray's optional extras (``pip install 'astray[tensorboard]'``, ``[mlflow]``, ``[wandb]``,
``[explain]``): the one loader that turns a missing one into a one-line error."""

from __future__ import annotations

import importlib
from typing import Any

from astray.errors import ConfigError


def require_extra(extra: str, module: str, key: str) -> Any:
    """Import ``module`` or raise a one-line error naming ``pip install 'astray[extra]'``;
    ``key`` is what asked for it (a config key or a command)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{key} needs the {extra} extra: pip install 'astray[{extra}]' "
                          f"({module} is not installed)") from None
