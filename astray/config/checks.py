"""Value checks shared by every config section; each raises a one-line ConfigError. And
the one rounding of a share of the epochs."""

from __future__ import annotations

import decimal
import difflib
from typing import Any

from astray.errors import ConfigError


def choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def in_range(key: str, value: float, lo: float | None = None, hi: float | None = None,
             lo_open: bool = False, hi_open: bool = False) -> None:
    """``value`` must lie in the interval; the error prints it in interval notation."""
    ok = True
    if lo is not None:
        ok &= value > lo if lo_open else value >= lo
    if hi is not None:
        ok &= value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed {left}{lo_s}, {hi_s}{right}")


def unknown_key(key: str, name: str, allowed: list[str]) -> ConfigError:
    """The error for a key that does not exist, with the closest allowed name."""
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; allowed: {', '.join(allowed)}")


def share_of_epochs(share: float, epochs: int) -> int:
    """``share × epochs`` rounded half up, in decimal: 0.58 × 25 = 14.5 is 15 epochs (the
    float product, 14.499…, would round to 14)."""
    exact = decimal.Decimal(str(share)) * epochs
    return int(exact.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))
