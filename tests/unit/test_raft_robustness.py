"""Untrusted peer input (dropped and counted, never raised), restart from disk, and a
hypothesis fuzzer feeding random messages to nodes in every role."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.raftkit import (
    IDS3,
    Disk,
    Network,
    drain,
    drain_msgs,
    ents,
    log_terms,
    make_leader,
    make_node,
    of_type,
)
from udpraft.core import (
    MESSAGE_TYPES,
    Entry,
    HardState,
    RaftError,
    RaftNode,
    Role,
)
from udpraft.core.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    PreVote,
    PreVoteResp,
    ReadIndexReq,
    ReadIndexResp,
    RequestVote,
    RequestVoteResp,
    TimeoutNow,
)

# ---------------------------------------------------------------------------- bad input


def snapshot(n: RaftNode) -> tuple[Any, ...]:
    return (n.term, n.vote, n.role, n.committed, log_terms(n))


def follower() -> RaftNode:
    n = make_node("n1", term=3, log_terms=[1, 2, 3])
    n.step(AppendEntries("n2", "n1", 3, 3, 3, (), 2))  # n2 leads term 3; commit 2
    drain(n)
    return n


def leader() -> RaftNode:
    n = make_leader("n1", term=2, log_terms=[1, 2])
    n.step(AppendResp("n2", "n1", 3, True, 3))
    drain(n)
    assert n.committed == 3
    return n


BAD: list[tuple[str, Any, Any, str]] = [
    # (name, node factory, message, counter)
    ("unknown sender", follower, Heartbeat("n9", "n1", 3, 0), "drop_unknown_sender"),
    ("sender is myself", follower, Heartbeat("n1", "n1", 3, 0), "drop_unknown_sender"),
    (
        "unknown sender higher term",
        follower,
        RequestVote("zz", "n1", 99, 9, 9),
        "drop_unknown_sender",
    ),
    ("wrong destination", follower, Heartbeat("n2", "n3", 3, 0), "drop_wrong_dst"),
    ("not a message", follower, "garbage", "drop_unknown_type"),
    ("negative term", follower, Heartbeat("n2", "n1", -1, 0), "drop_bad_field"),
    ("negative prev_index", follower, AppendEntries("n2", "n1", 3, -1, 0, (), 0), "drop_bad_field"),
    ("negative prev_term", follower, AppendEntries("n2", "n1", 3, 0, -1, (), 0), "drop_bad_field"),
    ("negative commit", follower, AppendEntries("n2", "n1", 3, 3, 3, (), -1), "drop_bad_field"),
    ("negative hb commit", follower, Heartbeat("n2", "n1", 3, -5), "drop_bad_field"),
    ("negative hb ctx", follower, Heartbeat("n2", "n1", 3, 0, -1), "drop_bad_field"),
    ("negative vote index", follower, RequestVote("n3", "n1", 4, -1, 3), "drop_bad_field"),
    ("negative prevote term", follower, PreVote("n3", "n1", 4, 3, -3), "drop_bad_field"),
    ("negative ack index", leader, AppendResp("n2", "n1", 3, True, -1), "drop_bad_field"),
    ("negative hint index", leader, AppendResp("n2", "n1", 3, False, 2, -1, 0), "drop_bad_field"),
    ("negative hint term", leader, AppendResp("n2", "n1", 3, False, 2, 0, -1), "drop_bad_field"),
    (
        "non-contiguous entries",
        follower,
        AppendEntries("n2", "n1", 3, 3, 3, (Entry(4, 3), Entry(6, 3)), 0),
        "drop_bad_entries",
    ),
    (
        "entries not after prev",
        follower,
        AppendEntries("n2", "n1", 3, 3, 3, (Entry(5, 3),), 0),
        "drop_bad_entries",
    ),
    (
        "term-decreasing entries",
        follower,
        AppendEntries("n2", "n1", 3, 1, 1, (Entry(2, 3), Entry(3, 2)), 0),
        "drop_bad_entries",
    ),
    (
        "a term dip inside the batch",
        follower,
        AppendEntries("n2", "n1", 3, 1, 1, (Entry(2, 2), Entry(3, 1), Entry(4, 2)), 0),
        "drop_bad_entries",
    ),
    (
        "entry term below prev term",
        follower,
        AppendEntries("n2", "n1", 3, 3, 3, (Entry(4, 2),), 0),
        "drop_bad_entries",
    ),
    (
        "entry term above message term",
        follower,
        AppendEntries("n2", "n1", 3, 3, 3, (Entry(4, 7),), 0),
        "drop_bad_entries",
    ),
    (
        "conflict below commit",
        follower,
        AppendEntries("n2", "n1", 3, 1, 1, (Entry(2, 3),), 0),
        "drop_conflict_below_commit",
    ),
    ("ack beyond last index", leader, AppendResp("n2", "n1", 3, True, 99), "drop_bad_ack"),
    (
        "second leader same term",
        leader,
        AppendEntries("n2", "n1", 3, 3, 3, (), 0),
        "drop_second_leader",
    ),
    ("second leader heartbeat", leader, Heartbeat("n2", "n1", 3, 0), "drop_second_leader"),
]


@pytest.mark.parametrize(("name", "factory", "msg", "counter"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_dropped_and_counted(name: str, factory: Any, msg: Any, counter: str) -> None:
    n = factory()
    before = snapshot(n)
    counters = dict(n.counters)
    n.step(msg)
    assert snapshot(n) == before
    assert n.counters.get(counter, 0) == counters.get(counter, 0) + 1
    rd = drain(n)
    assert rd.entries == [] and rd.hard_state is None
    assert [
        m
        for m in rd.messages + rd.persisted_messages
        if not isinstance(m, AppendEntries) and not isinstance(m, Heartbeat)
    ] == []


def test_rejection_beyond_the_leaders_log_is_dropped_and_does_not_wedge_replication() -> None:
    net = Network.of(IDS3, seed=1)
    n1 = net.elect("n1")
    n1.step(AppendResp("n2", "n1", n1.term, False, 10**6, 10**6, 0))
    idx = n1.propose(b"x")
    net.run()
    net.tick(3 * n1.cfg.election_ticks // 2)
    assert net["n2"].log.last_index() == idx
    assert n1.counters.get("drop_bad_ack", 0) == 1


def test_heartbeat_answer_for_a_round_never_sent_confirms_no_read() -> None:
    n = leader()
    n.read_index(1)  # its round (ctx 1) is only sent with the next Ready
    n.step(HeartbeatResp("n2", "n1", n.term, 10**9))
    assert drain(n).read_states == []


def test_negative_read_index_from_leader_is_dropped() -> None:
    f = follower()
    f.read_index(4)
    drain(f)
    f.step(ReadIndexResp("n2", "n1", 3, 4, -5, True))
    assert all(r.index >= 0 for r in drain(f).read_states)
    assert f.counters.get("drop_bad_field", 0) == 1


# ---------------------------------------------------------------------------- restart


def test_restart_keeps_term_and_vote_and_never_votes_twice_in_a_term() -> None:
    disk = Disk()
    n = make_node("n1", term=4)
    n.step(RequestVote("n2", "n1", 5, 0, 0))
    rd = disk.step(n)
    assert of_type(rd.persisted_messages, RequestVoteResp)[0].granted
    r = disk.restart(n)
    assert (r.term, r.vote, r.role) == (5, "n2", Role.FOLLOWER)
    r.step(RequestVote("n3", "n1", 5, 9, 9))
    (resp,) = of_type(drain(r).persisted_messages, RequestVoteResp)
    assert not resp.granted
    r.step(RequestVote("n2", "n1", 5, 0, 0))  # the same candidate again: still granted
    (resp,) = of_type(drain(r).persisted_messages, RequestVoteResp)
    assert resp.granted


def test_restart_does_not_trust_commit_from_disk() -> None:
    es = ents([1, 1, 2, 2, 2])
    r = RaftNode("n1", list(IDS3), random.Random(1), make_node().cfg, HardState(2, "n2", 5), es)
    assert r.committed == 0
    rd = drain(r)
    assert rd.committed_entries == [] and rd.entries == [] and rd.hard_state is None
    r.step(AppendEntries("n2", "n1", 3, 2, 1, (), 5))  # new leader: matches only up to 2
    assert r.committed == 2
    assert [e.index for e in drain(r).committed_entries] == [1, 2]


def test_restart_keeps_the_durable_log_and_term_of_a_former_leader() -> None:
    disk = Disk()
    n = make_node("n1", pre_vote=False)
    n.campaign()
    disk.step(n)
    n.step(RequestVoteResp("n2", "n1", 1, True))
    disk.step(n)
    n.propose(b"x")
    disk.step(n)
    r = disk.restart(n, pre_vote=False)
    assert (r.role, r.term, r.vote) == (Role.FOLLOWER, 1, "n1")
    assert log_terms(r) == [1, 1] and r.log.entry(2).data == b"x"
    r.campaign()
    assert r.term == 2  # a new election, never a second one in term 1


def test_restart_rebuilds_a_truncated_log_as_the_runtime_stored_it() -> None:
    disk = Disk()
    f = make_node("n2", term=2)
    f.step(AppendEntries("n1", "n2", 2, 0, 0, tuple(ents([1, 2, 2])), 0))
    disk.step(f)
    f.step(AppendEntries("n3", "n2", 3, 1, 1, tuple(ents([3], 2)), 0))
    disk.step(f)
    r = disk.restart(f)
    assert log_terms(r) == [1, 3] and (r.term, r.vote) == (3, "")


def test_cluster_survives_full_restart_without_losing_committed_entries() -> None:
    net = Network.of(IDS3, seed=2)
    net.disks = {}
    net.elect("n1")
    idx = net["n1"].propose(b"keep me")
    net.run()
    assert net["n1"].committed == idx
    net.nodes = {nid: net.disks[nid].restart(net[nid]) for nid in IDS3}
    assert all(n.committed == 0 and n.role == Role.FOLLOWER for n in net.nodes.values())
    for _ in range(6 * net["n1"].cfg.election_ticks):
        net.tick()
        if net.leaders():
            break
    (lead,) = net.leaders()
    assert net[lead].log.entry(idx).data == b"keep me"
    net.tick(3)
    assert all(n.committed >= idx for n in net.nodes.values())
    assert all(n.log.entry(idx).data == b"keep me" for n in net.nodes.values())


# ---------------------------------------------------------------------------- fuzzing

NAMES = ["n1", "n2", "n3", "n9", ""]
INTS = st.one_of(
    st.integers(min_value=-2, max_value=8),
    st.sampled_from([-(2**63), -(10**18), 2**31, 2**63, 10**30]),
)
SRC = st.sampled_from(NAMES)
DST = st.sampled_from(["n1", "n1", "n1", "n1", "n2", "zz"])


@st.composite
def entry_tuples(draw: Any) -> tuple[int, tuple[Entry, ...]]:
    """(prev_index, entries): either plausible (contiguous, non-decreasing) or random."""
    prev = draw(INTS)
    if draw(st.booleans()):
        terms = sorted(draw(st.lists(st.integers(0, 8), max_size=5)))
        es = tuple(Entry(prev + 1 + i, t, b"f") for i, t in enumerate(terms))
    else:
        es = tuple(draw(st.lists(st.builds(Entry, INTS, INTS, st.just(b"r")), max_size=4)))
    return prev, es


@st.composite
def append_entries(draw: Any) -> AppendEntries:
    prev, es = draw(entry_tuples())
    return AppendEntries(draw(SRC), draw(DST), draw(INTS), prev, draw(INTS), es, draw(INTS))


B = st.booleans()
BUILDERS: dict[type, Any] = {
    PreVote: st.builds(PreVote, SRC, DST, INTS, INTS, INTS),
    PreVoteResp: st.builds(PreVoteResp, SRC, DST, INTS, B),
    RequestVote: st.builds(RequestVote, SRC, DST, INTS, INTS, INTS, B),
    RequestVoteResp: st.builds(RequestVoteResp, SRC, DST, INTS, B),
    AppendEntries: append_entries(),
    AppendResp: st.builds(AppendResp, SRC, DST, INTS, B, INTS, INTS, INTS),
    Heartbeat: st.builds(Heartbeat, SRC, DST, INTS, INTS, INTS),
    HeartbeatResp: st.builds(HeartbeatResp, SRC, DST, INTS, INTS),
    TimeoutNow: st.builds(TimeoutNow, SRC, DST, INTS),
    ReadIndexReq: st.builds(ReadIndexReq, SRC, DST, INTS, INTS),
    ReadIndexResp: st.builds(ReadIndexResp, SRC, DST, INTS, INTS, INTS, B),
    InstallSnapshot: st.builds(InstallSnapshot, SRC, DST, INTS, INTS, INTS),
}
MESSAGES = st.one_of(*BUILDERS.values())
OPS = st.one_of(
    MESSAGES.map(lambda m: ("step", m)),
    st.just(("tick", None)),
    st.just(("ready", None)),
    st.just(("propose", None)),
    st.integers(1, 5).map(lambda i: ("read", i)),
)
ROLE_SETUPS = [
    "follower",
    "follower-with-leader",
    "pre-candidate",
    "candidate",
    "leader",
    "leader-no-cq",
    "single",
]


def node_for(setup: str) -> RaftNode:
    if setup == "follower":
        return make_node("n1", term=2, log_terms=[1, 2])
    if setup == "follower-with-leader":
        return follower()
    if setup == "pre-candidate":
        n = make_node("n1", term=2, log_terms=[1, 2])
        n.campaign()
        return n
    if setup == "candidate":
        n = make_node("n1", term=2, log_terms=[1, 2], pre_vote=False)
        n.campaign()
        return n
    if setup == "leader":
        return leader()
    if setup == "leader-no-cq":
        return make_leader("n1", term=2, log_terms=[1, 2], check_quorum=False)
    n = make_node("n1", ["n1"])
    n.campaign()
    return n


def test_message_types_are_all_fuzzed() -> None:
    assert set(BUILDERS) == set(MESSAGE_TYPES) and len(MESSAGE_TYPES) == 12


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(setup=st.sampled_from(ROLE_SETUPS), ops=st.lists(OPS, max_size=40))
def test_fuzz_random_messages_never_raise_nor_break_invariants(
    setup: str, ops: list[tuple[str, Any]]
) -> None:
    n = node_for(setup)
    durable_term = n.term
    term, commit = n.term, n.committed
    vote_in_term = (n.term, n.vote)
    def committed_view() -> dict[int, Any]:
        # A snapshot install compacts the log: compare what is still in it.
        return {i: n.log.entry(i) for i in range(n.log.first_index(), n.committed + 1)}

    committed_prefix = committed_view()
    for op, arg in ops:
        if op == "step":
            n.step(arg)
        elif op == "tick":
            n.tick()
        elif op == "propose":
            with contextlib.suppress(RaftError):
                n.propose(b"p")
        elif op == "read":
            n.read_index(arg)
        else:
            rd = n.ready()
            # Persist-before-send: vote/append answers never go out before the disk write,
            # and nothing in `messages` speaks for a term that is not yet durable.
            assert not of_type(rd.messages, (RequestVote, RequestVoteResp, AppendResp))
            for m in rd.messages:
                if not isinstance(m, PreVote | PreVoteResp):
                    assert m.term <= durable_term, m
            assert rd.must_sync == (
                rd.hard_state is not None or bool(rd.entries) or rd.snapshot is not None
            )
            n.advance(rd)
            if rd.hard_state is not None:
                durable_term = rd.hard_state.term
        # Invariants: term and commit never decrease; one vote per term; committed entries
        # never change; commit stays inside the log; log terms never decrease.
        assert n.term >= term
        assert n.committed >= commit
        assert n.committed <= n.log.last_index()
        if n.term == vote_in_term[0] and vote_in_term[1]:
            assert n.vote == vote_in_term[1]
        vote_in_term = (n.term, n.vote)
        now = committed_view()
        assert all(now[i] == e for i, e in committed_prefix.items() if i in now)
        committed_prefix = now
        terms = log_terms(n)
        assert terms == sorted(terms) and (not terms or terms[-1] <= n.term)
        assert (n.role == Role.LEADER) == (n.leader == "n1")
        term, commit = n.term, n.committed


def test_fuzz_drops_are_counted_not_raised() -> None:
    # A deterministic smoke pass over nonsense of every type, for every role.
    junk = [
        PreVote("n2", "n1", -1, -1, -1),
        PreVoteResp("n9", "n1", 10**30, True),
        RequestVote("n2", "n1", 2**63, -5, 2**63),
        RequestVoteResp("", "n1", 3, True),
        AppendEntries("n2", "n1", 10**9, 10**9, 10**9, (Entry(10**9 + 1, 10**9),), 10**9),
        AppendResp("n2", "n1", 3, True, 10**12),
        Heartbeat("n3", "n1", 3, 10**12, 10**12),
        HeartbeatResp("n3", "n1", 3, -7),
        TimeoutNow("n2", "zz", 3),
        ReadIndexReq("n3", "n1", 3, -1),
        ReadIndexResp("n3", "n1", 3, -1, -1, False),
    ]
    for setup in ROLE_SETUPS:
        n = node_for(setup)
        for m in junk:
            n.step(m)  # type: ignore[arg-type]
            n.tick()
            drain_msgs(n)
        assert sum(n.counters.values()) >= 3
