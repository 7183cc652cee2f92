"""Which trial comes next, and what the searcher is told: baselines, seed replicates and
replicate means, without Ray (docs/design.md §9).

A sweep trains every configuration ``search.repeats`` times with seeds
``training.seed + r``. The baselines come first, in config order, then the searched
configurations Optuna proposes. Replicates of one configuration are handed out one
after the other and share a ``config_id``. Optuna sees each searched configuration once:
it is asked for the configuration when the first replicate starts, and told the mean of
the replicates' objectives once all of them have finished. Baselines are never shown to
Optuna: their parameters are not points of the searched space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from astray.config.sweep import Baseline
from astray.schema import KIND_SEARCHED

Result = dict[str, Any] | None
Tell = Callable[[str, Result, bool], None]  # (first replicate's trial id, mean result or None, error)


@dataclass
class _Config:
    config_id: str
    params: dict[str, Any]  # searched values (empty for a baseline)
    kind: str
    value: float | None  # a baseline's budget or activation
    owner: str | None = None  # trial id Optuna knows this configuration by (searched only)


def searched_config_id(index: int) -> str:
    return f"search-{index:04d}"


class TrialPlan:
    """Hands out trial configs and groups results by configuration.

    ``ask(trial_id)`` returns Optuna's next searched values; ``tell(trial_id, result,
    error)`` reports a searched configuration's replicate mean under the trial id it
    was asked with. Picklable (it is part of the searcher's checkpoint).
    """

    def __init__(self, baselines: Sequence[Baseline], num_samples: int, repeats: int, base_seed: int,
                 metrics: Sequence[str]) -> None:
        self.baselines = list(baselines)
        self.num_samples = num_samples
        self.repeats = repeats
        self.base_seed = base_seed
        self.metrics = list(metrics)
        self.next_baseline = 0
        self.searched = 0
        self.queue: list[tuple[str, int]] = []  # (config_id, replicate) still to hand out
        self.configs: dict[str, _Config] = {}
        self.trials: dict[str, tuple[str, int]] = {}  # trial id → (config_id, replicate)
        self.results: dict[str, dict[int, Result]] = {}  # config_id → replicate → objectives (None: failed)

    @property
    def total(self) -> int:
        return (self.num_samples + len(self.baselines)) * self.repeats

    def suggest(self, trial_id: str, ask: Callable[[str], dict[str, Any] | None]) -> dict[str, Any] | None | str:
        """The next trial's config; None when Optuna has nothing yet; ``"FINISHED"`` when all are out."""
        if not self.queue:
            if self.next_baseline < len(self.baselines):
                b = self.baselines[self.next_baseline]
                self.next_baseline += 1
                self._add(_Config(b.config_id, {}, b.kind, b.value))
            elif self.searched < self.num_samples:
                params = ask(trial_id)
                if params is None:
                    return None
                cid = searched_config_id(self.searched)
                self.searched += 1
                self._add(_Config(cid, dict(params), KIND_SEARCHED, None, owner=trial_id))
            else:
                return "FINISHED"
        cid, replicate = self.queue.pop(0)
        c = self.configs[cid]
        self.trials[trial_id] = (cid, replicate)
        # Besides the searched (dotted ``section.key``) values, plain keys that say what
        # the trial is; they never collide with a dotted key.
        return {**c.params, "baseline_kind": c.kind, "baseline_value": c.value, "config_id": cid,
                "replicate": replicate,
                "seed": self.base_seed + replicate}

    def _add(self, c: _Config) -> None:
        self.configs[c.config_id] = c
        self.results[c.config_id] = {}
        self.queue += [(c.config_id, r) for r in range(self.repeats)]

    def complete(self, trial_id: str, result: Result, error: bool, tell: Tell) -> None:
        """Record a finished replicate; once a searched configuration's last one is in, tell its mean."""
        if trial_id not in self.trials:
            return
        cid, replicate = self.trials[trial_id]
        values = None if error or not result else {m: _finite(result.get(m)) for m in self.metrics}
        if values is not None and any(v is None for v in values.values()):
            values = None  # diverged: NaN objectives
        done = self.results[cid]
        done[replicate] = values
        c = self.configs[cid]
        if c.kind != KIND_SEARCHED or len(done) < self.repeats:
            return
        mean = replicate_mean(list(done.values()), self.metrics)
        tell(c.owner, mean, mean is None)


def replicate_mean(results: Sequence[Result], metrics: Sequence[str]) -> Result:
    """Per-metric mean over the replicates that finished with finite objectives; None if none did."""
    good = [r for r in results if r is not None]
    if not good:
        return None
    return {m: sum(r[m] for r in good) / len(good) for m in metrics} | {"replicates": len(good)}


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
