"""Summary statistics shared by the benchmarks and the packet demo.

One definition of a percentile for everything kcont prints: the
**nearest-rank** percentile.  The p-th percentile (``0 < p <= 1``) of ``n``
values is the smallest value such that at least ``p * n`` of the values are
less than or equal to it: the value of rank ``ceil(p * n)`` (1-based) in sorted
order.  It is always one of the measured values (no interpolation), the p100
is the maximum and the p50 of an even count is the lower middle value.

Pure functions, no shared state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["percentile", "percentile_sorted"]

Number = TypeVar("Number", int, float)


def percentile_sorted(sorted_values: Sequence[Number], fraction: float) -> Number | None:
    """The nearest-rank percentile of values already sorted in ascending order.

    Args:
        sorted_values: the values, ascending.
        fraction: which percentile, in ``[0, 1]`` (0.99 is the p99; 0 gives the
            minimum).

    Returns:
        The value of rank ``ceil(fraction * n)`` (at least 1), or None if there
        are no values.

    Raises:
        ValueError: ``fraction`` is outside ``[0, 1]``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(fraction * n - 1e-9))  # the epsilon keeps 0.99 * 100 at rank 99
    return sorted_values[min(n, rank) - 1]


def percentile(values: Sequence[Number], fraction: float) -> Number | None:
    """:func:`percentile_sorted` of ``values`` in any order (sorted here)."""
    return percentile_sorted(sorted(values), fraction)
