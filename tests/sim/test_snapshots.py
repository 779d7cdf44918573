"""Log compaction and InstallSnapshot on the simulated cluster (the 6.824 3D scenarios).

Nodes snapshot their state machine every ``EVERY`` applied entries and compact the log; a
follower that falls behind the compaction point catches up by InstallSnapshot. The cluster's
invariants still run after every event, plus: the snapshot a node installs or makes holds
exactly the committed prefix it claims.
"""

from __future__ import annotations

import random

from udpraft.core.ready import Config, Role
from udpraft.sim.cluster import Cluster, SimConfig
from udpraft.sim.network import NetConfig

EVERY = 10
LOG_BOUND = 3 * EVERY  # entries a node keeps in memory beyond its snapshot, at most + slack


def make(n: int = 3, seed: int = 1, loss: float = 0.0) -> Cluster:
    cfg = SimConfig(nodes=n, net=NetConfig(loss=loss), snapshot_every=EVERY,
                    raft=Config(election_ticks=10, heartbeat_ticks=2))
    return Cluster(seed, cfg)


def index_of(c: Cluster, data: bytes) -> int:
    for e in c.inv.committed:
        if e.data == data:
            return e.index
    return 0


def submit(c: Cluster, data: bytes, expected: int, limit_ms: float = 10_000) -> int:
    deadline = c.now + limit_ms
    while c.now < deadline:
        ld = c.leader()
        if ld is not None and c.propose(ld, data) is not None:
            def done() -> bool:
                idx = index_of(c, data)
                return idx > 0 and sum(
                    1 for i in c.up_ids() if c.raft(i).log.committed >= idx
                ) >= expected

            if c.wait_for(done, 2000):
                return index_of(c, data)
        c.run_for(50)
    raise AssertionError(f"{data!r} did not reach {expected} nodes")


def log_len(c: Cluster, nid: str) -> int:
    r = c.raft(nid)
    return r.log.last_index() - r.log.offset


def test_snapshot_basic_keeps_the_log_bounded() -> None:
    c = make()
    c.run_for(500)
    for k in range(150):
        submit(c, b"b%d" % k, 3)
    c.run_for(300)
    for i in c.ids:
        assert c.nodes[i].snap.index > 100, f"{i} never snapshotted"
        assert log_len(c, i) <= LOG_BOUND, f"{i} keeps {log_len(c, i)} entries"
        assert len(c.nodes[i].synced_log) <= LOG_BOUND


def _lagging(c: Cluster, nid: str, crash: bool) -> None:
    if crash:
        c.crash(nid)
    else:
        c.isolate(nid)


def _back(c: Cluster, nid: str, crash: bool) -> None:
    if crash:
        c.restart(nid)
    else:
        c.reconnect(nid)


def _install_scenario(crash: bool, loss: float, seed: int) -> None:
    c = make(loss=loss, seed=seed)
    c.run_for(500)
    submit(c, b"first", 3)
    rng = random.Random(seed)
    for rnd in range(4):
        ld = c.leader()
        assert ld is not None
        victim = rng.choice([i for i in c.ids if i != ld])
        _lagging(c, victim, crash)
        for k in range(3 * EVERY):
            submit(c, b"r%d-%d" % (rnd, k), 2)
        ld2 = c.leader()
        assert ld2 is not None and c.raft(ld2).log.offset > c.nodes[victim].applied, (
            "the leader compacted past the lagging node"
        )
        _back(c, victim, crash)
        last = submit(c, b"sync%d" % rnd, 3)
        def caught_up(v: str = victim, t: int = last) -> bool:
            return c.nodes[v].applied >= t

        assert c.wait_for(caught_up, 5000)
        raft_v = c.raft(victim)
        installed = raft_v.counters.get("snapshot_replaced_log", 0) + raft_v.counters.get(
            "snapshot_kept_suffix", 0)
        assert installed or crash, "the lagging follower did not install a snapshot"


def test_snapshot_install() -> None:
    _install_scenario(crash=False, loss=0.0, seed=1)


def test_snapshot_install_unreliable() -> None:
    _install_scenario(crash=False, loss=0.1, seed=2)


def test_snapshot_install_crash() -> None:
    _install_scenario(crash=True, loss=0.0, seed=3)


def test_snapshot_install_uncrash_unreliable() -> None:
    _install_scenario(crash=True, loss=0.1, seed=4)


def test_snapshot_all_crash_index_never_goes_back() -> None:
    c = make(seed=5)
    c.run_for(500)
    for rnd in range(4):
        for k in range(EVERY + 3):
            submit(c, b"a%d-%d" % (rnd, k), 3)
        before = {i: c.raft(i).log.committed for i in c.ids}
        for i in c.ids:
            c.crash(i)
        for i in c.ids:
            c.restart(i)
        for i in c.ids:
            # restarted from the durable snapshot: already at least there
            assert c.raft(i).log.committed >= c.nodes[i].snap.index > 0
        idx = submit(c, b"after%d" % rnd, 3)
        assert idx > max(before.values())


def test_snapshot_init_restart_write_restart() -> None:
    c = make(seed=6)
    c.run_for(500)
    for k in range(EVERY * 2):
        submit(c, b"i%d" % k, 3)
    for i in c.ids:
        c.crash(i)
        c.restart(i)
    submit(c, b"one-more", 3)
    for k in range(EVERY):
        submit(c, b"j%d" % k, 3)
    snap_before = {i: c.nodes[i].snap.index for i in c.ids}
    for i in c.ids:
        c.crash(i)
        c.restart(i)
    last = submit(c, b"final", 3)
    for i in c.ids:
        assert c.nodes[i].snap.index >= snap_before[i]
        def applied(n: str = i) -> bool:
            return c.nodes[n].applied >= last

        assert c.wait_for(applied, 3000)
    assert any(c.raft(i).role == Role.LEADER for i in c.ids)


def test_stale_and_duplicate_snapshots_are_ignored() -> None:
    c = make(seed=7, loss=0.0)
    c.net.cfg.dup = 0.5  # every other message arrives twice, InstallSnapshot included
    c.run_for(500)
    ld = c.leader()
    assert ld is not None
    victim = next(i for i in c.ids if i != ld)
    c.isolate(victim)
    for k in range(3 * EVERY):
        submit(c, b"d%d" % k, 2)
    c.reconnect(victim)
    last = submit(c, b"dup-end", 3)
    assert c.wait_for(lambda: c.nodes[victim].applied >= last, 5000)
    r = c.raft(victim)
    assert r.counters.get("snapshot_replaced_log", 0) + r.counters.get("snapshot_kept_suffix", 0) >= 1
