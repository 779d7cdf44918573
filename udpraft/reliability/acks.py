"""Acknowledgement ranges: ids <-> inclusive (lo, hi) ranges, and matching them.

An ACK carries ranges, so a run of consecutive ids costs one pair however long it is.
Matching ranges against the unacked set costs O(min(span, U log R)): walk the ranges when
they are small, otherwise walk the unacked ids and binary-search the merged ranges. A
peer (even an authenticated, buggy one) cannot make us iterate a range of 2**62 ids.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Iterable


def to_ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges covering ``ids``."""
    ranges: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if ranges and ranges[-1][1] + 1 == i:
            ranges[-1] = (ranges[-1][0], i)
        else:
            ranges.append((i, i))
    return ranges


def acked_ids(ranges: tuple[tuple[int, int], ...], unacked: Collection[int]) -> list[int]:
    """Ids of ``unacked`` covered by ``ranges``, in O(min(span, len(unacked) log R))."""
    span = sum(hi - lo + 1 for lo, hi in ranges)
    if span <= 2 * len(unacked):
        return [i for lo, hi in ranges for i in range(lo, hi + 1) if i in unacked]
    merged = _merge(ranges)
    starts = [lo for lo, _ in merged]
    out = []
    for i in unacked:
        k = bisect_right(starts, i) - 1
        if k >= 0 and i <= merged[k][1]:
            out.append(i)
    return out


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged
