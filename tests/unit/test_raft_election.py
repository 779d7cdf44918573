"""Raft §5.1 (terms), §5.2 (leader election), §5.4.1 (election restriction), §9.6 (pre-vote)
and check-quorum, driven directly on RaftNode without clocks or sockets."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.helpers.raftkit import (
    ELECTION,
    IDS3,
    IDS5,
    Network,
    all_msgs,
    drain,
    drain_msgs,
    make_leader,
    make_node,
    of_type,
)
from udpraft.core import Role
from udpraft.core.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    PreVote,
    PreVoteResp,
    ReadIndexReq,
    ReadIndexResp,
    RequestVote,
    RequestVoteResp,
    TimeoutNow,
)

# ---------------------------------------------------------------------------- fixtures


def node_in_role(role: Role, term: int = 2, **kw: Any) -> Any:
    """n1 of a 3-node cluster in ``role`` at ``term`` (log: one entry of term 1)."""
    kw.setdefault("check_quorum", False)
    if role == Role.LEADER:
        n = make_leader("n1", term=term - 1, log_terms=[1], **kw)
        assert n.term == term
        return n
    if role == Role.FOLLOWER:
        n = make_node("n1", term=term, log_terms=[1], **kw)
    elif role == Role.PRE_CANDIDATE:
        n = make_node("n1", term=term, log_terms=[1], pre_vote=True, **kw)
        n.campaign()
    else:
        n = make_node("n1", term=term - 1, log_terms=[1], pre_vote=False, **kw)
        n.campaign()
    drain(n)
    assert n.role == role and n.term == term
    return n


def higher_term_msgs(t: int) -> dict[str, Any]:
    """One message of every type that makes its receiver adopt term ``t`` (from n2)."""
    return {
        "AppendEntries": AppendEntries("n2", "n1", t, 0, 0, (), 0),
        "AppendResp": AppendResp("n2", "n1", t, False, 0),
        "Heartbeat": Heartbeat("n2", "n1", t, 0),
        "HeartbeatResp": HeartbeatResp("n2", "n1", t),
        "RequestVote": RequestVote("n2", "n1", t, 9, 9),
        "RequestVoteResp": RequestVoteResp("n2", "n1", t, False),
        "PreVoteResp(rejected)": PreVoteResp("n2", "n1", t, False),
        "ReadIndexReq": ReadIndexReq("n2", "n1", t, 1),
        "ReadIndexResp": ReadIndexResp("n2", "n1", t, 1, 0, False),
    }


ROLES = [Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER]
LEADER_BEARING = {"AppendEntries", "Heartbeat"}

# ---------------------------------------------------------------------------- §5.1


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("kind", list(higher_term_msgs(0)))
def test_5_1_any_higher_term_message_updates_term_and_makes_follower(role: Role, kind: str) -> None:
    n = node_in_role(role, term=2)
    n.step(higher_term_msgs(5)[kind])
    assert n.term == 5
    assert n.role == Role.FOLLOWER
    # Only a message from the leader of that term names a leader.
    assert n.leader == ("n2" if kind in LEADER_BEARING else "")
    # Voting at the new term is only possible through the RequestVote itself.
    assert n.vote == ("n2" if kind == "RequestVote" else "")
    rd = drain(n)
    assert rd.hard_state is not None and rd.hard_state.term == 5 and rd.must_sync


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_5_1_timeout_now_with_higher_term_starts_election_at_next_term(role: Role) -> None:
    n = node_in_role(role, term=2)
    n.step(TimeoutNow("n2", "n1", 5))
    assert n.role == Role.CANDIDATE and n.term == 6 and n.vote == "n1"
    votes = of_type(drain_msgs(n), RequestVote)
    assert {m.dst for m in votes} == {"n2", "n3"} and all(m.transfer for m in votes)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_9_6_pre_vote_message_never_changes_receiver_term(role: Role) -> None:
    n = node_in_role(role, term=2)
    before = (n.term, n.vote, n.role)
    n.step(PreVote("n2", "n1", 9, 100, 8))
    assert (n.term, n.vote, n.role) == before
    assert drain(n).hard_state is None


def stale_msgs(t: int) -> dict[str, Any]:
    return {
        **higher_term_msgs(t),
        "PreVote": PreVote("n2", "n1", t, 9, 9),
        "TimeoutNow": TimeoutNow("n2", "n1", t),
        "PreVoteResp(granted)": PreVoteResp("n2", "n1", t, True),
        "RequestVoteResp(granted)": RequestVoteResp("n2", "n1", t, True),
        "AppendResp(success)": AppendResp("n2", "n1", t, True, 1),
    }


# What a node may answer to a stale-term message: nothing, or a rejection carrying its term.
STALE_REPLY = {"AppendEntries": AppendResp, "Heartbeat": AppendResp, "PreVote": PreVoteResp}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("kind", list(stale_msgs(0)))
def test_5_1_stale_term_message_is_rejected(role: Role, kind: str) -> None:
    n = node_in_role(role, term=4)
    before = (n.term, n.vote, n.role, n.leader, n.committed, n.log.last_index())
    n.step(stale_msgs(3)[kind])
    assert (n.term, n.vote, n.role, n.leader, n.committed, n.log.last_index()) == before
    out = [m for m in drain_msgs(n) if m.dst == "n2"]
    if kind in STALE_REPLY:
        assert len(out) == 1
        reply = out[0]
        assert isinstance(reply, STALE_REPLY[kind])
        assert reply.term == 4 and not getattr(reply, "success", getattr(reply, "granted", None))
    else:
        assert out == []
        assert n.counters.get("drop_stale_term", 0) == 1


def test_5_1_stale_leader_steps_down_on_append_resp_with_higher_term() -> None:
    # n1 led term 2; n2 moved on to term 5 while n1 was cut off.
    old = make_leader("n1", term=1, log_terms=[1])
    assert old.term == 2
    f = make_node("n2", term=5, log_terms=[1])
    appends = of_type(drain_msgs(old), AppendEntries)
    old.propose(b"x")
    appends += of_type(drain_msgs(old), AppendEntries)
    hb = Heartbeat("n1", "n2", 2, 0)
    for m in [*[a for a in appends if a.dst == "n2"], hb]:
        f.step(m)
    answers = of_type(drain(f).persisted_messages, AppendResp)
    assert answers and all(a.term == 5 and not a.success for a in answers)
    assert f.log.last_index() == 1  # the stale leader's entries were not taken
    old.step(answers[0])
    assert old.role == Role.FOLLOWER and old.term == 5 and old.leader == ""
    with pytest.raises(Exception, match="not the leader"):
        old.propose(b"y")


# ---------------------------------------------------------------------------- §5.2


def test_5_2_start_as_follower() -> None:
    n = make_node("n1")
    assert n.role == Role.FOLLOWER and n.term == 0 and n.vote == "" and n.leader == ""
    assert n.ready().empty()


def ticks_until_campaign(n: Any) -> int:
    for k in range(1, 10 * ELECTION):
        n.tick()
        if n.role != Role.FOLLOWER:
            return k
    raise AssertionError("never campaigned")


def test_5_2_election_timeout_is_randomized_in_e_to_2e() -> None:
    seen = []
    for seed in range(60):
        seen.append(ticks_until_campaign(make_node("n1", seed=seed)))
    assert all(ELECTION <= k < 2 * ELECTION for k in seen), seen
    assert len(set(seen)) >= ELECTION // 2  # actually randomized, not a constant


def test_5_2_election_timeout_is_redrawn_for_every_election() -> None:
    # A pre-candidate that never hears back keeps timing out; each retry draws anew.
    n = make_node("n1", seed=7)
    intervals = []
    last = 0
    for k in range(1, 40 * ELECTION):
        n.tick()
        if of_type(drain_msgs(n), PreVote):
            intervals.append(k - last)
            last = k
    assert len(intervals) >= 20
    assert all(ELECTION <= i < 2 * ELECTION for i in intervals), intervals
    assert len(set(intervals)) > 3


@pytest.mark.parametrize("pre_vote", [True, False])
def test_5_2_follower_starts_election_after_timeout(pre_vote: bool) -> None:
    n = make_node("n1", term=3, log_terms=[1, 3], pre_vote=pre_vote)
    for _ in range(2 * ELECTION):
        n.tick()
    rd = drain(n)
    if pre_vote:
        # §9.6: ask first, without touching the term or the vote.
        assert n.role == Role.PRE_CANDIDATE and n.term == 3 and n.vote == ""
        asks = of_type(rd.messages, PreVote)
        assert rd.hard_state is None
        assert of_type(rd.persisted_messages, PreVote) == []
        assert {(m.dst, m.term, m.last_index, m.last_term) for m in asks} == {
            ("n2", 4, 2, 3),
            ("n3", 4, 2, 3),
        }
    else:
        assert n.role == Role.CANDIDATE and n.term == 4 and n.vote == "n1"
        asks = of_type(rd.persisted_messages, RequestVote)
        assert of_type(rd.messages, RequestVote) == []
        assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (4, "n1")
        assert rd.must_sync
        assert {(m.dst, m.term, m.last_index, m.last_term) for m in asks} == {
            ("n2", 4, 2, 3),
            ("n3", 4, 2, 3),
        }


def test_5_2_pre_candidate_moves_to_real_election_on_pre_vote_quorum() -> None:
    n = make_node("n1", term=1)
    n.campaign()
    drain(n)
    n.step(PreVoteResp("n2", "n1", 2, True))
    assert n.role == Role.CANDIDATE and n.term == 2 and n.vote == "n1"
    assert {m.dst for m in of_type(drain(n).persisted_messages, RequestVote)} == {"n2", "n3"}


@pytest.mark.parametrize(
    ("ids", "grants", "expected"),
    [
        (IDS3, [], Role.CANDIDATE),
        (IDS3, ["n2"], Role.LEADER),
        (IDS5, ["n2"], Role.CANDIDATE),
        (IDS5, ["n2", "n2"], Role.CANDIDATE),  # a duplicated grant counts once
        (IDS5, ["n2", "n2", "n2", "n2"], Role.CANDIDATE),
        (IDS5, ["n2", "n3"], Role.LEADER),
        (IDS5, ["n5", "n4"], Role.LEADER),
    ],
)
def test_5_2_candidate_wins_with_a_quorum_of_distinct_voters(
    ids: tuple[str, ...], grants: list[str], expected: Role
) -> None:
    n = make_node("n1", ids, term=1, pre_vote=False)
    n.campaign()
    drain(n)
    for g in grants:
        n.step(RequestVoteResp(g, "n1", 2, True))
    assert n.role == expected
    if expected == Role.LEADER:
        assert n.leader == "n1" and n.term == 2


@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        (["n2"], Role.PRE_CANDIDATE),
        (["n2", "n2", "n2"], Role.PRE_CANDIDATE),
        (["n2", "n4"], Role.CANDIDATE),
    ],
)
def test_9_6_pre_vote_grants_are_counted_as_a_set(grants: list[str], expected: Role) -> None:
    n = make_node("n1", IDS5, term=1)
    n.campaign()
    drain(n)
    for g in grants:
        n.step(PreVoteResp(g, "n1", 2, True))
    assert n.role == expected


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        ([("n2", False), ("n3", False)], Role.CANDIDATE),
        ([("n2", False), ("n2", False), ("n2", False)], Role.CANDIDATE),  # one voter
        ([("n2", False), ("n3", False), ("n4", False)], Role.FOLLOWER),
        ([("n2", True), ("n3", False), ("n4", False), ("n5", False)], Role.FOLLOWER),
        ([("n2", False), ("n3", True), ("n4", True)], Role.LEADER),
    ],
)
def test_5_2_candidate_loses_to_a_quorum_of_rejections(
    responses: list[tuple[str, bool]], expected: Role
) -> None:
    n = make_node("n1", IDS5, term=1, pre_vote=False)
    n.campaign()
    drain(n)
    for src, granted in responses:
        n.step(RequestVoteResp(src, "n1", 2, granted))
    assert n.role == expected
    assert n.term == 2  # losing does not change the term


@pytest.mark.parametrize("role", [Role.PRE_CANDIDATE, Role.CANDIDATE], ids=lambda r: r.name)
@pytest.mark.parametrize("kind", ["append", "heartbeat"])
def test_5_2_candidate_steps_down_on_append_from_leader_of_same_term(role: Role, kind: str) -> None:
    n = node_in_role(role, term=3)
    m = (
        AppendEntries("n3", "n1", 3, 1, 1, (), 0)
        if kind == "append"
        else Heartbeat("n3", "n1", 3, 0)
    )
    n.step(m)
    assert n.role == Role.FOLLOWER and n.term == 3 and n.leader == "n3"
    if role == Role.CANDIDATE:
        assert n.vote == "n1"  # the vote of this term stays recorded


@pytest.mark.parametrize(
    ("vote", "leader_known", "src", "granted"),
    [
        ("", False, "n2", True),
        ("n2", False, "n2", True),  # the same candidate asking again (a lost reply)
        ("n2", False, "n3", False),  # one vote per term
        ("n1", False, "n3", False),  # voted for itself
        ("", True, "n3", False),  # a leader of this term is known
    ],
)
def test_5_2_one_vote_per_term(vote: str, leader_known: bool, src: str, granted: bool) -> None:
    n = make_node("n1", term=2, vote=vote, log_terms=[1])
    if leader_known:
        n.step(Heartbeat("n2", "n1", 2, 0))
        drain(n)
    n.step(RequestVote(src, "n1", 2, 1, 1))
    resp = of_type(drain(n).persisted_messages, RequestVoteResp)
    assert [(r.dst, r.term, r.granted) for r in resp] == [(src, 2, granted)]
    assert n.vote == (src if granted else vote)


def test_5_2_vote_sequence_in_one_term_grants_once() -> None:
    n = make_node("n1", term=1)
    decisions = []
    for src in ["n2", "n3", "n2", "n3"]:
        n.step(RequestVote(src, "n1", 2, 0, 0))
        rd = drain(n)
        decisions += [(r.dst, r.granted) for r in of_type(rd.persisted_messages, RequestVoteResp)]
    assert decisions == [("n2", True), ("n3", False), ("n2", True), ("n3", False)]


TIMER_EVENTS: list[tuple[str, Any, bool]] = [
    # (name, message to n1 at term 2 from a node that is not n1's leader unless said, resets?)
    ("grant vote", RequestVote("n2", "n1", 2, 5, 2), True),
    ("reject vote (stale log)", RequestVote("n2", "n1", 2, 0, 0), False),
    ("reject vote (already voted)", RequestVote("n3", "n1", 2, 5, 2), False),
    ("reject higher-term vote (stale log)", RequestVote("n2", "n1", 3, 0, 0), False),
    ("append from leader", AppendEntries("n2", "n1", 2, 1, 1, (), 0), True),
    ("heartbeat from leader", Heartbeat("n2", "n1", 2, 0), True),
    ("higher-term heartbeat", Heartbeat("n3", "n1", 3, 0), True),
    ("stale-term append", AppendEntries("n2", "n1", 1, 1, 1, (), 0), False),
    ("stale-term heartbeat", Heartbeat("n2", "n1", 1, 0), False),
    ("grant pre-vote", PreVote("n2", "n1", 3, 5, 2), False),
    ("reject pre-vote", PreVote("n2", "n1", 3, 0, 0), False),
    ("higher-term append resp", AppendResp("n3", "n1", 3, False, 0), False),
    ("read index req", ReadIndexReq("n2", "n1", 2, 1), False),
]


@pytest.mark.parametrize(("name", "msg", "resets"), TIMER_EVENTS, ids=[e[0] for e in TIMER_EVENTS])
def test_5_2_election_timer_resets_only_on_grant_leader_contact_or_campaign(
    name: str, msg: Any, resets: bool
) -> None:
    vote = "n2" if "already voted" in name else ""
    n = make_node("n1", term=2, vote=vote, log_terms=[1, 1, 2], check_quorum=False)
    for _ in range(ELECTION - 3):
        n.tick()
    assert n.role == Role.FOLLOWER
    n.step(msg)
    assert n.election_elapsed == (0 if resets else ELECTION - 3)


def test_5_2_rejecting_votes_does_not_postpone_own_election() -> None:
    # A follower flooded with (rejected) vote requests must still time out and campaign.
    n = make_node("n1", term=2, log_terms=[1, 2], check_quorum=False)
    for _ in range(2 * ELECTION):
        n.step(RequestVote("n2", "n1", 2, 0, 0))
        n.tick()
    assert n.role == Role.PRE_CANDIDATE


def test_5_2_starting_an_election_resets_the_timer() -> None:
    n = make_node("n1", pre_vote=False)
    ticks_until_campaign(n)
    assert n.role == Role.CANDIDATE and n.election_elapsed == 0
    first = n.term
    k = ticks_until_next_term(n)
    assert ELECTION <= k < 2 * ELECTION and n.term == first + 1


def ticks_until_next_term(n: Any) -> int:
    t = n.term
    for k in range(1, 10 * ELECTION):
        n.tick()
        if n.term != t:
            return k
    raise AssertionError("no new election")


def test_5_2_network_elects_exactly_one_leader_and_others_learn_it() -> None:
    net = Network.of(IDS5, seed=3)
    for _ in range(5 * ELECTION):
        net.tick()
        if net.leaders():
            break
    assert len(net.leaders()) == 1
    leader = net.leaders()[0]
    net.tick(3)
    assert all(n.leader == leader and n.term == net[leader].term for n in net.nodes.values())


# ---------------------------------------------------------------------------- §5.4.1

# Voter's log ends at (index 3, term 2): [1, 2, 2].
RESTRICTION = [
    # (candidate last_term, last_index, up to date?)
    (1, 1, False),
    (1, 3, False),
    (1, 9, False),  # longer but older
    (2, 2, False),  # same term, shorter
    (2, 3, True),  # identical
    (2, 4, True),  # same term, longer
    (3, 1, True),  # newer last term wins even when shorter
    (3, 3, True),
    (0, 0, False),  # empty log
]


@pytest.mark.parametrize(("last_term", "last_index", "ok"), RESTRICTION)
def test_5_4_1_election_restriction_for_votes(last_term: int, last_index: int, ok: bool) -> None:
    n = make_node("n1", term=2, log_terms=[1, 2, 2])
    n.step(RequestVote("n2", "n1", 3, last_index, last_term))
    (resp,) = of_type(drain(n).persisted_messages, RequestVoteResp)
    assert resp.granted is ok
    assert n.term == 3  # the term is adopted either way
    assert n.vote == ("n2" if ok else "")


@pytest.mark.parametrize(("last_term", "last_index", "ok"), RESTRICTION)
def test_9_6_pre_vote_rejected_when_candidate_log_is_stale(
    last_term: int, last_index: int, ok: bool
) -> None:
    n = make_node("n1", term=2, log_terms=[1, 2, 2])
    n.step(PreVote("n2", "n1", 3, last_index, last_term))
    (resp,) = of_type(drain_msgs(n), PreVoteResp)
    assert resp.granted is ok
    assert resp.term == (3 if ok else 2)
    assert (n.term, n.vote) == (2, "")


def test_9_6_pre_vote_for_a_term_not_newer_is_rejected() -> None:
    n = make_node("n1", term=4, log_terms=[1])
    n.step(PreVote("n2", "n1", 4, 5, 4))
    (resp,) = of_type(drain_msgs(n), PreVoteResp)
    assert not resp.granted and resp.term == 4


def test_5_4_1_stale_node_cannot_win_election() -> None:
    # n3 missed a committed entry; after n1 dies only n2 (which has it) can become leader.
    net = Network.of(IDS3, seed=5)
    net.elect("n1")
    net.isolated.add("n3")
    idx = net["n1"].propose(b"only on n1 and n2")
    net.run()
    assert net["n1"].committed == idx
    net.isolated = {"n1"}
    n3_led = False
    for _ in range(10 * ELECTION):
        net.tick(only=["n2", "n3"])
        n3_led = n3_led or net["n3"].role == Role.LEADER
        if net["n2"].role == Role.LEADER:
            break
    assert not n3_led
    assert net["n2"].role == Role.LEADER
    assert net["n3"].log.entry(idx).data == b"only on n1 and n2"


# ---------------------------------------------------------------------------- §9.6 pre-vote


def test_9_6_partitioned_node_does_not_inflate_its_term_nor_disrupt_on_rejoin() -> None:
    net = Network.of(IDS3, seed=11)
    net.elect("n1")
    term = net["n1"].term
    net.isolated.add("n3")
    for _ in range(6 * ELECTION):
        net.tick()
    assert net["n3"].term == term  # pre-votes went nowhere; no term bump
    assert net["n3"].role == Role.PRE_CANDIDATE
    net.isolated.clear()
    for _ in range(3 * ELECTION):
        net.tick()
    assert net.leaders() == ["n1"]
    assert {n.term for n in net.nodes.values()} == {term}
    assert net["n3"].leader == "n1"


def test_without_pre_vote_and_check_quorum_a_rejoining_node_disrupts() -> None:
    # The contrast case that motivates §9.6: a real vote inflates the term and deposes.
    net = Network.of(IDS3, seed=11, pre_vote=False, check_quorum=False)
    net.elect("n1")
    term = net["n1"].term
    net.isolated.add("n3")
    for _ in range(6 * ELECTION):
        net.tick()
    assert net["n3"].term > term + 2
    net.isolated.clear()
    net.tick(2)
    assert net["n1"].term > term


def test_9_6_pre_vote_win_then_real_vote_in_a_network() -> None:
    net = Network.of(IDS3, seed=2)
    net.elect("n2")
    assert {n.term for n in net.nodes.values()} == {1}
    assert net.sent_of(PreVote) and net.sent_of(RequestVote)
    pre_terms = {m.term for m in net.sent_of(PreVote)}
    assert pre_terms == {1}


# ---------------------------------------------------------------------------- check-quorum


def test_check_quorum_isolated_leader_steps_down_after_election_timeout() -> None:
    net = Network.of(IDS3, seed=4)
    net.elect("n1")
    net.isolated.add("n1")
    ticks = 0
    while net["n1"].role == Role.LEADER and ticks < 3 * ELECTION:
        net["n1"].tick()
        ticks += 1
    assert net["n1"].role == Role.FOLLOWER
    assert ticks <= 2 * ELECTION
    assert net["n1"].counters.get("check_quorum_step_down") == 1


def test_check_quorum_leader_with_a_live_majority_stays() -> None:
    net = Network.of(IDS3, seed=4)
    net.elect("n1")
    net.isolated.add("n3")
    for _ in range(5 * ELECTION):
        net.tick(only=["n1", "n2"])
    assert net["n1"].role == Role.LEADER


def test_check_quorum_off_isolated_leader_stays() -> None:
    net = Network.of(IDS3, seed=4, check_quorum=False)
    net.elect("n1")
    net.isolated.add("n1")
    for _ in range(5 * ELECTION):
        net["n1"].tick()
    assert net["n1"].role == Role.LEADER


def follower_with_live_leader(**kw: Any) -> Any:
    n = make_node("n2", term=3, log_terms=[1, 3], **kw)
    n.step(Heartbeat("n1", "n2", 3, 0))
    drain(n)
    return n


@pytest.mark.parametrize(
    ("msg", "ignored"),
    [
        (PreVote("n3", "n2", 4, 9, 3), True),
        (RequestVote("n3", "n2", 4, 9, 3), True),
        (RequestVote("n3", "n2", 4, 9, 3, transfer=True), False),
    ],
    ids=["pre-vote", "vote", "transfer-vote"],
)
def test_check_quorum_lease_ignores_votes_while_leader_is_alive(msg: Any, ignored: bool) -> None:
    n = follower_with_live_leader()
    n.tick()
    n.step(msg)
    out = drain_msgs(n)
    if ignored:
        assert out == [] and n.term == 3 and n.leader == "n1"
        assert n.counters.get("drop_vote_in_lease") == 1
    else:
        assert n.term == 4 and n.vote == "n3"
        assert [(type(m), m.granted) for m in out] == [(RequestVoteResp, True)]


def test_check_quorum_lease_expires_after_election_ticks_without_leader() -> None:
    m = follower_with_live_leader(seed=99)
    for _ in range(ELECTION - 1):
        m.tick()
    m.step(PreVote("n3", "n2", 4, 9, 3))
    assert of_type(drain_msgs(m), PreVoteResp) == []  # still in lease at e-1
    m.tick()  # e ticks without hearing from n1 (the timeout itself is >= e)
    m.step(PreVote("n3", "n2", 4, 9, 3))
    resp = of_type(drain_msgs(m), PreVoteResp)
    assert [r.granted for r in resp] == [True]


def test_check_quorum_leader_ignores_disruptive_vote_request() -> None:
    n = make_leader("n1", term=2, log_terms=[1], check_quorum=True)
    n.step(RequestVote("n3", "n1", 9, 100, 9))
    assert n.role == Role.LEADER and n.term == 3


def test_votes_from_an_old_election_are_ignored() -> None:
    n = make_node("n1", term=3, pre_vote=False)
    n.campaign()  # term 4
    drain(n)
    n.step(RequestVoteResp("n2", "n1", 3, True))  # granted in an earlier election
    n.step(RequestVoteResp("n3", "n1", 3, True))
    assert n.role == Role.CANDIDATE and n.term == 4
    n.step(RequestVoteResp("n2", "n1", 4, True))
    assert n.role == Role.LEADER


def test_late_grants_do_not_make_a_stepped_down_candidate_leader() -> None:
    n = make_node("n1", IDS5, term=1, pre_vote=False)
    n.campaign()
    drain(n)
    n.step(RequestVoteResp("n2", "n1", 2, True))
    n.step(AppendEntries("n3", "n1", 2, 0, 0, (), 0))  # n3 won term 2
    assert n.role == Role.FOLLOWER
    for src in ("n2", "n4", "n5"):
        n.step(RequestVoteResp(src, "n1", 2, True))
    assert n.role == Role.FOLLOWER and n.leader == "n3"


def test_pre_vote_grants_for_another_term_are_ignored() -> None:
    n = make_node("n1", term=3)
    n.campaign()  # pre-vote for term 4
    drain(n)
    n.step(PreVoteResp("n2", "n1", 3, True))  # stale (an older pre-vote)
    assert n.role == Role.PRE_CANDIDATE
    n.step(PreVoteResp("n3", "n1", 6, True))  # a term we never asked for
    assert n.role == Role.PRE_CANDIDATE and n.term == 3
    assert n.counters.get("drop_stale_vote", 0) + n.counters.get("drop_stale_term", 0) == 2


def test_single_voter_elects_itself() -> None:
    for pre in (True, False):
        n = make_node("n1", ["n1"], pre_vote=pre)
        for _ in range(2 * ELECTION):
            n.tick()
        assert n.role == Role.LEADER and n.term == 1
        rd = drain(n)
        assert rd.hard_state is not None and rd.hard_state.vote == "n1"
        assert [e.index for e in rd.entries] == [1]
        assert all_msgs(rd) == []


def test_random_elections_never_have_two_leaders_in_one_term() -> None:
    # Lossy network, random seeds: election safety (§5.2) holds in every term.
    for seed in range(6):
        rng = random.Random(seed)
        net = Network.of(IDS5, seed=seed * 10)
        net.drop = lambda m, r=rng: r.random() < 0.3
        leaders_by_term: dict[int, set[str]] = {}
        for _ in range(30 * ELECTION // 2):
            net.tick()
            for nid in net.leaders():
                leaders_by_term.setdefault(net[nid].term, set()).add(nid)
        assert leaders_by_term
        assert all(len(v) == 1 for v in leaders_by_term.values()), leaders_by_term
