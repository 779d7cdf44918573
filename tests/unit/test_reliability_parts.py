"""Pieces of the reliability layer: dedupe window, sender table, ack ranges."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.reliability import DedupeWindow, SenderTable
from udpraft.reliability.acks import acked_ids, to_ranges
from udpraft.reliability.dedupe import (
    DUPLICATE,
    NEW,
    RELIABLE,
    TOO_OLD,
    UNRELIABLE,
)


def test_window_basics() -> None:
    w = DedupeWindow(8)
    assert w.observe(100) == NEW
    assert w.observe(100) == DUPLICATE
    assert w.observe(95) == NEW and w.observe(95) == DUPLICATE
    assert w.observe(93) == NEW  # offset 7: the last slot
    assert w.observe(92) == TOO_OLD
    assert w.observe(200) == NEW  # jump clears the bitmap
    assert w.observe(100) == TOO_OLD and w.observe(199) == NEW


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=300), st.integers(1, 64))
def test_window_matches_a_model(ids: list[int], size: int) -> None:
    """NEW exactly once per id, unless it fell below the window first."""
    w = DedupeWindow(size)
    seen: set[int] = set()
    highest = -1
    for i in ids:
        verdict = w.observe(i)
        if i <= highest - size:
            assert verdict == TOO_OLD
        elif i in seen:
            assert verdict == DUPLICATE
        else:
            assert verdict == NEW
            seen.add(i)
        highest = max(highest, i)
        assert w.bits.bit_length() <= size  # memory bounded


def test_sender_table_incarnations_and_channels() -> None:
    counters: dict[str, int] = {}
    t = SenderTable(window=16, max_senders=2, retired_max=2, counters=counters)
    assert t.observe("a", 1, RELIABLE, 5) == NEW
    assert t.observe("a", 1, UNRELIABLE, 5) == NEW  # separate id sequences
    assert t.observe("a", 1, RELIABLE, 5) == DUPLICATE
    assert t.observe("a", 2, RELIABLE, 5) == NEW  # restarted (or a replay: can't tell)
    assert t.observe("a", 1, RELIABLE, 5) == DUPLICATE  # each life keeps its own window
    assert t.observe("a", 1, RELIABLE, 6) == NEW
    assert t.observe("a", 2, RELIABLE, 5) == DUPLICATE and t.incarnation_of("a") == 2
    assert t.observe("a", 3, RELIABLE, 1) == NEW
    assert t.observe("a", 4, RELIABLE, 1) == NEW  # 3 lives kept: 1 (least recent) forgotten
    assert t.observe("a", 1, RELIABLE, 5) == NEW  # ... and its return pushed out 2
    assert t.observe("a", 3, RELIABLE, 1) == DUPLICATE
    assert t.observe("a", 2, RELIABLE, 5) == NEW
    assert counters["new_incarnation"] == 5 and t.incarnation_of("a") == 2
    t.observe("b", 1, RELIABLE, 1)
    t.observe("c", 1, RELIABLE, 1)  # evicts "a"
    assert len(t) == 2 and counters["senders_evicted"] == 1 and t.incarnation_of("a") is None


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 300), max_size=100))
def test_ranges_round_trip(ids: set[int]) -> None:
    ranges = to_ranges(ids)
    assert {i for lo, hi in ranges for i in range(lo, hi + 1)} == ids
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ranges))  # merged, sorted


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**62), st.integers(0, 2**62)), max_size=6),
    st.sets(st.integers(0, 2**62), max_size=40),
    st.randoms(use_true_random=False),
)
def test_acked_ids_matches_brute_force(
    pairs: list[tuple[int, int]], unacked: set[int], rnd: random.Random
) -> None:
    ranges = tuple((min(a, b), max(a, b)) for a, b in pairs)
    if ranges and unacked and rnd.random() < 0.5:  # make some ranges small and relevant
        i = rnd.choice(sorted(unacked))
        ranges += ((i, i + rnd.randint(0, 3)),)
    got = set(acked_ids(ranges, unacked))
    assert got == {i for i in unacked if any(lo <= i <= hi for lo, hi in ranges)}
