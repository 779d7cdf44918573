"""Single-server membership changes (dissertation §4.1) on the simulated cluster.

Each scenario runs under the simulator's invariants (one leader per term, log matching,
leader completeness, committed entries never change, applied sequences); the tests add
their own expectations. The last tests plant membership bugs and check that a scenario or
the seed sweep catches them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.sim.test_lab_scenarios import check_one_leader, make, one
from udpraft.core.errors import InvalidRequest, ProposalDropped
from udpraft.core.membership import Membership
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Role
from udpraft.core.types import Entry, EntryKind
from udpraft.sim.cluster import Cluster
from udpraft.sim.invariants import InvariantViolation
from udpraft.sim.run import run_seed


def committed_change(c: Cluster, ld: str, op: str, target: str, limit_ms: float = 3000) -> int:
    settle(c, ld)
    idx = c.conf_change(ld, op, target)
    assert idx is not None, f"{ld} refused {op} {target}"
    assert c.wait_for(lambda: c.raft(ld).log.committed >= idx or c.leader() != ld, limit_ms)
    assert c.wait_for(lambda: len(c.inv.committed) >= idx, limit_ms)
    assert c.inv.committed[idx - 1].kind == EntryKind.CONFIG
    return idx


def settle(c: Cluster, ld: str) -> None:
    """Wait until ``ld`` committed an entry of its term (its no-op): changes are allowed."""
    r = c.raft(ld)
    assert c.wait_for(lambda: r.log.term(r.log.committed) == r.term, 3000)


def caught_up(c: Cluster, ld: str, peer: str) -> Callable[[], bool]:
    def cond() -> bool:
        r = c.raft(ld)
        pr = r.progress.get(peer)
        return pr is not None and pr.match == r.log.last_index()

    return cond


def add_voter(c: Cluster, ld: str) -> str:
    nid = c.add_node()
    committed_change(c, ld, "add_learner", nid)
    assert c.wait_for(lambda: c.raft(nid).conf.learners == (nid,), 3000)
    assert c.wait_for(caught_up(c, ld, nid), 3000)
    committed_change(c, ld, "promote", nid)
    return nid


def test_add_node_and_promote_it_becomes_a_real_voter() -> None:
    c = make(3, seed=11)
    ld = check_one_leader(c)
    one(c, b"before", 3)
    n4 = add_voter(c, ld)
    assert c.raft(ld).voters == ("n1", "n2", "n3", n4)
    assert c.raft(ld).quorum == 3
    assert c.wait_for(lambda: c.raft(n4).voters == ("n1", "n2", "n3", n4), 2000)
    one(c, b"four", 4)
    # With 4 voters a quorum is 3: crash one original follower; the new node must count.
    victim = next(i for i in ("n1", "n2", "n3") if i != ld)
    c.crash(victim)
    one(c, b"needs-n4", 3)
    assert c.nodes[n4].applied >= c.raft(ld).log.committed - 5


def test_learner_gets_entries_but_does_not_count() -> None:
    c = make(3, seed=12)
    ld = check_one_leader(c)
    n4 = c.add_node()
    committed_change(c, ld, "add_learner", n4)
    one(c, b"x", 4)  # the learner receives and commits entries
    r4 = c.raft(n4)
    assert r4.role == Role.FOLLOWER and n4 not in r4.voters
    # Two voters down: leader + learner are not a quorum of 3 voters.
    for i in ("n1", "n2", "n3"):
        if i != ld:
            c.crash(i)
    idx = c.propose(ld, b"no-quorum")
    assert idx is not None
    c.run_for(1500)
    assert c.raft(ld).log.committed < idx or c.leader() != ld
    assert all(e.data != b"no-quorum" for e in c.inv.committed)
    assert c.raft(n4).role != Role.LEADER and c.raft(n4).term <= c.raft(ld).term


def test_remove_a_follower() -> None:
    c = make(5, seed=13)
    ld = check_one_leader(c)
    victim = next(i for i in c.ids if i != ld)
    committed_change(c, ld, "remove", victim)
    r = c.raft(ld)
    assert victim not in r.voters and victim in r.conf.removed and victim not in r.progress
    assert r.quorum == 3
    one(c, b"after-remove", 4)
    c.crash(victim)
    # 4 voters left, quorum 3: one more crash is still fine.
    c.crash(next(i for i in c.ids if i not in (ld, victim)))
    one(c, b"still-live", 3)


def test_remove_the_leader_it_steps_down_after_commit() -> None:
    c = make(5, seed=14)
    old = check_one_leader(c)
    one(c, b"x", 5)
    settle(c, old)
    idx = c.conf_change(old, "remove", old)
    assert idx is not None
    r = c.raft(old)
    assert old not in r.voters and r.role == Role.LEADER  # effective on append, still leads
    assert c.wait_for(lambda: c.raft(old).role != Role.LEADER, 3000)
    assert c.raft(old).counters.get("removed_leader_step_down") == 1
    assert c.raft(old).log.committed >= idx
    assert c.wait_for(lambda: c.leader() not in (None, old), 5000)
    new = c.leader()
    assert new is not None and new != old
    assert old not in c.raft(new).voters
    one(c, b"after", 4)
    c.run_for(2000)
    assert c.raft(old).role == Role.FOLLOWER  # a removed node never campaigns
    assert c.leader() == new


def test_removed_node_campaigning_does_not_disrupt() -> None:
    c = make(5, seed=15)  # pre-vote and check-quorum are on by default
    ld = check_one_leader(c)
    victim = next(i for i in c.ids if i != ld)
    c.isolate(victim)  # it never hears of its removal
    committed_change(c, ld, "remove", victim)
    c.run_for(1500)  # the victim times out and pre-votes, in vain
    term = c.raft(ld).term
    c.reconnect(victim)
    c.run_for(3000)
    assert c.leader() == ld and c.raft(ld).term == term
    assert c.raft(victim).role != Role.LEADER
    # Without pre-vote to hold it back, its term would be far ahead: it did keep trying.
    assert c.raft(victim).role in (Role.PRE_CANDIDATE, Role.FOLLOWER)
    one(c, b"undisturbed", 4)


def test_one_change_at_a_time_and_ids_never_reused() -> None:
    c = make(3, seed=16)
    ld = check_one_leader(c)
    n4 = c.add_node()
    settle(c, ld)
    idx = c.conf_change(ld, "add_learner", n4)
    assert idx is not None
    with pytest.raises(ProposalDropped):
        c.raft(ld).propose_conf_change("add_learner", "n99")
    assert c.wait_for(lambda: c.raft(ld).log.committed >= idx, 2000)
    committed_change(c, ld, "remove", n4)
    with pytest.raises(InvalidRequest):
        c.raft(ld).propose_conf_change("add_learner", n4)
    with pytest.raises(InvalidRequest):
        c.raft(ld).propose_conf_change("promote", "n2")
    with pytest.raises(InvalidRequest):
        c.raft(ld).propose_conf_change("remove", "n42")


def test_config_survives_snapshots_and_restarts() -> None:
    from udpraft.sim.cluster import SimConfig

    c = Cluster(17, SimConfig(nodes=3, snapshot_every=5))
    ld = check_one_leader(c)
    n4 = add_voter(c, ld)
    for k in range(30):
        idx = c.propose(ld, f"k{k}".encode())
        assert idx is not None
        def everywhere(i: int = idx) -> bool:
            return all(c.nodes[x].applied >= i for x in c.up_ids())

        assert c.wait_for(everywhere, 3000)
    # Everyone compacted past the CONFIG entries; a restart must keep the membership.
    for i in ("n1", "n2", "n3", n4):
        conf = Membership.decode(c.nodes[i].snap.conf.encode())
        assert conf is not None and conf.voters == ("n1", "n2", "n3", n4)
    for i in ("n1", "n2", "n3", n4):
        c.crash(i)
    for i in ("n1", "n2", "n3", n4):
        c.restart(i)
        assert c.raft(i).voters == ("n1", "n2", "n3", n4)
    # A fresh node joining now gets its configuration from the leader's snapshot.
    ld = check_one_leader(c, limit_ms=5000)
    n5 = c.add_node()
    committed_change(c, ld, "add_learner", n5)
    assert c.wait_for(caught_up(c, ld, n5), 5000)
    assert c.wait_for(lambda: c.raft(n5).conf.learners == (n5,), 3000)
    assert c.raft(n5).log.offset > 0  # it was brought up by a snapshot


def test_membership_seed_sweep() -> None:
    for s in range(1, 13):
        r = run_seed(s, nodes=5, membership=True)
        assert r.ok, r.line()


# ---------------------------------------------------------------------------- mutants


def _commit_counting_learners(self: RaftNode) -> None:
    ids = (*self.voters, *self.conf.learners)  # BUG: learners counted in the quorum
    matches = sorted(
        (self.progress[v].match if v != self.id else self.log.stable for v in ids), reverse=True
    )
    q = matches[self.quorum - 1]
    if q > self.log.committed and self.log.term(q) == self.term:
        self.log.commit_to(q)
        self._need_bcast = True


def _two_changes_in_flight(self: RaftNode, op: str, node_id: str) -> int:
    self._check_can_propose(1)  # BUG: no "one uncommitted configuration at a time" check
    new = self.conf.change(op, node_id)
    idx = self.log.last_index() + 1
    self.log.append_new([Entry(idx, self.term, new.encode(), EntryKind.CONFIG)])
    self._set_conf(new, idx)
    self._need_bcast = True
    self._maybe_commit()
    return idx


def _learners_then_split(c: Cluster) -> tuple[str, str, str]:
    ld = check_one_leader(c)
    n4, n5 = c.add_node(), c.add_node()
    committed_change(c, ld, "add_learner", n4)
    committed_change(c, ld, "add_learner", n5)
    one(c, b"all-five", 5)
    return ld, n4, n5


def _others(ld: str) -> list[str]:
    return [i for i in ("n1", "n2", "n3") if i != ld]


def scenario_learner_quorum(c: Cluster) -> None:
    ld, n4, n5 = _learners_then_split(c)
    c.net.split([ld, n4, n5], _others(ld))
    c.propose(ld, b"lost?")
    c.run_for(1000)
    c.crash(ld)
    c.heal()
    c.run_for(3000)  # the other two voters elect a leader; it must hold every commit


def scenario_two_in_flight(c: Cluster) -> None:
    ld, n4, n5 = _learners_then_split(c)
    c.net.split([ld, n4, n5], _others(ld))
    for nid in (n4, n5):
        try:
            c.raft(ld).propose_conf_change("promote", nid)
        except ProposalDropped:
            pass
    c.propose(ld, b"lost?")
    c.run_for(3000)  # the other side elects its own leader


@pytest.mark.parametrize(
    ("scenario", "attr", "mutant"),
    [
        (scenario_learner_quorum, "_maybe_commit", _commit_counting_learners),
        (scenario_two_in_flight, "propose_conf_change", _two_changes_in_flight),
    ],
)
def test_planted_membership_bugs_are_caught(
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[[Cluster], None],
    attr: str,
    mutant: Callable[..., object],
) -> None:
    scenario(make(3, seed=21))  # the correct core passes the scenario
    monkeypatch.setattr(RaftNode, attr, mutant)
    with pytest.raises(InvariantViolation):
        scenario(make(3, seed=21))
