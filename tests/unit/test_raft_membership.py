"""Single-server membership changes in the pure core (dissertation §4.1)."""

from __future__ import annotations

import random

import pytest

from tests.helpers.raftkit import (
    ELECTION,
    config,
    drain,
    drain_msgs,
    ents,
    make_leader,
    make_node,
    of_type,
)
from udpraft.core.errors import InvalidRequest, NotLeader, ProposalDropped
from udpraft.core.membership import Membership
from udpraft.core.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    PreVote,
    RequestVote,
    RequestVoteResp,
    TimeoutNow,
)
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Role
from udpraft.core.types import Entry, EntryKind, HardState, SnapshotMeta


def conf_entry(index: int, term: int, m: Membership) -> Entry:
    return Entry(index, term, m.encode(), EntryKind.CONFIG)


def committed_leader() -> RaftNode:
    """n1 leads n1..n3 in term 1 and its no-op (index 1) is committed."""
    n = make_leader("n1")
    n.step(AppendResp("n2", "n1", n.term, True, 1))
    drain(n)
    assert n.committed == 1
    return n


def test_encoding_round_trip_and_rejects_garbage() -> None:
    m = Membership.of(["n3", "n1", "n2"], ["n4"], ["n5"])
    assert m.encode() == b"v:n1,n2,n3;l:n4;r:n5"
    assert Membership.decode(m.encode()) == m
    assert Membership.decode(Membership.of(["a"]).encode()) == Membership.of(["a"])
    for bad in (b"", b"v:n1", b"v:n1;l:n1;r:", b"x:n1;l:;r:", b"v:n1,,n2;l:;r:", b"\xff"):
        assert Membership.decode(bad) is None


def test_addresses_ride_with_the_configuration() -> None:
    m = Membership.of(["n1", "n2", "n3"])
    m2 = m.change("add_learner", "n4", "127.0.0.1:7004/127.0.0.1:2384")
    assert m2.encode() == b"v:n1,n2,n3;l:n4;r:;a:n4=127.0.0.1:7004/127.0.0.1:2384"
    assert Membership.decode(m2.encode()) == m2
    assert m2.addr("n4") == "127.0.0.1:7004/127.0.0.1:2384" and m2.addr("n1") == ""
    m3 = m2.change("promote", "n4")
    assert m3.addr("n4") == m2.addr("n4")  # promotion keeps it
    m4 = m3.change("add_voter", "n5", "[::1]:7005/[::1]:2385")
    assert Membership.decode(m4.encode()) == m4 and len(m4.addrs) == 2
    m5 = m4.change("remove", "n4")
    assert m5.addr("n4") == "" and m5.addr("n5") and "n4" in m5.removed  # gone with the member
    # Without addresses the encoding is the old three-part one.
    assert m.change("add_learner", "n4").encode() == b"v:n1,n2,n3;l:n4;r:"
    for bad_addr in ("a,b", "a;b", "a=b", "a b", "x" * 201, "tab\t"):
        with pytest.raises(InvalidRequest):
            m.change("add_learner", "n4", bad_addr)
    with pytest.raises(InvalidRequest):
        m2.change("promote", "n4", "127.0.0.1:1/127.0.0.1:2")  # only adds carry one
    for bad in (
        b"v:n1;l:;r:;a:",  # empty address list
        b"v:n1;l:;r:;a:n2=x",  # address of a non-member
        b"v:n1;l:;r:;a:n1",  # no '='
        b"v:n1;l:;r:;a:n1=x,n1=y",  # twice
        b"v:n1;l:;r:;b:n1=x",
        b"v:n1;l:;r:;a:n1=x;z",
    ):
        assert Membership.decode(bad) is None, bad


def test_conf_change_carries_the_address_and_status_reports_it() -> None:
    n = committed_leader()
    idx = n.propose_conf_change("add_learner", "n4", "h:1/h:2")
    e = n.log.entry(idx)
    assert e.kind == EntryKind.CONFIG and Membership.decode(e.data) == n.conf
    st = n.status()["membership"]
    assert st["learners"] == ["n4"] and st["addrs"] == {"n4": "h:1/h:2"}
    assert st["index"] == idx and st["committed"] is False
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    drain(n)
    assert n.status()["membership"]["committed"] is True


