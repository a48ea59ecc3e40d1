"""Percentiles of samples a benchmark timed itself (oha reports its own)."""

from __future__ import annotations


def sample_at(values: list[float], share: float) -> float:
    """The sample `share` of the way up the sorted values: index int(share * n), at most the
    last."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
