"""Latency summaries shared by the benchmark modes."""

from __future__ import annotations


def percentile_ms(samples_s: list[float], q: float) -> float:
    if not samples_s:
        return 0.0
    s = sorted(samples_s)
    return 1000.0 * s[min(len(s) - 1, int(q * len(s)))]
