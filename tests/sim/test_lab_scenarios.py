"""Scenario tests after the MIT 6.824/6.5840 Raft lab, on the simulated cluster.

Every scenario runs on ``Cluster``, whose invariants (one leader per term, log matching,
leader completeness, committed entries never change, same applied sequence, exactly-once)
are checked after every event; these tests add each scenario's own expectations.
Indices are shifted by the no-op each new leader appends (Raft §8), so tests look entries up
by their payload rather than assuming index 1, 2, 3.
"""

from __future__ import annotations

import random

import pytest

from udpraft.core.ready import Config, Role
from udpraft.core.types import EntryKind
from udpraft.sim.cluster import Cluster, SimConfig
from udpraft.sim.network import NetConfig


def make(n: int, seed: int = 1, net: NetConfig | None = None, raft: Config | None = None) -> Cluster:
    cfg = SimConfig(nodes=n, net=net or NetConfig())
    if raft is not None:
        cfg.raft = raft
    return Cluster(seed, cfg)


def connected(c: Cluster) -> list[str]:
    """Up nodes that are not cut off from every other node."""
    out = []
    for i in c.up_ids():
        if any(c.net.can_pass(i, j) for j in c.ids if j != i):
            out.append(i)
    return out


def leaders(c: Cluster, among: list[str]) -> list[str]:
    best: dict[int, list[str]] = {}
    for i in among:
        r = c.nodes[i].raft
        if r is not None and r.role == Role.LEADER:
            best.setdefault(r.term, []).append(i)
    return best[max(best)] if best else []


def check_one_leader(c: Cluster, among: list[str] | None = None, limit_ms: float = 2000) -> str:
    group = among if among is not None else connected(c)
    assert c.wait_for(lambda: len(leaders(c, group)) == 1 and _settled(c, group), limit_ms), (
        f"no single leader among {group}"
    )
    ls = leaders(c, group)
    assert len(ls) == 1, f"term has leaders {ls}"
    return ls[0]


def _settled(c: Cluster, group: list[str]) -> bool:
    ls = leaders(c, group)
    if len(ls) != 1:
        return False
    term = c.raft(ls[0]).term
    return sum(1 for i in group if c.raft(i).term == term) * 2 > len(c.ids)


def committed_at(c: Cluster, data: bytes) -> tuple[int, int]:
    """(index, number of nodes that committed the entry carrying ``data``)."""
    idx, count = 0, 0
    for i in c.up_ids():
        r = c.raft(i)
        for k in range(1, r.log.committed + 1):
            if r.log.entry(k).data == data:
                idx, count = k, count + 1
                break
    return idx, count


def one(c: Cluster, data: bytes, expected: int, limit_ms: float = 10_000) -> int:
    """6.824's one(): submit until some leader accepts and ``expected`` nodes commit it."""
    deadline = c.now + limit_ms
    while c.now < deadline:
        for i in c.up_ids():
            r = c.raft(i)
            if r.role != Role.LEADER:
                continue
            if c.propose(i, data) is None:
                continue
            if c.wait_for(lambda: committed_at(c, data)[1] >= expected, 2000):
                return committed_at(c, data)[0]
        c.run_for(50)
    raise AssertionError(f"one({data!r}) failed to reach {expected} nodes")


def n_committed(c: Cluster, data: bytes) -> int:
    return committed_at(c, data)[1]


# ---------------------------------------------------------------------------- 3A election


def test_initial_election() -> None:
    c = make(3)
    c.run_for(500)
    ld = check_one_leader(c)
    term = c.raft(ld).term
    assert term >= 1
    assert all(c.raft(i).term == term for i in c.ids)
    c.run_for(2000)
    assert c.raft(ld).term == term, "term changed without failures"
    assert leaders(c, c.ids) == [ld]


