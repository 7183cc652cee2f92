"""The PI controller that moves the significance threshold to hold a target activation rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from astray.config.run import ASTConfig

_DEFAULTS = ASTConfig()  # the one home of the controller's defaults


def _ramp(epoch: float, warmup_epochs: float) -> float:
    """Linear ramp 0 -> 1 over ``warmup_epochs`` (1 at once when there is no warm-up)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, max(0.0, epoch / warmup_epochs))


@dataclass
class PIController:
    """Keeps the realised activation rate at ``target`` by moving the threshold.

    The controller works on the *log* of the threshold. Significance is a loss, and a
    loss shrinks by orders of magnitude during training (2.3 -> 0.01 on a 10-class
    task): an additive step that is right at the start is far too coarse at the end.
    In log space a step of 0.05 is "5% higher" at any scale, so one set of gains
    serves a whole run, and any dataset.

    Each update, with ``rate`` the share of samples above the threshold::

        ema      <- (1 - ema_alpha) * ema + ema_alpha * rate
        error    =  ema - target                  # too many active => error > 0
        integral <- clamp(integral + error, +-integral_limit)
        log_thr  <- log_thr + kp' * error + ki' * integral

    so a positive error raises the threshold. ``kp'`` and ``ki'`` ramp linearly from 0
    over ``kp_warmup_epochs`` / ``ki_warmup_epochs``. Anti-windup: the threshold is
    clamped to [min_threshold, max_threshold], and while it sits on a bound the
    integral stops accumulating in the direction that pushes it further out.
    """

    target: float
    kp: float
    ki: float
    ema_alpha: float = _DEFAULTS.ema_alpha
    integral_limit: float = _DEFAULTS.integral_limit
    initial_threshold: float = _DEFAULTS.initial_threshold
    min_threshold: float = _DEFAULTS.min_threshold
    max_threshold: float = _DEFAULTS.max_threshold
    kp_warmup_epochs: float = _DEFAULTS.kp_warmup_epochs
    ki_warmup_epochs: float = _DEFAULTS.ki_warmup_epochs

    def __post_init__(self) -> None:
        self.log_threshold = math.log(self.initial_threshold)
        self.integral = 0.0
        self.ema: float | None = None
        self.updates = 0

    @classmethod
    def from_config(cls, cfg: ASTConfig) -> PIController:
        return cls(
            target=cfg.target_activation, kp=cfg.kp, ki=cfg.ki, ema_alpha=cfg.ema_alpha,
            integral_limit=cfg.integral_limit, initial_threshold=cfg.initial_threshold,
            min_threshold=cfg.min_threshold, max_threshold=cfg.max_threshold,
            kp_warmup_epochs=cfg.kp_warmup_epochs, ki_warmup_epochs=cfg.ki_warmup_epochs,
        )

    @property
    def threshold(self) -> float:
        return math.exp(self.log_threshold)

    def update(self, active: int, total: int, epoch: float) -> float:
        """Feed one observation (global counts) and return the new threshold.

        ``epoch`` is fractional training progress in epochs, for the gain ramps.
        Every rank must call this with the same all-reduced counts so the thresholds
        stay identical.
        """
        if total <= 0:
            return self.threshold
        rate = active / total
        self.ema = rate if self.ema is None else (1 - self.ema_alpha) * self.ema + self.ema_alpha * rate
        error = self.ema - self.target

        lo, hi = math.log(self.min_threshold), math.log(self.max_threshold)
        saturated_high = self.log_threshold >= hi and error > 0
        saturated_low = self.log_threshold <= lo and error < 0
        if not (saturated_high or saturated_low):
            self.integral = max(-self.integral_limit, min(self.integral_limit, self.integral + error))

        kp = self.kp * _ramp(epoch, self.kp_warmup_epochs)
        ki = self.ki * _ramp(epoch, self.ki_warmup_epochs)
        self.log_threshold = max(lo, min(hi, self.log_threshold + kp * error + ki * self.integral))
        self.updates += 1
        return self.threshold

    @property
    def error(self) -> float:
        """The current error (EMA minus target); NaN before the first update."""
        return math.nan if self.ema is None else self.ema - self.target

    def state_dict(self) -> dict[str, Any]:
        return {"log_threshold": self.log_threshold, "integral": self.integral,
                "ema": self.ema, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_threshold = float(state["log_threshold"])
        self.integral = float(state["integral"])
        self.ema = None if state["ema"] is None else float(state["ema"])
        self.updates = int(state["updates"])
