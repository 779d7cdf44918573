"""LogService.snapshot()/restore(): sessions, hidden indices and the application's state."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from udpraft.core.sessions import Verdict
from udpraft.core.types import Entry, EntryKind
from udpraft.service.logservice import APP_PREFIX, LogService, Outcome


class Counter:
    """An application with in-place snapshot/restore."""

    def __init__(self) -> None:
        self.total = 0
        self.seen: list[int] = []

    def apply(self, index: int, data: bytes) -> bytes:
        self.total += int(data)
        self.seen.append(index)
        return str(self.total).encode()

    def snapshot(self) -> bytes:
        return f"{self.total}:{','.join(map(str, self.seen))}".encode()

    def restore(self, data: bytes) -> None:
        total, _, seen = data.decode().partition(":")
        self.total = int(total)
        self.seen = [int(x) for x in seen.split(",") if x]


class FactoryApp:
    """Like the KV machine: ``restore`` is a classmethod building a new object, and hooks
    (listeners) are wired onto the live object at start-up."""

    def __init__(self) -> None:
        self.value = b""
        self.listeners: list[Callable[[bytes], None]] = []

    def apply(self, index: int, data: bytes) -> bytes:
        self.value = data
        for f in self.listeners:
            f(data)
        return b"ok"

    def snapshot(self) -> bytes:
        return self.value

    @classmethod
    def restore(cls, data: bytes) -> FactoryApp:
        m = cls()
        m.value = data
        return m


class NoSnapshotApp:
    def apply(self, index: int, data: bytes) -> bytes:
        return b""


def workload(seed: int, n: int = 400) -> list[Entry]:
    """Entries from a few clients: new requests, retries (duplicates), app commands, no-ops,
    an unknown session (expired), advancing timestamps."""
    rng = random.Random(seed)
    out: list[Entry] = []
    seqs = {f"c{i}": 0 for i in range(5)}
    ts = 1_000
    for i in range(1, n + 1):
        ts += rng.randrange(0, 50)
        r = rng.random()
        if r < 0.05:
            out.append(Entry(i, 1, b"", EntryKind.NOOP, ts_ms=ts))
            continue
        cid = rng.choice(sorted(seqs))
        if r < 0.2 and seqs[cid]:
            seq = rng.randrange(1, seqs[cid] + 1)  # a retry
        elif r < 0.23:
            cid, seq = f"ghost{i}", 7  # seq > 1 of a session nobody opened: expired
        else:
            seqs[cid] += 1
            seq = seqs[cid]
        data = APP_PREFIX + str(rng.randrange(10)).encode() if rng.random() < 0.5 else b"p%d" % i
        out.append(Entry(i, 1 + i // 100, data, EntryKind.NORMAL, cid, seq, ts))
    return out


def run(svc: LogService, entries: list[Entry]) -> list[Outcome | None]:
    return [svc.apply(e) for e in entries]


def test_round_trip_gives_identical_decisions_afterwards() -> None:
    ents = workload(1)
    a = LogService(Counter())
    run(a, ents[:250])
    data = a.snapshot()
    b = LogService(Counter())
    b.restore(data)
    assert b.applied_index == 250
    assert b.snapshot() == data, "restore then snapshot gives the same bytes"
    assert run(a, ents[250:]) == run(b, ents[250:])
    assert a.snapshot() == b.snapshot()
    assert isinstance(a.app, Counter) and isinstance(b.app, Counter)
    assert (a.app.total, a.app.seen) == (b.app.total, b.app.seen)
    # the sessions came across: a retry of something applied before the snapshot is a hit
    e = next(e for e in ents[:250] if e.client_id.startswith("c") and e.seq == 1)
    hit = b.lookup(e.client_id, 1)
    assert hit is not None and hit.verdict == Verdict.DUPLICATE and hit.index <= 250


def test_snapshot_is_deterministic_across_replicas() -> None:
    ents = workload(2)
    replicas = [LogService(Counter()) for _ in range(3)]
    for r in replicas:
        run(r, ents)
    snaps = {r.snapshot() for r in replicas}
    assert len(snaps) == 1


def test_retried_request_after_restore_is_deduplicated() -> None:
    a = LogService(Counter())
    a.apply(Entry(1, 1, APP_PREFIX + b"5", client_id="c", seq=1, ts_ms=10))
    b = LogService(Counter())
    b.restore(a.snapshot())
    out = b.apply(Entry(2, 2, APP_PREFIX + b"5", client_id="c", seq=1, ts_ms=20))
    assert out == Outcome(Verdict.DUPLICATE, 1, 1, b"5")
    assert isinstance(b.app, Counter) and b.app.total == 5, "not applied twice"
    assert not b.visible(Entry(2, 2, b"x", client_id="c", seq=1)), "the duplicate is hidden"


def test_hidden_indices_only_above_the_floor() -> None:
    a = LogService()
    run(a, workload(3, 100))
    hidden = set(a.hidden)
    assert hidden
    b = LogService()
    b.restore(a.snapshot())
    assert b.hidden == set(), "every hidden index is at or below the snapshot"
    c = LogService()
    c.restore(a.snapshot(hidden_above=50))
    assert c.hidden == {i for i in hidden if i > 50}
    a.prune_hidden(60)
    assert a.hidden == {i for i in hidden if i > 60}


def test_factory_style_restore_is_adopted_keeping_listeners() -> None:
    a = LogService(FactoryApp())
    a.apply(Entry(1, 1, APP_PREFIX + b"state-1"))
    live = FactoryApp()
    heard: list[bytes] = []
    live.listeners.append(heard.append)
    b = LogService(live)
    b.restore(a.snapshot())
    assert b.app is live and live.value == b"state-1"
    b.apply(Entry(2, 1, APP_PREFIX + b"state-2"))
    assert heard == [b"state-2"], "the listener wired before the restore still hears"


def test_application_attached_after_restore_gets_its_state() -> None:
    a = LogService(Counter())
    a.apply(Entry(1, 1, APP_PREFIX + b"7"))
    b = LogService()  # the runtime restores before the node attaches its application
    b.restore(a.snapshot())
    assert b.snapshot() == a.snapshot(), "state not yet claimed is carried along"
    app = Counter()
    b.app = app
    assert app.total == 7 and app.seen == [1]
    with pytest.raises(RuntimeError, match="cannot restore"):
        c = LogService()
        c.restore(a.snapshot())
        c.app = NoSnapshotApp()


def test_application_without_snapshot_support() -> None:
    a = LogService(NoSnapshotApp())
    a.apply(Entry(1, 1, APP_PREFIX + b"x", client_id="c", seq=1))
    b = LogService(NoSnapshotApp())
    b.restore(a.snapshot())
    assert b.lookup("c", 1) is not None


@pytest.mark.parametrize("cut", [0, 3, 10, -1])
def test_malformed_bytes_raise_value_error(cut: int) -> None:
    a = LogService(Counter())
    run(a, workload(4, 50))
    data = a.snapshot()
    with pytest.raises(ValueError):
        LogService(Counter()).restore(data[:cut] if cut >= 0 else data + b"x")
    with pytest.raises(ValueError):
        LogService().restore(b"XXXX" + data[4:])


@pytest.mark.parametrize("seed", range(5))
def test_apply_quietly_has_the_effects_of_apply(seed: int) -> None:
    # Mixed with plain session-less entries (the library's), in random chunks.
    rng = random.Random(seed)
    entries = []
    for e in workload(seed):
        entries.append(e)
        if rng.random() < 0.3:
            entries.append(Entry(0, e.term, b"plain", ts_ms=e.ts_ms))
    entries = [Entry(i + 1, e.term, e.data, e.kind, e.client_id, e.seq, e.ts_ms)
               for i, e in enumerate(entries)]
    a, b = LogService(Counter()), LogService(Counter())
    run(a, entries)
    i = 0
    while i < len(entries):
        k = rng.randrange(1, 40)
        b.apply_quietly(entries[i : i + k])
        i += k
    assert b.applied_index == a.applied_index == len(entries)
    assert b.snapshot() == a.snapshot() and b.hidden == a.hidden
    assert (b.duplicates, b.expired) == (a.duplicates, a.expired)
    with pytest.raises(AssertionError, match="out of order"):
        b.apply_quietly([Entry(len(entries) + 2, 9, b"gap")])


@pytest.mark.parametrize("seed", range(6))
def test_apply_all_gives_the_outcomes_of_apply(seed: int) -> None:
    # Long runs of plain entries (the fast path) between session, application, no-op and
    # config entries, applied in random chunks: outcomes and state match apply's.
    rng = random.Random(seed)
    entries: list[Entry] = []
    for e in workload(seed):
        entries.append(e)
        for _ in range(rng.choice([0, 0, 1, 5, 60])):
            entries.append(Entry(0, e.term, rng.choice([b"plain", b"", b"\xffudpraft"]),
                                 ts_ms=e.ts_ms))
        if rng.random() < 0.05:
            entries.append(Entry(0, e.term, b"", rng.choice([EntryKind.NOOP, EntryKind.CONFIG])))
    entries = [Entry(i + 1, e.term, e.data, e.kind, e.client_id, e.seq, e.ts_ms)
               for i, e in enumerate(entries)]
    a, b = LogService(Counter()), LogService(Counter())
    want = [a.apply(e) for e in entries]
    got: list[Outcome | None] = []
    i = 0
    while i < len(entries):
        k = rng.randrange(1, 80)
        got.extend(b.apply_all(entries[i : i + k]))
        i += k
    assert got == want
    assert b.applied_index == a.applied_index == len(entries)
    assert b.snapshot() == a.snapshot() and b.hidden == a.hidden
    with pytest.raises(AssertionError, match="out of order"):
        b.apply_all([Entry(len(entries) + 2, 9, b"gap")])


def test_apply_all_of_plain_entries() -> None:
    svc = LogService(Counter())
    outs = svc.apply_all([Entry(i, 1, b"x") for i in range(1, 101)])
    assert [(o.verdict, o.index, o.term, o.result) for o in outs if o] == [
        (Verdict.APPLY, i, 1, b"") for i in range(1, 101)
    ]
    assert svc.applied_index == 100 and not svc.hidden
    with pytest.raises(AssertionError, match="out of order"):
        svc.apply_all([Entry(101, 1, b"x"), Entry(103, 1, b"gap")])


def run_workload(seed: int, n: int = 1500) -> list[Entry]:
    """Plain session submits as pipelining clients send them: requests of 1-12 consecutive
    seqs proposed together (one timestamp, one term), interleaved, with retries of whole
    or partial requests, requests that skip ahead, seq 1 opening a session inside a run,
    unknown sessions, idle gaps long enough to expire sessions, term changes mid-request,
    and plain session-less entries between them."""
    rng = random.Random(seed)
    out: list[Entry] = []
    nxt = {f"c{i}": 1 for i in range(4)}
    ts, term = 1_000, 1
    while len(out) < n:
        r = rng.random()
        ts += rng.choice([0, 0, 0, 1, 5, 30]) + (200 if rng.random() < 0.01 else 0)  # > TTL
        if r < 0.03:
            term += 1
        cid = rng.choice(sorted(nxt))
        if rng.random() < 0.03:  # the client starts a new session (as after an expiry)
            del nxt[cid]
            cid = f"{cid}+"
            nxt[cid] = 1
        k = rng.randrange(1, 13)
        if r < 0.15 and nxt[cid] > 1:  # a retry, maybe partial, maybe overlapping new seqs
            s0 = rng.randrange(max(1, nxt[cid] - 8), nxt[cid])
        elif r < 0.16 and nxt[cid] > 20:  # a retry so late it fell below the window
            s0 = nxt[cid] - 20
        elif r < 0.18:
            cid, s0 = f"ghost{len(out)}", rng.choice([1, 3])
        elif r < 0.22:
            s0 = nxt[cid] + rng.randrange(1, 12)  # skipped ahead (earlier seqs still to come)
        elif r < 0.25:
            cid, s0 = f"new{len(out)}", 1  # a session opened by a run from seq 1
        else:
            s0 = nxt.get(cid, 1)
        if cid in nxt:
            nxt[cid] = max(nxt[cid], s0 + k)
        split = rng.randrange(0, k) if rng.random() < 0.1 else -1  # the term changes inside
        for j in range(k):
            t = term + (1 if split >= 0 and j >= split else 0)
            out.append(Entry(0, t, b"p", EntryKind.NORMAL, cid, s0 + j, ts))
        if split >= 0:
            term += 1
        for _ in range(rng.choice([0, 0, 0, 1, 3])):
            out.append(Entry(0, term, b"q", ts_ms=ts))
    return [Entry(i + 1, e.term, e.data, e.kind, e.client_id, e.seq, e.ts_ms)
            for i, e in enumerate(out)]


@pytest.mark.parametrize("seed", range(40))
def test_session_runs_apply_exactly_as_entry_by_entry(seed: int) -> None:
    """Pipelining clients' requests (runs of consecutive seqs) through apply_all and
    apply_quietly: outcomes and state match apply() entry by entry after every chunk, for
    any chunking, with a small window (16) and TTL (100 ms) so refusals, duplicates, trims,
    sweeps and expiries all happen."""
    entries = run_workload(seed)
    rng = random.Random(seed)

    def svc() -> LogService:
        return LogService(session_window=16, session_ttl_ms=100)

    a, b, c = svc(), svc(), svc()
    want: list[Outcome | None] = []
    got: list[Outcome | None] = []
    i = 0
    while i < len(entries):
        k = rng.choice([1, 2, 7, 40, 300])
        chunk = entries[i : i + k]
        want.extend(a.apply(e) for e in chunk)
        got.extend(b.apply_all(chunk))
        c.apply_quietly(chunk)
        i += k
        for x in (b, c):  # the same state after every chunk, not just at the end
            assert x.applied_index == a.applied_index == min(i, len(entries))
            assert x.snapshot() == a.snapshot() and x.hidden == a.hidden
            assert (x.duplicates, x.expired) == (a.duplicates, a.expired)
    assert got == want
    verdicts = {o.verdict for o in want if o is not None}
    assert verdicts == {Verdict.APPLY, Verdict.DUPLICATE, Verdict.EXPIRED}  # all exercised


@pytest.mark.parametrize("seed", range(5))
def test_lookup_all_is_lookup_for_each_seq(seed: int) -> None:
    """The leader's per-request cache check (lookup_all) answers exactly what lookup()
    answers seq by seq — applied, refused, trimmed and unknown seqs and sessions — checked
    all along a workload of pipelining clients."""
    entries = run_workload(seed, 600)
    svc = LogService(session_window=16, session_ttl_ms=100)
    latest: dict[str, int] = {"nobody": 5}
    rng = random.Random(seed)
    hits = 0
    for k, e in enumerate(entries):
        svc.apply(e)
        if e.client_id:
            latest[e.client_id] = e.seq
        if k % 20:
            continue
        for cid, seq in latest.items():
            seqs = list(range(max(0, seq - rng.randrange(0, 20)), seq + 3))
            want = {s: o for s in seqs if (o := svc.lookup(cid, s)) is not None}
            assert svc.lookup_all(cid, seqs) == want
            hits += len(want)
    assert hits > 100