def test_reelection() -> None:
    c = make(3)
    c.run_for(500)
    l1 = check_one_leader(c)
    c.isolate(l1)
    l2 = check_one_leader(c, [i for i in c.ids if i != l1])
    assert l2 != l1
    c.reconnect(l1)  # the old leader rejoins without disrupting the new one
    l3 = check_one_leader(c)
    assert l3 == l2
    c.isolate(l3)
    other = [i for i in c.ids if i != l3]
    c.isolate(other[0])
    c.run_for(2000)
    assert leaders(c, [other[1]]) == [], "a leader without a quorum"
    c.reconnect(other[0])
    check_one_leader(c, other)
    c.reconnect(l3)
    check_one_leader(c)


def test_many_elections_seven_nodes() -> None:
    c = make(7, seed=3)
    c.run_for(500)
    check_one_leader(c)
    rng = random.Random(7)
    for _ in range(10):
        cut = rng.sample(c.ids, 3)
        for i in cut:
            c.isolate(i)
        check_one_leader(c, [i for i in c.ids if i not in cut])
        for i in cut:
            c.reconnect(i)
    check_one_leader(c)


# ---------------------------------------------------------------------------- 3B agreement


def test_basic_agree() -> None:
    c = make(3)
    c.run_for(500)
    idxs = [one(c, f"v{k}".encode(), 3) for k in range(3)]
    assert idxs == sorted(idxs) and len(set(idxs)) == 3
    assert idxs[1] == idxs[0] + 1 and idxs[2] == idxs[1] + 1


def test_follower_failure() -> None:
    c = make(3)
    c.run_for(500)
    one(c, b"a", 3)
    ld = check_one_leader(c)
    f1, f2 = [i for i in c.ids if i != ld]
    c.isolate(f1)
    one(c, b"b", 2)
    c.isolate(f2)
    assert c.propose(ld, b"c") is not None
    c.run_for(2000)
    assert n_committed(c, b"c") == 0, "committed with one node of three"


def test_leader_failure() -> None:
    c = make(3)
    c.run_for(500)
    one(c, b"a", 3)
    l1 = check_one_leader(c)
    c.isolate(l1)
    one(c, b"b", 2)
    l2 = check_one_leader(c, [i for i in c.ids if i != l1])
    c.isolate(l2)
    for i in c.ids:
        if c.raft(i).role == Role.LEADER:
            c.propose(i, b"c")
    c.run_for(2000)
    assert n_committed(c, b"c") == 0


def test_fail_agree_rejoin_catches_up() -> None:
    c = make(3)
    c.run_for(500)
    one(c, b"a", 3)
    ld = check_one_leader(c)
    f = next(i for i in c.ids if i != ld)
    c.isolate(f)
    for k in range(5):
        one(c, f"x{k}".encode(), 2)
    c.reconnect(f)
    one(c, b"after", 3)
    assert c.wait_for(lambda: c.raft(f).log.committed >= committed_at(c, b"after")[0], 2000)


def test_fail_no_agree() -> None:
    c = make(5)
    c.run_for(500)
    one(c, b"a", 5)
    ld = check_one_leader(c)
    cut = [i for i in c.ids if i != ld][:3]
    for i in cut:
        c.isolate(i)
    idx = c.propose(ld, b"never")
    assert idx is not None
    c.run_for(2000)
    assert n_committed(c, b"never") == 0
    for i in cut:
        c.reconnect(i)
    one(c, b"b", 5)  # a new leader may or may not keep "never"; either way progress resumes


def test_concurrent_starts() -> None:
    c = make(5)
    c.run_for(500)
    ld = check_one_leader(c)
    term = c.raft(ld).term
    idxs = [c.propose(ld, f"cs{k}".encode()) for k in range(5)]
    assert None not in idxs
    assert c.wait_for(lambda: all(n_committed(c, f"cs{k}".encode()) == 5 for k in range(5)), 3000)
    assert c.raft(ld).term == term


def test_rejoin_partitioned_leader_with_conflicting_entries() -> None:
    c = make(3)
    c.run_for(500)
    one(c, b"base", 3)
    l1 = check_one_leader(c)
    c.isolate(l1)
    for k in range(3):
        c.propose(l1, f"stale{k}".encode())  # never committed
    one(c, b"new1", 2)
    l2 = check_one_leader(c, [i for i in c.ids if i != l1])
    c.isolate(l2)
    c.reconnect(l1)
    one(c, b"new2", 2)
    c.reconnect(l2)
    one(c, b"final", 3)
    for i in c.ids:
        datas = [c.raft(i).log.entry(k).data for k in range(1, c.raft(i).log.last_index() + 1)]
        assert not any(d.startswith(b"stale") for d in datas), f"{i} kept uncommitted entries"


