"""Exactly-once client sessions (dissertation §6.3): udpraft.core.sessions.SessionTable."""

from __future__ import annotations

import random
from typing import Any

import pytest

from udpraft.core import SessionTable, Verdict

A, D, E = Verdict.APPLY, Verdict.DUPLICATE, Verdict.EXPIRED


def run(table: SessionTable[Any], ops: list[tuple[str, int, int]]) -> list[Verdict]:
    """Apply (client, seq, ts) entries like a state machine: check, then record on APPLY."""
    out = []
    for cid, seq, ts in ops:
        verdict, _ = table.check(cid, seq, ts)
        if verdict == Verdict.APPLY:
            table.record(cid, seq, f"{cid}:{seq}")
        out.append(verdict)
    return out


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([("c", 1, 0)], [A]),
        ([("c", 1, 0), ("c", 1, 1)], [A, D]),  # a retry after a lost reply
        ([("c", 1, 0), ("c", 2, 1), ("c", 2, 2), ("c", 1, 3)], [A, A, D, D]),
        ([("c", 2, 0)], [E]),  # unknown client with seq > 1: earlier requests may be lost
        ([("c", 5, 0), ("c", 1, 0), ("c", 5, 0)], [E, A, A]),
        ([("c", 1, 0), ("c", 3, 0), ("c", 2, 0), ("c", 3, 0), ("c", 2, 0)], [A, A, A, D, D]),
        ([("a", 1, 0), ("b", 1, 0), ("a", 1, 0), ("b", 2, 0)], [A, A, D, A]),  # per client
    ],
)
def test_apply_duplicate_expired_rules(
    ops: list[tuple[str, int, int]], expected: list[Verdict]
) -> None:
    assert run(SessionTable(), ops) == expected


def test_duplicate_returns_the_cached_result_and_lookup_finds_it() -> None:
    t: SessionTable[str] = SessionTable()
    assert t.check("c", 1, 0) == (A, None)
    t.record("c", 1, "first result")
    assert t.check("c", 1, 5) == (D, "first result")
    assert t.lookup("c", 1) == "first result"
    assert t.lookup("c", 2) is None and t.lookup("nobody", 1) is None


def test_record_for_an_unknown_client_is_ignored() -> None:
    t: SessionTable[str] = SessionTable()
    t.record("ghost", 1, "x")
    assert len(t) == 0 and t.lookup("ghost", 1) is None


@pytest.mark.parametrize(
    ("applied", "probe", "expected"),
    [
        (range(1, 11), 10, D),
        (range(1, 11), 7, D),  # inside the window: still remembered
        (range(1, 11), 6, E),  # fell below the window: cannot tell it from a duplicate
        (range(1, 11), 1, E),
        (range(1, 11), 11, A),
        (range(1, 11), 50, A),  # far ahead: pipelined requests may arrive in any order
        ([1, 2, 3, 4, 5, 6, 7, 9, 10], 8, A),  # a gap inside the window is still applicable
    ],
)
def test_window_of_remembered_seqs(applied: Any, probe: int, expected: Verdict) -> None:
    t: SessionTable[str] = SessionTable(window=4)
    assert run(t, [("c", s, 0) for s in applied]) == [A] * len(list(applied))
    assert t.check("c", probe, 0)[0] == expected


def test_window_memory_is_bounded() -> None:
    t: SessionTable[str] = SessionTable(window=8)
    run(t, [("c", s, 0) for s in range(1, 1000)])
    remembered = [s for s in range(1, 1000) if t.lookup("c", s) is not None]
    assert remembered[-1] == 999 and len(remembered) <= 8 + 1


TTL = 1000


