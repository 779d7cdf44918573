"""A cumulative histogram (for Prometheus) that also remembers recent samples (for p50/p99)."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque


class Histogram:
    __slots__ = ("buckets", "count", "counts", "recent", "total")

    def __init__(self, buckets: tuple[float, ...], recent: int = 1000) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self.count = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=recent)

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.buckets, v)] += 1
        self.count += 1
        self.total += v
        self.recent.append(v)

    def cumulative(self) -> list[tuple[str, int]]:
        out = []
        acc = 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append((str(b), acc))
        out.append(("+Inf", self.count))
        return out

    def quantile(self, q: float) -> float:
        if not self.recent:
            return 0.0
        s = sorted(self.recent)
        return s[min(len(s) - 1, int(q * len(s)))]
