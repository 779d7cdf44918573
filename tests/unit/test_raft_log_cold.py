"""RaftLog's cold prefix (compact columns, core/columns.py) answers exactly like the plain list.

A log with ``hot_entries=1..3`` (entries move to the columns almost at once) and one that
never moves anything get the same random operations; every answer and every cursor must be
the same, entries compared by value. The first log is also handed most appends' column
form (``EntryBatch``: mixed runs, or a leader's uniform batch), which its freezes copy from.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.core import columns as columns_mod
from udpraft.core import log as log_mod
from udpraft.core.batch import EntryBatch
from udpraft.core.columns import ColdEntries
from udpraft.core.log import RaftLog
from udpraft.core.types import Entry, EntryKind
from udpraft.storage.runs import encode_run, encode_run_batch

NEVER = 1 << 40


def mk(index: int, term: int, i: int) -> Entry:
    kind = EntryKind.CONFIG if i % 7 == 3 else EntryKind.NOOP if i % 11 == 5 else EntryKind.NORMAL
    cid = "" if i % 3 else f"c-{i % 4}"
    return Entry(index, term, bytes([i % 256]) * (i % 5), kind, cid, i % 9, 1000 + i)


def state(log: RaftLog) -> tuple[Any, ...]:
    last = log.last_index()
    return (
        log.offset, log.offset_term, last, log.last_term(), log.first_index(), log.committed,
        log.applied, log.applying, log.stable, log.unstable_from,
        [log.term(i) for i in range(max(0, log.offset - 1), last + 2)],
        log.slice(0, last + 2),
        [log.entry(i) for i in range(log.offset, last + 1)],
    )


ops = st.lists(
    st.tuples(
        st.sampled_from(["append", "propose", "follow", "commit", "persist", "apply", "compact",
                         "restore", "query"]),
        st.integers(0, 40), st.integers(0, 40), st.integers(1, 4),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(1, 3), st.integers(0, 12), st.sampled_from([columns_mod.REF_MIN, 3]))
def test_cold_prefix_matches_plain_log(script: list[tuple[str, int, int, int]], hot: int,
                                       recovered: int, ref_min: int) -> None:
    # ref_min 3: the 3- and 4-byte payloads of mk() are kept by reference, the rest copied.
    saved, columns_mod.REF_MIN = columns_mod.REF_MIN, ref_min
    try:
        _cold_prefix_matches_plain_log(script, hot, recovered)
    finally:
        columns_mod.REF_MIN = saved


def _cold_prefix_matches_plain_log(script: list[tuple[str, int, int, int]], hot: int,
                                   recovered: int) -> None:
    start = [mk(i, 1 + i // 5, i) for i in range(1, recovered + 1)]
    a = RaftLog(start, hot_entries=hot)
    b = RaftLog(start, hot_entries=NEVER)
    term = max(1, a.last_term())
    n = 100
    for op, x, y, k in script:
        n += 1
        if op == "append":
            term += k // 4
            first = a.last_index() + 1
            new = [mk(first + j, term, n + j) for j in range(k)]
            a.append_new(new, EntryBatch.of(new) if y % 2 else None)  # mixed runs
            b.append_new(new)
        elif op == "propose":  # what a leader's propose_datas appends: one uniform batch
            first = a.last_index() + 1
            datas = tuple(bytes([n % 256]) * ((n + j) % 6) for j in range(k))
            new = [Entry(first + j, term, d, EntryKind.NORMAL, "", 0, 5000 + n)
                   for j, d in enumerate(datas)]
            a.append_new(new, EntryBatch.uniform(first, term, EntryKind.NORMAL, "", 0, 5000 + n,
                                                 datas))
            b.append_new(new)
        elif op == "follow":
            # an append from a leader: prev somewhere in the log, maybe conflicting terms
            prev = min(x, a.last_index())
            if prev < a.offset or a.term(prev) != b.term(prev):
                continue
            t = max(a.term(prev) or 0, term - (y % 2))
            new = [mk(prev + 1 + j, t, n + j) for j in range(k)]
            ra: Any
            rb: Any
            try:
                ra = a.maybe_append(prev, new, EntryBatch.of(new) if new and y % 3 else None)
            except ValueError as e:
                ra = str(e)
            try:
                rb = b.maybe_append(prev, new)
            except ValueError as e:
                rb = str(e)
            assert ra == rb
            term = max(term, t)
        elif op == "commit":
            assert a.commit_to(x) == b.commit_to(x)
        elif op == "persist":
            got = a.take_unstable()
            assert got == b.take_unstable()
            if got:
                check_pieces(a, got)
                a.stable_to(got[-1].index, got[-1].term)
                b.stable_to(got[-1].index, got[-1].term)
        elif op == "apply":
            got = a.take_committed(k)
            assert got == b.take_committed(k)
            if got:
                a.applied_to(got[-1].index)
                b.applied_to(got[-1].index)
        elif op == "compact":
            idx = min(x, a.applied, a.stable)
            a.compact(idx)
            b.compact(idx)
        elif op == "restore":
            snap_term = a.term(x) if y % 2 else term + 1
            if snap_term is None or x < a.committed:
                continue
            assert a.restore(x, snap_term) == b.restore(x, snap_term)
            term = max(term, snap_term)
        else:
            lo, hi = sorted((x, y))
            assert a.slice(lo, hi, k * 40) == b.slice(lo, hi, k * 40)
            assert a.find_conflict_by_term(x, y // 4) == b.find_conflict_by_term(x, y // 4)
            for kind in EntryKind:
                assert a.last_index_of_kind(kind, x) == b.last_index_of_kind(kind, x)
        assert state(a) == state(b)


@pytest.mark.parametrize("ref_min", [columns_mod.REF_MIN, 3, 1])
def test_cold_columns_round_trip_and_cut(ref_min: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns_mod, "REF_MIN", ref_min)
    ents = [mk(i, 2, i) for i in range(5, 25)]
    c = ColdEntries(5)
    c.extend(ents[:7])
    c.extend(ents[7:])
    assert [c.entry(i) for i in range(5, 25)] == ents
    assert [c.size_bytes(i) for i in range(5, 25)] == [e.size_bytes() for e in ents]
    c.truncate(23)  # entry 23 has a 3-byte payload: held by reference when ref_min <= 3
    assert c.last == 22
    c.drop_through(9)
    assert c.first == 10 and [c.entry(i) for i in range(10, 23)] == ents[5:18]
    other = [Entry(i, 3) for i in (23, 24)]  # empty payloads (never by reference) after the cut
    c.extend(other)
    want = ents[5:18] + other
    assert [c.entry(i) for i in range(10, 25)] == want
    assert c.entries(10, 25) == want
    assert [c.size_bytes(i) for i in range(10, 25)] == [e.size_bytes() for e in want]
    if ref_min <= 4:
        assert c.refs and min(c.refs) >= 10 and max(c.refs) <= 24, "held by reference"
    assert all(len(c.refs[i]) >= ref_min for i in c.refs)
    assert c.rfind_kind(int(EntryKind.CONFIG), 10, 24) == max(
        e.index for e in want if e.kind == EntryKind.CONFIG)


def test_million_entries_are_compact() -> None:
    """The point of it: ~10x less memory per entry than Entry objects (10-byte payloads)."""
    import tracemalloc

    n = 200_000
    tracemalloc.start()
    log = RaftLog(hot_entries=1000)
    for lo in range(1, n + 1, 5000):
        log.append_new([Entry(i, 1, b"0123456789", EntryKind.NORMAL, "c-abc", i, 17)
                        for i in range(lo, lo + 5000)])
        log.take_unstable()
        log.stable_to(log.last_index(), 1)
        log.commit_to(log.last_index())
        log.take_committed(10**9)
        log.applied_to(log.last_index())
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert log.last_index() == n and log.entry(n // 2).seq == n // 2
    assert size / n < 60, f"{size / n:.0f} bytes per entry"


def test_entries_freeze_in_small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Applied entries move to the columns ~FREEZE_CHUNK at a time, not hot_entries at a
    time: one move of 16,384 entries stalled every node for ~10 ms at the same index."""
    sizes: list[int] = []
    real = columns_mod.ColdEntries.extend

    def spy(self: columns_mod.ColdEntries, ents: Any) -> None:
        sizes.append(len(ents))
        real(self, ents)

    log = RaftLog()
    hot, chunk, batch = log_mod.HOT_ENTRIES, log_mod.FREEZE_CHUNK, 100
    n = hot + 10 * chunk
    monkeypatch.setattr(columns_mod.ColdEntries, "extend", spy)
    for lo in range(1, n + 1, batch):
        log.append_new([Entry(i, 1, b"x", EntryKind.NORMAL, "c", i, 1) for i in range(lo, lo + batch)])
        log.take_unstable()
        log.stable_to(log.last_index(), 1)
        log.commit_to(log.last_index())
        log.take_committed(10**9)
        log.applied_to(log.last_index())
        assert log.last_index() - log._base <= hot + chunk + batch
    assert sizes and max(sizes) <= chunk + batch and sum(sizes) >= n - hot - chunk - batch
    assert [log.entry(i).seq for i in (1, n // 2, n)] == [1, n // 2, n]


def check_pieces(log: RaftLog, got: list[Entry]) -> None:
    """Where the log hands out the column form of entries taken for storage, it is theirs:
    a WAL run encoded from it is the same bytes as one encoded from the entries."""
    pieces = log.batch_pieces(got[0].index, got[-1].index)
    if pieces is None:
        return
    pos = 0
    for batch, off, cnt in pieces:
        part = got[pos : pos + cnt]
        assert encode_run_batch(batch, off, part) == encode_run(part)
        pos += cnt
    assert pos == len(got)


def test_batch_pieces_cover_exactly_or_not_at_all() -> None:
    log = RaftLog(hot_entries=2)
    one = [mk(i, 1, i) for i in range(1, 4)]
    log.append_new(one, EntryBatch.of(one))
    two = [mk(i, 1, i) for i in range(4, 6)]
    log.append_new(two, EntryBatch.of(two))
    got = log.take_unstable()
    pieces = log.batch_pieces(2, 5)
    assert pieces is not None and [(b.first, off, n) for b, off, n in pieces] == [(1, 1, 2), (4, 0, 2)]
    check_pieces(log, got)
    three = [mk(6, 1, 6)]
    log.append_new(three)  # no column form
    assert log.batch_pieces(5, 6) is None and log.batch_pieces(6, 6) is None
    assert log.batch_pieces(4, 5) is not None


def _settle(log: RaftLog) -> None:
    """Commit, persist and apply everything (the hot list then freezes)."""
    log.commit_to(log.last_index())
    got = log.take_unstable()
    if got:
        log.stable_to(got[-1].index, got[-1].term)
    done = log.take_committed(1 << 20)
    if done:
        log.applied_to(done[-1].index)


def test_a_conflict_drops_the_batches_of_the_entries_it_cuts() -> None:
    log = RaftLog(hot_entries=1)
    old = [mk(i, 1, i) for i in range(1, 7)]
    log.append_new(old, EntryBatch.of(old))
    new = [mk(i, 2, 50 + i) for i in range(3, 6)]  # a new leader's entries from index 3 on
    assert log.maybe_append(2, new, EntryBatch.of(new)) == 3
    _settle(log)
    assert log.slice(1, 6) == old[:2] + new


def test_a_snapshot_that_replaces_the_log_drops_its_batches() -> None:
    log = RaftLog(hot_entries=1)
    old = [mk(i, 1, i) for i in range(1, 9)]
    log.append_new(old, EntryBatch.of(old))
    assert not log.restore(4, 3)  # the log does not hold (4, 3): all of it goes
    new = [mk(i, 3, 80 + i) for i in range(5, 9)]
    assert log.maybe_append(4, new, EntryBatch.of(new)) is None
    _settle(log)
    assert log.slice(5, 9) == new


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 90), st.integers(0, 3)), max_size=40),
       st.integers(0, 45), st.integers(0, 45), st.integers(-40, 400), st.booleans())