@pytest.mark.parametrize(
    ("last_ts", "now", "expected"),
    [
        (0, 500, A),
        (0, TTL, A),  # exactly ttl old: still alive
        (0, TTL + TTL // 8 + 1, E),
        (0, 10 * TTL, E),
        (5000, 5000 + TTL - 1, A),
    ],
)
def test_ttl_expiry_is_driven_by_entry_timestamps(
    last_ts: int, now: int, expected: Verdict
) -> None:
    t: SessionTable[str] = SessionTable(ttl_ms=TTL)
    assert run(t, [("c", 1, last_ts)]) == [A]
    assert t.check("c", 2, now)[0] == expected


def test_activity_keeps_a_session_alive() -> None:
    t: SessionTable[str] = SessionTable(ttl_ms=TTL)
    ops = [("c", s, s * (TTL - 100)) for s in range(1, 20)]  # never idle for a full ttl
    assert run(t, ops) == [A] * 19


def test_expired_client_must_start_a_new_session() -> None:
    t: SessionTable[str] = SessionTable(ttl_ms=TTL)
    run(t, [("old", 1, 0), ("old", 2, 10)])
    assert run(t, [("other", 1, 5 * TTL)]) == [A]  # this entry's timestamp sweeps "old"
    assert len(t) == 1
    assert t.check("old", 3, 5 * TTL)[0] == E
    assert t.check("old", 2, 5 * TTL)[0] == E  # its cached results are gone too
    assert run(t, [("new-id", 1, 5 * TTL)]) == [A]


def test_expiry_does_not_depend_on_a_local_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    t: SessionTable[str] = SessionTable(ttl_ms=TTL)
    run(t, [("c", 1, 0)])
    monkeypatch.setattr(time, "time", lambda: 1e12)
    monkeypatch.setattr(time, "monotonic", lambda: 1e12)
    assert t.check("c", 2, 10)[0] == A


def test_least_recently_used_session_is_evicted_when_full() -> None:
    t: SessionTable[str] = SessionTable(max_sessions=2)
    assert run(t, [("c1", 1, 0), ("c2", 1, 0), ("c1", 2, 0), ("c3", 1, 0)]) == [A, A, A, A]
    assert len(t) == 2
    assert t.check("c2", 2, 0)[0] == E  # c2 was the least recently used
    assert t.check("c1", 2, 0)[0] == D


def random_log(seed: int, n: int = 400) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    nxt = {f"c{i}": 1 for i in range(6)}
    ts = 0
    out = []
    for _ in range(n):
        cid = rng.choice(sorted(nxt))
        r = rng.random()
        if r < 0.6:
            seq = nxt[cid]
            nxt[cid] += 1
        elif r < 0.9:
            seq = max(1, nxt[cid] - rng.randrange(1, 12))  # retries, some below the window
        else:
            seq = nxt[cid] + rng.randrange(1, 4)  # pipelined, out of order
        ts += rng.choice([0, 1, 50, 300, 2000])
        out.append((cid, seq, ts))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_two_tables_fed_the_same_log_decide_the_same(seed: int) -> None:
    log = random_log(seed)

    def fresh() -> SessionTable[str]:
        return SessionTable(window=8, ttl_ms=TTL, max_sessions=4)

    a, b = fresh(), fresh()
    va, vb = run(a, log), run(b, log)
    assert va == vb
    assert a.snapshot() == b.snapshot()
    assert {A, D, E} <= set(va)  # the log exercises every verdict


def test_snapshot_restore_keeps_sessions_results_and_window() -> None:
    t: SessionTable[str] = SessionTable(window=4)
    run(t, [("c", s, 0) for s in range(1, 11)] + [("d", 1, 0)])
    snap = t.snapshot()
    u: SessionTable[str] = SessionTable(window=4)
    u.restore(snap)
    assert u.snapshot() == snap and len(u) == 2
    assert u.check("c", 10, 0) == (D, "c:10")
    assert u.check("c", 6, 0)[0] == E
    assert u.check("c", 11, 0)[0] == A
    assert u.check("d", 1, 0) == (D, "d:1")


def test_snapshot_is_a_copy() -> None:
    t: SessionTable[str] = SessionTable()
    run(t, [("c", 1, 0)])
    snap = t.snapshot()
    run(t, [("c", 2, 0)])  # the original moves on...
    u: SessionTable[str] = SessionTable()
    u.restore(snap)
    assert u.lookup("c", 1) == "c:1" and u.lookup("c", 2) is None  # ...the snapshot did not
    run(u, [("c", 3, 0)])  # and a restored table does not write through into the snapshot
    w: SessionTable[str] = SessionTable()
    w.restore(snap)
    assert w.lookup("c", 3) is None


def test_restored_replica_decides_like_the_original() -> None:
    ttl = 800  # sweeps at most every 100 ms of log time
    original: SessionTable[str] = SessionTable(ttl_ms=ttl)
    run(original, [("c", 1, 0), ("x", 1, 750)])  # the sweep at ts=750 expires nothing
    replica: SessionTable[str] = SessionTable(ttl_ms=ttl)
    replica.restore(original.snapshot())
    tail = [("c", 2, 801)]  # c idle for 801 > ttl; only 51 ms since the last sweep
    assert run(original, list(tail)) == run(replica, list(tail))


def _reference_record(results: dict[int, Any], max_seq: int, seq: int, window: int) -> int:
    """The window pruning as first written (oldest first through the dict's own order)."""
    results[seq] = f"r{seq}"
    if seq > max_seq:
        max_seq = seq
        while results:
            first = next(iter(results))
            if first > seq - window:
                break
            del results[first]
    return max_seq


@pytest.mark.parametrize("seed", range(20))
def test_window_pruning_keeps_the_same_results_as_dict_order(seed: int) -> None:
    """The deque of insertion order drops exactly what walking the dict dropped, also with
    out-of-order seqs and stragglers, and survives a snapshot/restore."""
    rng = random.Random(seed)
    table: SessionTable[Any] = SessionTable(window=8)
    assert table.check("c", 1, 0)[0] == Verdict.APPLY  # the session opens with seq 1
    table.record("c", 1, "r1")
    ref: dict[int, Any] = {1: "r1"}
    max_seq = 1
    nxt = 2
    pending: list[int] = []
    for step in range(400):
        if pending and rng.random() < 0.4:
            seq = pending.pop(rng.randrange(len(pending)))  # pipelined: out of order
        else:
            seq = nxt
            nxt += 1
            if rng.random() < 0.5:
                pending.append(seq)
                continue
        verdict, _ = table.check("c", seq, 0)
        if verdict == Verdict.APPLY:
            table.record("c", seq, f"r{seq}")
            max_seq = _reference_record(ref, max_seq, seq, 8)
        assert list(table.snapshot().sessions[0][3]) == list(ref)
        if step % 97 == 0:
            fresh: SessionTable[Any] = SessionTable(window=8)
            fresh.restore(table.snapshot())
            table = fresh


@pytest.mark.parametrize("seed", range(8))
def test_check_record_decides_and_records_like_check_then_record(seed: int) -> None:
    """The one-call path of plain submits: same verdicts, cached results, expiry sweeps,
    evictions and window pruning as check() followed by record() on APPLY."""
    log = random_log(seed, 600)

    def fresh() -> SessionTable[str]:
        return SessionTable(window=8, ttl_ms=TTL, max_sessions=4)

    a, b = fresh(), fresh()
    for cid, seq, ts in log:
        va, ca = a.check(cid, seq, ts)
        if va == Verdict.APPLY:
            a.record(cid, seq, f"{cid}:{seq}")
        vb, cb = b.check_record(cid, seq, ts, f"{cid}:{seq}")
        assert (vb, cb) == (va, ca)
        assert b.snapshot() == a.snapshot()
        assert [s.order for s in b._sessions.values()] == [s.order for s in a._sessions.values()]
    assert {A, D, E} <= set(run(fresh(), log))  # the log exercises every verdict