def test_change_rules() -> None:
    m = Membership.of(["n1", "n2", "n3"])
    m2 = m.change("add_learner", "n4")
    assert m2.learners == ("n4",) and m2.voters == m.voters
    m3 = m2.change("promote", "n4")
    assert m3.voters == ("n1", "n2", "n3", "n4") and not m3.learners
    m4 = m3.change("remove", "n2")
    assert m4.voters == ("n1", "n3", "n4") and m4.removed == ("n2",)
    assert m.change("add_voter", "n9").voters == ("n1", "n2", "n3", "n9")
    for op, node, base in [
        ("remove", "n7", m),  # unknown
        ("add_learner", "n1", m),  # existing
        ("add_learner", "n4", m2),
        ("promote", "n2", m),  # not a learner
        ("add_learner", "n2", m4),  # ids are never reused
        ("remove", "n1", Membership.of(["n1"])),  # last voter
        ("frobnicate", "n9", m),
        ("add_learner", "a,b", m),
    ]:
        with pytest.raises(InvalidRequest):
            base.change(op, node)


def test_only_a_leader_with_a_committed_term_entry_may_change() -> None:
    f = make_node("n1")
    with pytest.raises(NotLeader):
        f.propose_conf_change("add_learner", "n4")
    n = make_leader("n1")  # its no-op is not committed yet
    with pytest.raises(ProposalDropped):
        n.propose_conf_change("add_learner", "n4")
    n.step(AppendResp("n2", "n1", n.term, True, 1))
    idx = n.propose_conf_change("add_learner", "n4")
    assert n.log.entry(idx).kind == EntryKind.CONFIG


def test_one_change_at_a_time_and_during_transfer() -> None:
    n = committed_leader()
    idx = n.propose_conf_change("add_learner", "n4")
    with pytest.raises(ProposalDropped):
        n.propose_conf_change("add_learner", "n5")
    drain(n)
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    assert n.committed == idx
    n.transfer_leadership("n3")
    with pytest.raises(ProposalDropped):
        n.propose_conf_change("add_learner", "n5")


def test_config_is_effective_on_append_and_learner_does_not_count() -> None:
    n = committed_leader()
    idx = n.propose_conf_change("add_learner", "n4")
    assert n.conf.learners == ("n4",) and n.voters == ("n1", "n2", "n3")
    assert "n4" in n.progress and n.quorum == 2
    msgs = drain_msgs(n)
    assert any(isinstance(m, AppendEntries) and m.dst == "n4" for m in msgs)
    n.step(AppendResp("n4", "n1", n.term, True, idx))
    assert n.committed < idx  # the learner's ack does not commit
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    assert n.committed == idx
    # Now promote; with 4 voters the quorum is 3.
    p = n.propose_conf_change("promote", "n4")
    assert n.voters == ("n1", "n2", "n3", "n4") and n.quorum == 3
    drain(n)
    n.step(AppendResp("n2", "n1", n.term, True, p))
    assert n.committed < p
    n.step(AppendResp("n4", "n1", n.term, True, p))
    assert n.committed == p


def test_learner_never_campaigns_and_its_vote_does_not_count() -> None:
    conf = Membership.of(["n1", "n2", "n3"], ["n4"])
    learner = RaftNode("n4", [], random.Random(1), config(), HardState(1, ""),
                       [conf_entry(1, 1, conf)])
    assert learner.voters == ("n1", "n2", "n3")
    for _ in range(200):
        learner.tick()
    assert learner.role == Role.FOLLOWER and learner.term == 1
    learner.step(TimeoutNow("n1", "n4", 1))
    assert learner.role == Role.FOLLOWER and not drain_msgs(learner)
    # A candidate does not count a learner's grant.
    c = RaftNode("n1", ["n1", "n2", "n3"], random.Random(1), config(pre_vote=False),
                 HardState(1, ""), [conf_entry(1, 1, conf)])
    c.campaign()
    msgs = drain_msgs(c)
    assert sorted(m.dst for m in of_type(msgs, RequestVote)) == ["n2", "n3"]
    c.step(RequestVoteResp("n4", "n1", c.term, True))
    assert c.role == Role.CANDIDATE and c.counters["drop_vote_not_voter"] == 1
    c.step(RequestVoteResp("n2", "n1", c.term, True))
    assert c.role == Role.LEADER


def test_fresh_node_learns_config_from_appends() -> None:
    n = RaftNode("n4", [], random.Random(1), config())
    assert n.voters == () and n.peers == ()
    for _ in range(100):
        n.tick()
    assert n.role == Role.FOLLOWER and not drain_msgs(n)
    conf = Membership.of(["n1", "n2", "n3"], ["n4"])
    n.step(AppendEntries("n1", "n4", 2, 0, 0, (Entry(1, 2), conf_entry(2, 2, conf)), 2))
    assert n.conf == conf and n.leader == "n1" and n.committed == 2
    # A stranger claiming leadership of the same term is still refused.
    n.step(Heartbeat("n9", "n4", 2, 0))
    assert n.counters["drop_unknown_sender"] == 1


