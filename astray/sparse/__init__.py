"""Adaptive sparse training core: significance, the PI threshold controller, selection."""

from astray.sparse.controller import PIController
from astray.sparse.selection import (
    STRATEGIES,
    DenseSelection,
    EpochPlan,
    InfoBatchSelection,
    RandomSelection,
    ReforwardSelection,
    ScoreTable,
    SelectionStrategy,
    StaleSelection,
    create_strategy,
    select_active,
)
from astray.sparse.significance import significance

__all__ = [
    "STRATEGIES",
    "DenseSelection",
    "EpochPlan",
    "InfoBatchSelection",
    "PIController",
    "RandomSelection",
    "ReforwardSelection",
    "ScoreTable",
    "SelectionStrategy",
    "StaleSelection",
    "create_strategy",
    "select_active",
    "significance",
]
