"""astray: adaptive sparse training sweeps on Ray, with measured accuracy-vs-energy trade-offs."""

__version__ = "0.1.0"