def test_truncated_config_entry_rolls_back() -> None:
    n = make_node("n2", term=1, log_terms=[1])
    old = n.conf
    new = old.change("add_learner", "n4")
    n.step(AppendEntries("n1", "n2", 1, 1, 1, (conf_entry(2, 1, new),), 1))
    assert n.conf == new and "n4" in n.peers
    # A new leader of term 2 overwrites the uncommitted entry.
    n.step(AppendEntries("n3", "n2", 2, 1, 1, (Entry(2, 2),), 1))
    assert n.conf == old and "n4" not in n.peers


def test_removed_node_does_not_campaign() -> None:
    conf = Membership.of(["n2", "n3"], [], ["n1"])
    n = RaftNode("n1", ["n1", "n2", "n3"], random.Random(1), config(), HardState(1, ""),
                 [Entry(1, 1), conf_entry(2, 1, conf)])
    for _ in range(200):
        n.tick()
    assert n.role == Role.FOLLOWER
    assert not of_type(drain_msgs(n), (PreVote, RequestVote))


def test_removed_leader_steps_down_after_commit() -> None:
    n = committed_leader()
    idx = n.propose_conf_change("remove", "n1")
    assert n.role == Role.LEADER and n.voters == ("n2", "n3") and n.quorum == 2
    drain(n)
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    assert n.role == Role.LEADER  # n2 alone is not a quorum of {n2, n3}
    n.step(AppendResp("n3", "n1", n.term, True, idx))
    assert n.role == Role.FOLLOWER and n.committed == idx
    assert n.counters["removed_leader_step_down"] == 1


def test_snapshot_keeps_the_config() -> None:
    n = committed_leader()
    idx = n.propose_conf_change("add_learner", "n4")
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    rd = n.ready()
    n.advance(rd)
    n.propose(b"x")
    last = n.log.last_index()
    n.step(AppendResp("n2", "n1", n.term, True, last))
    drain(n)
    drain(n)
    assert n.log.applied == last
    n.compact(SnapshotMeta(last, n.term))
    assert n.conf.learners == ("n4",)
    # A peer that needs the compacted prefix gets the configuration with the snapshot.
    n.progress["n4"].become_probe()
    n.progress["n4"].next = 1
    n._send_append("n4")
    snaps = of_type(drain_msgs(n), InstallSnapshot)
    assert snaps and Membership.decode(snaps[0].conf.encode()) == n.conf
    fresh = RaftNode("n4", [], random.Random(2), config())
    fresh.step(snaps[0])
    assert fresh.conf == n.conf and fresh.snapshot.conf == n.conf.encode().decode()
    # Restart from a snapshot that carries the configuration.
    meta = SnapshotMeta(last, n.term, n.conf.encode().decode())
    r = RaftNode("n1", ["n1", "n2", "n3"], random.Random(3), config(), HardState(n.term, ""),
                 (), meta)
    assert r.conf == n.conf


def test_snapshot_without_vouching_config_from_a_stranger_is_dropped() -> None:
    n = RaftNode("n4", [], random.Random(2), config())
    n.step(InstallSnapshot("n9", "n4", 3, 10, 2))
    assert n.counters["drop_unknown_sender"] == 1 and n.log.offset == 0


def test_old_behaviour_without_changes() -> None:
    n = make_node("n1", ids=["n1", "n2", "n3"], log_terms=[1, 1])
    assert n.voters == ("n1", "n2", "n3") and n.quorum == 2 and n.peers == ("n2", "n3")
    assert ents([1])[0].kind == EntryKind.NORMAL


def test_check_quorum_counts_voters_only() -> None:
    """A leader that hears only from a learner cannot reach a quorum: it steps down."""
    n = committed_leader()
    n.propose_conf_change("add_learner", "n4")
    drain(n)
    ticks = 0
    while n.role == Role.LEADER and ticks < 3 * ELECTION:
        n.tick()
        for m in drain_msgs(n):  # n4 answers everything; the voters n2, n3 are silent
            if m.dst == "n4" and isinstance(m, Heartbeat):
                n.step(HeartbeatResp("n4", "n1", n.term, m.ctx))
            elif m.dst == "n4" and isinstance(m, AppendEntries):
                n.step(AppendResp("n4", "n1", n.term, True, m.prev_index + len(m.entries)))
        ticks += 1
    assert n.role == Role.FOLLOWER
    assert ticks <= 2 * ELECTION
    assert n.counters.get("check_quorum_step_down") == 1
