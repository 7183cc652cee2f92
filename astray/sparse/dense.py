"""``dense``: every sample, forward and backward, every epoch. The reference."""

from __future__ import annotations

from astray.sparse.method import SparseMethod, register


@register
class Dense(SparseMethod):
    """Trains every sample of every epoch: the baseline every method is measured against."""

    name = "dense"
    what = "forward + backward on every sample: the baseline"
    cost = "1"
    weaknesses = "none; it is the reference"

    def is_sparse(self, epoch: int) -> bool:
        return False
