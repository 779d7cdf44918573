"""ReadIndex (dissertation §6.4) and leadership transfer (dissertation §3.10)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.helpers.raftkit import (
    ELECTION,
    HEARTBEAT,
    IDS3,
    Network,
    drain,
    drain_msgs,
    ents,
    make_leader,
    make_node,
    of_type,
)
from udpraft.core import (
    HardState,
    InvalidRequest,
    NotLeader,
    ProposalDropped,
    RaftNode,
    ReadState,
    Role,
)
from udpraft.core.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    ReadIndexReq,
    ReadIndexResp,
    TimeoutNow,
)


def ready_leader(**kw: Any) -> Any:
    """n1 leads a 3-node cluster and has committed its no-op (index 1)."""
    n = make_leader("n1", IDS3, **kw)
    n.step(AppendResp("n2", "n1", n.term, True, 1))
    drain(n)
    assert n.committed == 1
    return n


def round_of(msgs: list[Any]) -> int:
    ctxs = {h.ctx for h in of_type(msgs, Heartbeat)}
    assert len(ctxs) == 1, ctxs
    ctx: int = ctxs.pop()
    return ctx


# ---------------------------------------------------------------------------- ReadIndex


def test_6_4_leader_read_waits_for_a_quorum_heartbeat_round_sent_after_it() -> None:
    n = ready_leader()
    n.read_index(42)
    rd = drain(n)
    assert rd.read_states == []
    hbs = of_type(rd.messages, Heartbeat)
    assert {h.dst for h in hbs} == {"n2", "n3"}
    ctx = round_of(rd.messages)
    assert ctx > 0
    # Answers that do not belong to this round confirm nothing.
    n.step(HeartbeatResp("n2", "n1", n.term, 0))
    n.step(HeartbeatResp("n3", "n1", n.term - 1, ctx))  # old term
    assert drain(n).read_states == []
    n.step(HeartbeatResp("n2", "n1", n.term, ctx))
    assert drain(n).read_states == [ReadState(42, 1, True)]


def test_6_4_answer_to_an_earlier_round_does_not_confirm_a_later_read() -> None:
    n = ready_leader()
    n.read_index(1)
    ctx1 = round_of(drain_msgs(n))
    n.read_index(2)
    ctx2 = round_of(drain_msgs(n))
    assert ctx2 > ctx1
    n.step(HeartbeatResp("n3", "n1", n.term, ctx1))
    assert [r.request_id for r in drain(n).read_states] == [1]
    n.step(HeartbeatResp("n3", "n1", n.term, ctx1))  # duplicate of the old round
    assert drain(n).read_states == []
    n.step(HeartbeatResp("n2", "n1", n.term, ctx2))
    assert [r.request_id for r in drain(n).read_states] == [2]


def test_6_4_a_read_whose_round_was_lost_is_confirmed_by_the_next_heartbeat() -> None:
    """Over UDP a round's heartbeats or their answers may all be lost. The periodic
    heartbeat then starts a fresh round for the reads still waiting; before, its ctx was
    0 and the read waited until another read happened to start a round."""
    n = ready_leader()
    n.read_index(1)
    lost = round_of(drain_msgs(n))  # every heartbeat of this round is lost
    assert drain(n).read_states == []
    for _ in range(HEARTBEAT):
        n.tick()
    hb = of_type(drain_msgs(n), Heartbeat)
    assert hb and {h.ctx for h in hb} == {lost + 1}
    n.step(HeartbeatResp("n2", "n1", n.term, lost + 1))
    assert [(r.request_id, r.ok) for r in drain(n).read_states] == [(1, True)]
    for _ in range(HEARTBEAT):  # nothing waits: a plain heartbeat again
        n.tick()
    assert {h.ctx for h in of_type(drain_msgs(n), Heartbeat)} == {0}


def test_6_4_reads_between_two_readies_share_one_round() -> None:
    n = ready_leader()
    for rid in (1, 2, 3):
        n.read_index(rid)
    msgs = drain_msgs(n)
    assert len(of_type(msgs, Heartbeat)) == 2
    n.step(HeartbeatResp("n2", "n1", n.term, round_of(msgs)))
    assert [r.request_id for r in drain(n).read_states] == [1, 2, 3]


def test_6_4_read_index_is_the_commit_index_when_the_read_arrived() -> None:
    n = ready_leader()
    n.read_index(1)
    ctx = round_of(drain_msgs(n))
    idx = n.propose(b"x")
    drain(n)
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    assert n.committed == idx
    n.step(HeartbeatResp("n2", "n1", n.term, ctx))
    assert drain(n).read_states == [ReadState(1, 1, True)]


def test_8_new_leader_delays_reads_until_its_noop_commits() -> None:
    n = make_leader("n1", IDS3, term=3, log_terms=[1, 2, 3])
    n.read_index(7)
    msgs = drain_msgs(n)
    assert all(h.ctx == 0 for h in of_type(msgs, Heartbeat))  # no round yet
    n.step(HeartbeatResp("n2", "n1", n.term, 1))
    n.step(HeartbeatResp("n3", "n1", n.term, 1))
    assert drain(n).read_states == []
    noop = n.log.last_index()
    n.step(AppendResp("n2", "n1", n.term, True, noop))
    assert n.committed == noop
    ctx = round_of(drain_msgs(n))
    n.step(HeartbeatResp("n3", "n1", n.term, ctx))
    assert drain(n).read_states == [ReadState(7, noop, True)]


def test_6_4_follower_read_through_the_leader() -> None:
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    idx = net["n1"].propose(b"x")
    net.run()
    net["n2"].read_index(9)
    net.run()
    assert net.sent_of(ReadIndexReq) and net.sent_of(ReadIndexResp)
    assert net.read_states["n2"] == [ReadState(9, idx, True)]


def test_6_4_follower_read_whose_request_or_answer_is_lost_fails_in_time() -> None:
    """Over UDP a ReadIndexReq or its answer can be lost while the leader stays the same.
    The follower must still answer the read (ok=False, so the caller retries) instead of
    keeping its id forever: 10,000 such ids made every later follower read fail at once."""
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    net.run()
    lost = {ReadIndexReq, ReadIndexResp}
    net.drop = lambda m: type(m) in lost
    net["n2"].read_index(9)
    net.run()
    for _ in range(2 * ELECTION):  # the leader's heartbeats keep arriving: n2 never doubts it
        net.tick()
    assert net["n2"].leader == "n1"
    assert net.read_states["n2"] == [ReadState(9, 0, False)]
    # A late answer to the expired read is dropped, not reported twice.
    net["n2"].step(ReadIndexResp("n1", "n2", net["n2"].term, 9, 1, True))
    assert drain(net["n2"]).read_states == []
    # Many lost reads never wedge the node: once they expire, reads go to the leader again.
    for rid in range(100, 10_100):
        net["n2"].read_index(rid)
    net.run()
    for _ in range(2 * ELECTION):
        net.tick()
    net.drop = None
    net.read_states["n2"] = []
    net["n2"].read_index(20_000)
    net.run()
    (rs,) = net.read_states["n2"]
    assert rs.request_id == 20_000 and rs.ok


def test_6_4_follower_read_answered_by_a_non_leader_fails() -> None:
    f = make_node("n2", term=2)
    f.step(ReadIndexReq("n3", "n2", 2, 5))
    (resp,) = of_type(drain_msgs(f), ReadIndexResp)
    assert (resp.dst, resp.req_id, resp.ok) == ("n3", 5, False)


def test_6_4_read_without_a_known_leader_fails_at_once() -> None:
    f = make_node("n2", term=2)
    f.read_index(3)
    rd = drain(f)
    assert rd.read_states == [ReadState(3, 0, False)]
    assert of_type(rd.messages + rd.persisted_messages, ReadIndexReq) == []


def test_6_4_pending_leader_reads_fail_when_leadership_is_lost() -> None:
    n = ready_leader()
    n.read_index(1)  # local, confirmed by the next round
    drain(n)
    n.step(ReadIndexReq("n3", "n1", n.term, 2))  # on behalf of n3
    drain(n)
    n.step(Heartbeat("n2", "n1", n.term + 1, 0))  # n2 leads a newer term
    assert n.role == Role.FOLLOWER
    rd = drain(n)
    assert rd.read_states == [ReadState(1, 1, False)]
    (resp,) = of_type(rd.messages + rd.persisted_messages, ReadIndexResp)
    assert (resp.dst, resp.req_id, resp.ok) == ("n3", 2, False)


def test_6_4_reads_waiting_for_the_noop_fail_on_step_down() -> None:
    n = make_leader("n1", IDS3, term=3, log_terms=[1])
    n.read_index(5)
    drain(n)
    n.step(AppendResp("n2", "n1", n.term + 1, False, 0))
    assert drain(n).read_states == [ReadState(5, 0, False)]


def test_6_4_pending_follower_reads_fail_when_the_leader_changes() -> None:
    f = make_node("n2", term=2)
    f.step(Heartbeat("n1", "n2", 2, 0))
    f.read_index(4)
    (req,) = of_type(drain_msgs(f), ReadIndexReq)
    assert req.dst == "n1"
    f.step(Heartbeat("n3", "n2", 3, 0))
    assert drain(f).read_states == [ReadState(4, 0, False)]
    f.step(ReadIndexResp("n1", "n2", 2, 4, 1, True))  # the old leader's late answer
    assert drain(f).read_states == []


def test_6_4_unknown_read_answer_is_dropped() -> None:
    f = make_node("n2", term=2)
    f.step(Heartbeat("n1", "n2", 2, 0))
    f.step(ReadIndexResp("n1", "n2", 2, 77, 1, True))
    assert drain(f).read_states == []
    assert f.counters.get("drop_unknown_read") == 1


def test_6_4_max_pending_reads_refuses_extra_reads() -> None:
    n = ready_leader(max_pending_reads=2)
    for rid in (1, 2, 3):
        n.read_index(rid)
    assert drain(n).read_states == [ReadState(3, 0, False)]


def single_node_leader() -> Any:
    n = make_node("n1", ["n1"])
    n.campaign()
    assert n.role == Role.LEADER
    return n


def test_6_4_single_node_read_is_immediate_once_its_term_committed() -> None:
    n = single_node_leader()
    drain(n)  # the no-op becomes durable, hence committed (quorum of one)
    assert n.committed == 1
    n.read_index(1)
    assert drain(n).read_states == [ReadState(1, 1, True)]


def test_8_single_node_restarted_leader_never_serves_a_read_below_its_noop() -> None:
    # Commit is not trusted from disk: until the new no-op commits, the commit index (0) is
    # stale, and a read answered with it would miss entries 1..3 that may have been committed.
    n = RaftNode("n1", ["n1"], random.Random(1), make_node().cfg, HardState(1, "n1"), ents([1] * 3))
    n.campaign()
    assert n.role == Role.LEADER and n.log.last_index() == 4
    n.read_index(1)
    states = []
    for _ in range(3):
        states += drain(n).read_states
    assert n.committed == 4
    assert all(s.index >= 4 for s in states if s.ok)


def test_6_4_single_node_read_issued_before_the_noop_commits_is_answered() -> None:
    n = single_node_leader()
    n.read_index(1)  # the no-op is not durable yet: the read must wait for it...
    states = []
    for _ in range(3):
        states += drain(n).read_states  # ...and be answered once it commits
    assert n.committed == 1
    assert states == [ReadState(1, 1, True)]


# ---------------------------------------------------------------------------- transfer


def test_3_10_transfer_to_an_up_to_date_follower_sends_timeout_now() -> None:
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    net["n1"].propose(b"x")
    net.run()
    term = net["n1"].term
    net["n1"].transfer_leadership("n2")
    tn = [m for m in net["n1"].ready().messages if isinstance(m, TimeoutNow)]
    assert [(m.dst, m.term) for m in tn] == [("n2", term)]
    net["n2"].step(tn[0])
    net.run()
    assert net.leaders() == ["n2"]
    assert net["n2"].term == term + 1
    assert net["n1"].role == Role.FOLLOWER and net["n1"].leader == "n2"


def test_3_10_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    n = ready_leader()  # n3 never acknowledged anything: it lags by the no-op
    n.propose(b"x")
    drain(n)
    n.transfer_leadership("n3")
    assert of_type(drain_msgs(n), TimeoutNow) == []
    n.step(HeartbeatResp("n3", "n1", n.term))  # n3 is alive: the leader (re)sends the log
    (app,) = [a for a in of_type(drain_msgs(n), AppendEntries) if a.dst == "n3"]
    last = n.log.last_index()
    assert app.entries[-1].index == last
    n.step(AppendResp("n3", "n1", n.term, True, last - 1))  # partly caught up: not yet
    assert of_type(drain_msgs(n), TimeoutNow) == []
    n.step(AppendResp("n3", "n1", n.term, True, last))
    assert [(m.dst, m.term) for m in of_type(drain_msgs(n), TimeoutNow)] == [("n3", n.term)]


def test_3_10_lagging_transfer_target_wins_in_a_network() -> None:
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    net.isolated.add("n3")
    for i in range(5):
        net["n1"].propose(f"{i}".encode())
    net.run()
    last = net["n1"].log.last_index()
    net.isolated.clear()
    net["n1"].transfer_leadership("n3")
    for _ in range(ELECTION - 1):
        net.tick()
        if net.leaders() == ["n3"]:
            break
    assert net.leaders() == ["n3"]
    # TimeoutNow went out only after n3 had acknowledged the leader's whole log.
    first_tn = next(i for i, m in enumerate(net.sent) if isinstance(m, TimeoutNow))
    caught_up = [
        i
        for i, m in enumerate(net.sent)
        if isinstance(m, AppendResp) and m.src == "n3" and m.success and m.index == last
    ]
    assert caught_up and caught_up[0] < first_tn
    assert net["n3"].log.entry(last).data == b"4"


def test_3_10_proposals_are_refused_during_a_transfer() -> None:
    n = ready_leader()
    n.transfer_leadership("n3")  # n3 has not acked: catch-up first
    with pytest.raises(ProposalDropped):
        n.propose(b"x")
    with pytest.raises(ProposalDropped):
        n.propose_batch([(b"x", "", 0)])


def test_3_10_transfer_is_abandoned_after_an_election_timeout() -> None:
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    net.isolated.add("n3")
    net["n1"].propose(b"x")
    net.run()
    net["n1"].transfer_leadership("n3")
    for _ in range(ELECTION - 1):
        net.tick()
    with pytest.raises(ProposalDropped):
        net["n1"].propose(b"still transferring")
    net.tick()
    assert net["n1"].role == Role.LEADER
    idx = net["n1"].propose(b"accepted again")
    net.run()
    assert net["n1"].committed == idx


def test_3_10_transfer_target_wins_even_against_live_leases() -> None:
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    net.tick(2)  # every follower now holds a fresh lease for n1
    net["n1"].transfer_leadership("n3")
    net.run()
    assert net.leaders() == ["n3"]
    assert {n.leader for n in net.nodes.values()} == {"n3"}


def test_3_10_transfer_argument_checks() -> None:
    n = ready_leader()
    with pytest.raises(InvalidRequest):
        n.transfer_leadership("n9")
    n.transfer_leadership("n1")  # to self: nothing to do
    n.propose(b"x")
    f = make_node("n2", term=2)
    f.step(Heartbeat("n1", "n2", 2, 0))
    with pytest.raises(NotLeader) as e:
        f.transfer_leadership("n3")
    assert e.value.leader == "n1"


def test_3_10_timeout_now_makes_a_follower_campaign_without_pre_vote() -> None:
    f = make_node("n2", term=2, log_terms=[1, 2])
    f.step(TimeoutNow("n1", "n2", 2))
    assert f.role == Role.CANDIDATE and f.term == 3
    rd = drain(f)
    assert all(m.transfer for m in rd.persisted_messages)
    assert len(rd.persisted_messages) == 2
