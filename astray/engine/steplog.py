"""Where a training epoch's step-level output goes: the controller's trace (the rows of
``steps.parquet``), the ``logging.log_every_steps`` lines and the terminal progress bar.

The loop hands every step here; this decides what to read and when, so the loop itself
stays free of logging (a device value read is a sync on CUDA: docs/design.md §10).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from astray.engine.step import StepStats
from astray.engine.totals import EpochTotals
from astray.sparse import EpochPlan, PIController


def trace_row(epoch: int, step: int, progress: float, source: str, activation: float, threshold: float,
              error: float, integral: float, loss: float = math.nan, lr: float = math.nan) -> dict[str, Any]:
    """One row of ``steps.parquet`` (``astray.engine.records.TRACE_SCHEMA``)."""
    return {"epoch": epoch, "step": step, "progress": progress, "source": source, "activation": activation,
            "threshold": threshold, "error": error, "integral": integral, "loss": loss, "lr": lr}


class StepLog:
    """One epoch's step log. ``every`` is ``logging.steps_every`` (0: no trace)."""

    def __init__(self, epoch: int, steps: int, plan: EpochPlan, every: int, log_every: int,
                 controller: PIController, lr: Callable[[], float], bar: tqdm | None, target: str,
                 log: Callable[[str], None]) -> None:
        self.epoch, self.steps, self.every, self.log_every = epoch, steps, every, log_every
        self.controller, self.lr, self.bar, self.target, self.log = controller, lr, bar, target, log
        self.rows: list[dict[str, Any]] = []
        if every:
            # The plan's controller updates (stale steps it per window while planning); the
            # last one always: it is the threshold the epoch trains with.
            last = len(plan.trace) - 1
            self.rows = [trace_row(epoch + 1, w, update[0], "plan", *update[1:])
                         for w, update in enumerate(plan.trace) if w % every == 0 or w == last]
        self.started, self.shown_at = time.perf_counter(), -math.inf

    def step(self, step: int, s: StepStats, totals: EpochTotals, progress: float,
             before_line: Callable[[], None] = lambda: None) -> None:
        """Log a step. ``before_line`` runs before a ``log_every_steps`` line, which reads
        the running loss anyway (the loop checks for divergence there)."""
        c = self.controller
        if self.every and (step % self.every == 0 or step + 1 == self.steps):
            # A read of the step's loss (a sync on CUDA) every steps_every steps and at the
            # epoch's last, so the trace ends on the threshold the epoch ended with.
            self.rows.append(trace_row(self.epoch + 1, step, progress, "step", s.global_active / max(s.global_loaded, 1),
                                       c.threshold, c.error, c.integral, float(s.loss_sum) / max(s.loaded, 1),
                                       self.lr()))
        if self.bar is not None:
            self.bar.update(1)
            now = time.perf_counter()
            if now - self.shown_at > 0.5:  # the loss is a device value: read it twice a second at most
                self.shown_at = now
                self.bar.set_postfix_str(f"{totals.loaded / (now - self.started):.0f} img/s, "
                                         f"loss {totals.mean_loss():.4f}, "
                                         f"act {totals.backward / max(totals.loaded, 1):.3f}{self.target}, "
                                         f"thr {c.threshold:.4g}")
        if self.log_every and (step + 1) % self.log_every == 0:
            before_line()
            self.log(f"  epoch {self.epoch + 1} step {step + 1}/{self.steps} loss {totals.mean_loss():.4f} "
                     f"act {totals.backward / max(totals.loaded, 1):.3f} threshold {c.threshold:.4g}")

    def close(self) -> list[dict[str, Any]]:
        """The epoch's trace rows."""
        if self.bar is not None:
            self.bar.close()
        return self.rows
