"""astray: adaptive sparse training sweeps on Ray, with measured accuracy-vs-energy trade-offs.

In a notebook: ``astray.load_sweep(path)`` reads a sweep's store as pandas DataFrames and
``astray.front(df, objectives)`` keeps the non-dominated rows (``astray.notebook``).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "front", "load_sweep"]


def __getattr__(name: str) -> Any:
    if name in ("load_sweep", "front", "Sweep"):
        # Lazy: `import astray` (every command and trial does) must not import pandas.
        import astray.notebook

        return getattr(astray.notebook, name)
    raise AttributeError(f"module 'astray' has no attribute {name!r}")
