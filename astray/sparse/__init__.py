"""Adaptive sparse training's core: significance, the PI threshold controller, and the
sparse methods (one class each, registered in :data:`METHODS`)."""

from astray.sparse.controller import PIController
from astray.sparse.method import METHODS, MethodContext, SparseMethod, create_method, method_class, register
from astray.sparse.selection import EpochPlan, ScoreTable, ShapeBuckets, select_active
from astray.sparse.significance import significance

# The methods: each module registers its class. A new method is a new module here.
from astray.sparse import dense, reforward, stale, uniform, infobatch  # noqa: E402,F401  isort: skip

__all__ = [
    "METHODS",
    "EpochPlan",
    "MethodContext",
    "PIController",
    "ScoreTable",
    "ShapeBuckets",
    "SparseMethod",
    "create_method",
    "method_class",
    "register",
    "select_active",
    "significance",
]