def test_backup_over_many_conflicting_entries() -> None:
    c = make(5, seed=2)
    c.run_for(500)
    one(c, b"start", 5)
    l1 = check_one_leader(c)
    f1 = next(i for i in c.ids if i != l1)
    others = [i for i in c.ids if i not in (l1, f1)]
    c.net.split([l1, f1], others)
    for k in range(60):
        c.propose(l1, f"lost{k}".encode())
    c.run_for(300)
    for k in range(60):
        one(c, f"kept{k}".encode(), 3, limit_ms=5000)
    # Now the minority becomes the majority with the same conflict on the other side.
    l2 = check_one_leader(c, others)
    o1 = next(i for i in others if i != l2)
    c.heal()
    c.isolate(l2)
    c.isolate(o1)  # l1, f1 and one of the others: the others' log must win
    rejects_before = c.net.sent_by_type.get("AppendResp", 0)
    one(c, b"merge", 3, limit_ms=10_000)
    c.heal()
    one(c, b"end", 5, limit_ms=10_000)
    sent = c.net.sent_by_type.get("AppendResp", 0) - rejects_before
    assert sent < 400, f"too many append answers ({sent}) to back up over 60 entries"
    for i in c.ids:
        assert c.raft(i).log.committed >= committed_at(c, b"end")[0]


def test_message_counts() -> None:
    raft = Config(election_ticks=30, heartbeat_ticks=10)
    c = make(3, raft=raft)
    c.run_for(1500)
    check_one_leader(c)
    total_elect = c.net.sent
    assert total_elect < 60, f"{total_elect} messages to elect a leader"
    before = c.net.sent
    for k in range(10):
        one(c, f"m{k}".encode(), 3)
    assert c.net.sent - before < 150, f"{c.net.sent - before} messages for 10 entries"
    c.run_for(200)  # let the last commit propagation and its answers land
    by_type_before = dict(c.net.sent_by_type)
    before = c.net.sent
    c.run_for(1000)
    idle = c.net.sent - before
    kinds = {k for k, v in c.net.sent_by_type.items() if v != by_type_before.get(k, 0)}
    assert kinds <= {"Heartbeat", "HeartbeatResp"}, f"idle traffic beyond heartbeats: {kinds}"
    assert idle <= 2 * 60, f"{idle} messages in an idle second"


# ---------------------------------------------------------------------------- 3C persistence


def test_persist_restart_all_leader_follower() -> None:
    c = make(3)
    c.run_for(500)
    one(c, b"p1", 3)
    for i in c.ids:
        c.crash(i)
    for i in c.ids:
        c.restart(i)
    one(c, b"p2", 3)
    ld = check_one_leader(c)
    c.crash(ld)
    c.restart(ld)
    one(c, b"p3", 3)
    ld = check_one_leader(c)
    one(c, b"p4", 2)
    f = next(i for i in c.ids if i != ld)
    c.crash(f)
    one(c, b"p5", 2)
    c.restart(f)
    one(c, b"p6", 3)
    assert committed_at(c, b"p1")[1] == 3


def test_persist_majority_crashes() -> None:
    c = make(5, seed=5)
    c.run_for(500)
    for it in range(8):
        one(c, f"i{it}".encode(), 5)
        ld = check_one_leader(c)
        fs = [i for i in c.ids if i != ld]
        c.crash(fs[0])
        c.crash(fs[1])
        one(c, f"j{it}".encode(), 3)
        c.crash(ld)
        c.crash(fs[2])
        c.crash(fs[3])
        c.restart(fs[0])
        c.restart(fs[1])
        c.restart(fs[2])
        one(c, f"k{it}".encode(), 3)
        c.restart(fs[3])
        c.restart(ld)
    one(c, b"last", 5)


