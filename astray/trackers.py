"""Experiment trackers, each an optional extra: a run's TensorBoard events
(``logging.tensorboard``) here; a sweep's Ray Tune logger callbacks (``sweep.loggers``)
are ``astray.sweep.ray_adapter.logger_callbacks`` (every Ray call lives there).

A tracker whose library is missing is one line naming the extra to install.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from astray.extras import require_extra

class RunTensorBoard:
    """One run's TensorBoard events under ``<output_dir>/tensorboard``: every numeric column
    of each epoch row (``epoch/<column>``, x = epoch), the step trace (``step/<column>``,
    and ``plan/<column>`` for stale's plan windows; x = thousandths of an epoch) and the
    resolved config as text."""

    def __init__(self, out: Path, config_yaml: str) -> None:
        require_extra("tensorboard", "tensorboard", "logging.tensorboard=true")
        # torch's writer; it needs the tensorboard package, checked above.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / "tensorboard"))
        self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)

    def epoch(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, row["epoch"])

    def steps(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            x = int(round(r["progress"] * 1000))
            for key in ("activation", "threshold", "error", "integral", "loss", "lr"):
                if not math.isnan(r[key]):
                    self.writer.add_scalar(f"{r['source']}/{key}", r[key], x)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
