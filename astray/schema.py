"""The one home of the names astray's results share: trial statuses, trial metrics with
their labels and units, energy sources, and the objectives a sweep trades off.

The epoch row's columns live with the engine (``astray.engine.records.EpochRow``) and
the trials table's columns with the store (``astray.sweep.store.TRIAL_COLUMNS``); both
name their metrics as this module does, and tests hold them to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from astray.errors import ConfigError

# ------------------------------------------------------------------ trial statuses
# What the ``status`` column of the trials table holds.
RUNNING = "running"  # started, or reporting epochs
RETRYING = "retrying"  # crashed; Ray restarts it from its last checkpoint
COMPLETED = "completed"
DIVERGED = "diverged"  # the loss became non-finite or exceeded training.max_loss
ERROR = "error"  # raised, and out of retries

UNFINISHED_STATUSES = (RUNNING, RETRYING)
FAILED_STATUSES = (DIVERGED, ERROR)
TERMINAL_STATUSES = (COMPLETED, DIVERGED, ERROR)

# Flags the dense baseline: an attribute of its Optuna trial, a key of its Tune config,
# and a boolean column of the trials table.
BASELINE_FLAG = "is_baseline"

# What kind of trial a row is (the ``baseline_kind`` column; docs/design.md §9): a
# searched configuration, or one of the baselines every sweep can carry.
KIND_SEARCHED = ""  # a configuration Optuna proposed
KIND_DENSE = "dense"  # the base config trained dense for a share (``budget``) of its epochs
KIND_RANDOM = "random"  # the base config trained on uniform random subsets at one activation
BASELINE_KINDS = (KIND_DENSE, KIND_RANDOM)

# How the sampler drew a searched configuration (the ``search_phase`` column; null for
# baselines and for stores written before it was recorded): at random, in its start-up
# phase (every suggestion of the random sampler), or guided by the results told so far.
PHASE_STARTUP = "startup"
PHASE_GUIDED = "guided"
SEARCH_PHASES = (PHASE_STARTUP, PHASE_GUIDED)
# A trial trained after the search on a fresh seed (``search.confirm``), searched or
# dense: never part of the search's fronts, frontier or what Optuna is told.
PHASE_CONFIRM = "confirmation"


# ------------------------------------------------------------------ trial metrics
@dataclass(frozen=True)
class Metric:
    """A trial-level metric: its column name, axis label and unit (None: a fraction)."""

    name: str
    label: str
    unit: str | None = None


# Trial-level metrics a sweep can search and a report can draw, in column order.
TRIAL_METRICS: tuple[Metric, ...] = (
    Metric("val_acc", "validation accuracy (best epoch)"),
    Metric("final_val_acc", "validation accuracy (last epoch)"),
    Metric("val_macro_f1", "validation macro-F1 (best epoch)"),
    Metric("test_acc", "test accuracy (validation-selected epoch)"),
    Metric("final_test_acc", "test accuracy (last epoch)"),
    Metric("test_macro_f1", "test macro-F1 (validation-selected epoch)"),
    Metric("energy_j", "training energy [J]", "J"),
    Metric("flops", "training FLOPs executed", "FLOPs"),
    Metric("time_s", "training wall time [s]", "s"),
    Metric("activation_rate", "realised activation rate"),
)
OBJECTIVE_METRICS: tuple[str, ...] = tuple(m.name for m in TRIAL_METRICS)
METRIC_LABELS: dict[str, str] = {m.name: m.label for m in TRIAL_METRICS}
METRIC_UNITS: dict[str, str] = {m.name: m.unit for m in TRIAL_METRICS if m.unit}
ENERGY_METRICS = ("energy_j",)
# Metrics of the test split: reported, never searched on (docs/design.md §9).
TEST_METRICS: tuple[str, ...] = tuple(m for m in OBJECTIVE_METRICS if m.startswith(("test_", "final_test_")))

# energy_source values, and what each one is (docs/design.md §5).
ENERGY_SOURCES: dict[str, str] = {
    "model": "model estimate: seconds × watts",
    "nvml": "measured: NVML energy counter",
    "nvml_power": "measured: NVML power samples",
    "rapl": "measured: RAPL",
}


# energy_scope values: what the meter's reading covers (docs/design.md §5).
SCOPE_PROCESS = "process"  # the model estimate: this process's seconds x watts
SCOPE_DEVICE = "device"  # a whole device this trial had to itself
SCOPE_DEVICE_SHARED = "device-shared"  # a whole device other jobs used at the same time


# ------------------------------------------------------------------ objectives
@dataclass(frozen=True)
class Objective:
    """One axis of the trade-off: a trial metric and whether more is better."""

    metric: str
    maximize: bool

    @property
    def mode(self) -> str:
        """``max`` or ``min``, as configs and Ray Tune spell it."""
        return "max" if self.maximize else "min"

    @property
    def direction(self) -> str:
        """``maximize`` or ``minimize``, as Optuna spells it."""
        return "maximize" if self.maximize else "minimize"

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"

    @classmethod
    def parse(cls, metric: str, mode: str, where: str) -> Objective:
        """A checked objective; a bad metric or mode is a one-line error naming ``where``."""
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(f"{where}: unknown metric {metric!r}; choose one of {', '.join(OBJECTIVE_METRICS)}")
        if mode not in ("max", "min"):
            raise ConfigError(f"{where}: direction {mode!r} is not allowed; choose max or min")
        return cls(metric, mode == "max")


DEFAULT_OBJECTIVES: tuple[Objective, ...] = (Objective("val_acc", True), Objective("energy_j", False))