def test_persist_partitioned_leader_and_follower_crash() -> None:
    c = make(3)
    c.run_for(500)
    one(c, b"a", 3)
    ld = check_one_leader(c)
    f1, f2 = [i for i in c.ids if i != ld]
    c.isolate(f2)
    one(c, b"b", 2)
    c.crash(ld)
    c.crash(f1)
    c.reconnect(f2)
    c.restart(f1)
    one(c, b"c", 2)
    c.restart(ld)
    one(c, b"d", 3)


def _figure8(c: Cluster, iters: int, rng: random.Random, unreliable: bool) -> None:
    up = set(c.ids)
    for it in range(iters):
        ld = c.leader()
        if ld is not None and ld in connected(c):
            c.propose(ld, f"f8-{it}".encode())
        c.run_for(rng.choice([rng.uniform(0, 13), rng.uniform(0, 500)]))
        ld = c.leader()
        if ld is not None:
            if unreliable:
                c.isolate(ld)
            else:
                c.crash(ld)
            up.discard(ld)
        if len(up) < 3:
            s = rng.choice([i for i in c.ids if i not in up])
            if unreliable:
                c.reconnect(s)
            else:
                c.restart(s)
            up.add(s)
    for i in c.ids:
        c.restart(i)
        c.reconnect(i)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figure8(seed: int) -> None:
    c = make(5, seed=seed)
    c.run_for(500)
    one(c, b"start", 1)
    _figure8(c, 120, random.Random(seed), unreliable=False)
    one(c, b"end", 5, limit_ms=20_000)


@pytest.mark.parametrize("seed", [1, 2])
def test_figure8_unreliable(seed: int) -> None:
    net = NetConfig(delay_ms_max=26.0, loss=0.1, long_delay=0.01)
    c = make(5, seed=seed, net=net)
    c.run_for(500)
    one(c, b"start", 1)
    _figure8(c, 120, random.Random(seed), unreliable=True)
    c.net.cfg.loss = 0.0
    c.net.cfg.long_delay = 0.0
    one(c, b"end", 5, limit_ms=20_000)


@pytest.mark.parametrize("unreliable", [False, True])
def test_churn(unreliable: bool) -> None:
    net = NetConfig(delay_ms_max=26.0, loss=0.1 if unreliable else 0.0)
    c = make(5, seed=11, net=net)
    rng = random.Random(11)
    c.run_for(500)
    acked: list[tuple[int, bytes]] = []
    for it in range(200):
        ld = c.leader()
        if ld is not None:
            data = f"churn{it}".encode()
            if c.propose(ld, data) is not None:
                c.run_for(30)
                idx, cnt = committed_at(c, data)
                if cnt:
                    acked.append((idx, data))
        x = rng.random()
        victim = rng.choice(c.ids)
        if x < 0.1:
            c.crash(victim)
        elif x < 0.2:
            c.isolate(victim)
        elif x < 0.5:
            c.restart(victim)
            c.reconnect(victim)
        c.run_for(rng.uniform(0, 50))
    c.net.cfg.loss = 0.0
    for i in c.ids:
        c.restart(i)
        c.reconnect(i)
    one(c, b"churn-end", 5, limit_ms=20_000)
    ld = check_one_leader(c)
    log = c.raft(ld).log
    for idx, data in acked:
        assert log.entry(idx).data == data, f"acknowledged entry {idx} lost"
    assert len(acked) > 10, "too few entries committed to make the check meaningful"
    assert all(e.kind in (EntryKind.NOOP, EntryKind.NORMAL) for e in c.inv.committed)


def test_a_livelock_fails_the_seed_instead_of_hanging_it() -> None:
    """Events that keep scheduling each other at one instant (what a livelocking bug does)
    stop at the cluster's event budget with an invariant failure naming it."""
    from udpraft.sim.invariants import InvariantViolation

    c = Cluster(1, SimConfig(nodes=3))
    c.max_events = 20_000

    def again() -> None:
        c.at(0.0, again)

    c.at(0.0, again)
    with pytest.raises(InvariantViolation, match="livelock"):
        c.run_for(10.0)
    assert c.events_run == 20_001