def test_take_bytes_cuts_where_a_walk_over_size_bytes_would(
        sizes: list[tuple[int, int]], lo: int, hi: int, max_bytes: int, have: bool) -> None:
    ents = [Entry(i + 1, 1, b"x" * d, client_id="c" * c) for i, (d, c) in enumerate(sizes)]
    hi = min(hi, len(ents))  # callers stay inside the list
    want: list[Entry] = []
    total = 0
    for e in ents[lo:hi]:
        total += e.size_bytes()
        if (want or have) and total > max_bytes:
            break
        want.append(e)
    assert log_mod._take_bytes(ents, lo, hi, max_bytes, have) == want


def test_take_bytes_edges() -> None:
    ents = [Entry(i, 1, b"x" * 10) for i in range(1, 9)]  # 42 bytes each
    assert len(log_mod._take_bytes(ents, 0, 8, 84)) == 2  # exactly full
    assert len(log_mod._take_bytes(ents, 0, 8, 83)) == 1
    assert log_mod._take_bytes(ents, 0, 8, 41, have=True) == []
    assert log_mod._take_bytes(ents, 0, 8, 0) == ents[:1]  # at least one
    assert log_mod._take_bytes(ents, 2, 8, 10_000) == ents[2:]


def test_compaction_keeps_the_batches_of_the_entries_after_it() -> None:
    log = RaftLog(hot_entries=3)
    ents = [mk(i, 1, i) for i in range(1, 11)]
    batch = EntryBatch.of(ents)
    log.append_new(ents, batch)
    got = log.take_unstable()
    log.stable_to(got[-1].index, got[-1].term)
    log.commit_to(10)
    log.applied_to(log.take_committed(4)[-1].index)
    log.compact(3)
    pieces = log.batch_pieces(4, 10)
    assert pieces is not None and [(b is batch, off, n) for b, off, n in pieces] == [(True, 3, 7)]
    _settle(log)  # everything applied: entries 4..7 freeze from the batch
    assert log.slice(4, 11) == ents[3:]
    assert log.batch_pieces(8, 10) is not None
