"""Raft §5.3 (log replication), §5.4.2 (committing entries from previous terms, Figure 8),
stale replies, persist-before-send (Figure 2, §10.2.1) and proposal flow control."""

from __future__ import annotations

import math
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
    ents,
    log_entries,
    log_terms,
    make_leader,
    make_node,
    of_type,
)
from udpraft.core import Entry, EntryKind, NotLeader, ProposalDropped, Role
from udpraft.core.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    PreVote,
    PreVoteResp,
    RequestVote,
    RequestVoteResp,
)
from udpraft.core.progress import ProgressState


def replicating_leader(ids: tuple[str, ...] = IDS3, **kw: Any) -> Any:
    """A leader whose peers all acknowledged its no-op (all in REPLICATE, no-op committed)."""
    n = make_leader("n1", ids, **kw)
    for p in n.peers:
        n.step(AppendResp(p, "n1", n.term, True, n.log.last_index()))
    drain(n)
    assert all(pr.state == ProgressState.REPLICATE for pr in n.progress.values())
    assert n.committed == n.log.last_index()
    return n


# ---------------------------------------------------------------------------- §5.3 leader


def test_5_3_new_leader_appends_a_noop_of_its_term_and_replicates_it() -> None:
    n = make_leader("n1", term=2, log_terms=[1, 2], settle=False)
    assert n.term == 3
    noop = n.log.entry(3)
    assert (noop.term, noop.kind, noop.data) == (3, EntryKind.NOOP, b"")
    rd = drain(n)
    assert rd.entries == [noop] and rd.must_sync
    apps = of_type(rd.messages, AppendEntries)
    assert {a.dst for a in apps} == {"n2", "n3"}
    for a in apps:
        assert (a.term, a.prev_index, a.prev_term, a.entries) == (3, 2, 2, (noop,))
    assert of_type(rd.persisted_messages, AppendEntries) == []


def test_5_3_leader_replicates_proposals_and_all_apply_the_same_entries() -> None:
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    for i in range(5):
        net["n1"].propose(f"v{i}".encode())
    net.run()
    net.tick(2)  # heartbeats carry the final commit index
    leader_log = log_entries(net["n1"])
    assert len(leader_log) == 6
    for nid in IDS3:
        assert log_entries(net[nid]) == leader_log
        assert net[nid].committed == 6
        assert [e.data for e in net.applied[nid]] == [b""] + [f"v{i}".encode() for i in range(5)]


@pytest.mark.parametrize(
    ("acks", "leader_durable", "committed"),
    [
        ([], True, False),
        (["n2"], True, False),
        (["n2", "n3"], True, True),
        (["n2", "n2", "n2"], True, False),  # one follower acking thrice is still one
        (["n2", "n3"], False, False),  # leader's own write not durable: 2 of 5 is no quorum
        (["n2", "n3", "n4"], False, True),
    ],
)
def test_5_3_leader_commits_once_a_quorum_stores_the_entry(
    acks: list[str], leader_durable: bool, committed: bool
) -> None:
    n = replicating_leader(IDS5)
    idx = n.propose(b"x")
    rd = n.ready()
    if leader_durable:
        n.advance(rd)
    for p in acks:
        n.step(AppendResp(p, "n1", n.term, True, idx))
    assert (n.committed == idx) is committed


def test_10_2_1_leader_sends_before_its_own_fsync_and_counts_itself_only_after() -> None:
    n = replicating_leader(IDS3)
    idx = n.propose(b"x")
    rd = n.ready()
    # The append goes out in `messages`, i.e. in parallel with the leader's disk write.
    assert rd.entries[-1].index == idx and rd.must_sync
    assert {a.dst for a in of_type(rd.messages, AppendEntries)} == {"n2", "n3"}
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    assert n.committed == idx - 1  # leader + n2 is a quorum only once the leader is durable
    n.advance(rd)
    assert n.committed == idx
    # And with both followers acking, it commits without its own write.
    idx2 = n.propose(b"y")
    rd2 = n.ready()
    n.step(AppendResp("n2", "n1", n.term, True, idx2))
    assert n.committed == idx
    n.step(AppendResp("n3", "n1", n.term, True, idx2))
    assert n.committed == idx2
    n.advance(rd2)


def test_5_3_leader_tells_followers_the_new_commit_index() -> None:
    n = replicating_leader(IDS3)
    idx = n.propose(b"x")
    drain(n)
    n.step(AppendResp("n2", "n1", n.term, True, idx))
    out = of_type(drain_msgs(n), AppendEntries)
    assert {a.dst for a in out} >= {"n2"} and all(a.commit == idx for a in out)
    for _ in range(n.cfg.heartbeat_ticks):
        n.tick()
    hbs = {h.dst: h.commit for h in of_type(drain_msgs(n), Heartbeat)}
    # A heartbeat never carries a commit beyond what the follower is known to match.
    assert hbs == {"n2": idx, "n3": idx - 1}


# ---------------------------------------------------------------------------- §5.3 follower

FOLLOWER_LOG = [1, 1, 2, 2, 2]  # a follower at term 2


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "ok", "hint"),
    [
        (0, 0, True, None),
        (2, 1, True, None),
        (5, 2, True, None),
        (5, 3, False, (5, 2)),  # mismatch at the last entry
        (6, 2, False, (5, 2)),  # beyond our log: hint our last matching candidate
        (9, 3, False, (5, 2)),
        (4, 3, False, (4, 2)),
        (3, 1, False, (2, 1)),  # skip the whole term-2 run at once
        (2, 2, False, (2, 1)),
    ],
)
def test_5_3_follower_consistency_check_and_conflict_hint(
    prev_index: int, prev_term: int, ok: bool, hint: tuple[int, int] | None
) -> None:
    f = make_node("n2", term=3, log_terms=FOLLOWER_LOG)
    f.step(AppendEntries("n1", "n2", 3, prev_index, prev_term, (), 0))
    (resp,) = of_type(drain(f).persisted_messages, AppendResp)
    assert resp.success is ok and resp.term == 3
    assert log_terms(f) == FOLLOWER_LOG  # a check alone never changes the log
    if ok:
        assert resp.index == prev_index
    else:
        assert resp.index == prev_index
        assert (resp.hint_index, resp.hint_term) == hint


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7 = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    "empty": [],
    "same": FIG7_LEADER,
}


def converge(
    leader_terms: list[int], follower_terms: list[int], leader_term: int
) -> tuple[Any, Any, Network]:
    """Leader n1 (elected with n3's forged vote) and follower n2 exchange messages alone."""
    ldr = make_leader(
        "n1", term=leader_term - 1, log_terms=leader_terms, grants=["n3"], settle=False
    )
    assert ldr.term == leader_term
    fol = make_node("n2", term=max([*follower_terms, 1]), log_terms=follower_terms)
    net = Network({"n1": ldr, "n2": fol})
    net.run()
    net.tick(3)
    return ldr, fol, net


@pytest.mark.parametrize("case", list(FIG7))
def test_5_3_figure7_follower_logs_converge_to_the_leaders(case: str) -> None:
    ldr, fol, net = converge(FIG7_LEADER, FIG7[case], 8)
    assert log_terms(ldr) == [*FIG7_LEADER, 8]
    assert log_entries(fol) == log_entries(ldr)
    assert fol.committed == ldr.committed == 11
    rejections = [m for m in net.sent_of(AppendResp) if not m.success]
    assert len(rejections) <= 2, rejections


@pytest.mark.parametrize(
    ("leader_terms", "follower_terms", "leader_term"),
    [
        # One long conflicting term: a single rejection, not one per entry.
        ([1] * 5 + [3] * 100, [1] * 5 + [2] * 150, 4),
        # Several conflicting terms on the follower only.
        ([1] * 5 + [7] * 20, [1] * 5 + [2] * 20 + [3] * 20 + [4] * 20 + [5] * 20 + [6] * 20, 8),
        # Interleaved terms on both sides: back up about one term per rejection.
        ([1] + [2] * 10 + [4] * 10 + [6] * 10 + [8] * 10, [1] + [3] * 10 + [5] * 10 + [7] * 10, 9),
    ],
    ids=["one-term", "follower-terms", "interleaved"],
)
def test_5_3_leader_backs_up_a_term_at_a_time_not_an_entry_at_a_time(
    leader_terms: list[int], follower_terms: list[int], leader_term: int
) -> None:
    ldr, fol, net = converge(leader_terms, follower_terms, leader_term)
    assert log_entries(fol) == log_entries(ldr)
    common = 0
    while common < min(len(leader_terms), len(follower_terms)) and (
        leader_terms[common] == follower_terms[common]
    ):
        common += 1
    conflicting_terms = set(leader_terms[common:]) | set(follower_terms[common:])
    rejections = [m for m in net.sent_of(AppendResp) if not m.success]
    conflicting_entries = max(len(leader_terms), len(follower_terms)) - common
    assert 1 <= len(rejections) <= len(conflicting_terms) + 1
    assert len(rejections) * 5 < conflicting_entries


STALE_APPENDS = [
    # (prev_index, prev_term, entry terms starting at prev_index+1, msg term, expected log)
    (1, 1, [1], 2, [1, 1, 2, 2, 2]),  # stale shorter append: must not cut the suffix
    (0, 0, [1, 1, 2], 2, [1, 1, 2, 2, 2]),  # duplicate of an early append
    (3, 2, [], 2, [1, 1, 2, 2, 2]),  # empty append in the middle
    (2, 1, [2, 2, 2, 2], 2, [1, 1, 2, 2, 2, 2]),  # extends: overlap matches, tail is new
    (2, 1, [2, 3], 3, [1, 1, 2, 3]),  # a real conflict at 4: cut from there only
    (0, 0, [1, 3], 3, [1, 3]),  # a real conflict at 2
    (5, 2, [3, 3], 3, [1, 1, 2, 2, 2, 3, 3]),
]


@pytest.mark.parametrize(("prev_index", "prev_term", "terms", "term", "expected"), STALE_APPENDS)
def test_5_3_truncate_only_at_a_real_conflict(
    prev_index: int, prev_term: int, terms: list[int], term: int, expected: list[int]
) -> None:
    f = make_node("n2", term=2, log_terms=FOLLOWER_LOG)
    f.step(
        AppendEntries(
            "n1", "n2", term, prev_index, prev_term, tuple(ents(terms, prev_index + 1)), 0
        )
    )
    assert log_terms(f) == expected
    (resp,) = of_type(drain(f).persisted_messages, AppendResp)
    assert resp.success and resp.index == prev_index + len(terms)


def test_5_3_reordered_and_duplicated_appends_never_lose_entries() -> None:
    f = make_node("n2", term=1)
    log = ents([1, 1, 1, 1, 1, 1])
    a1 = AppendEntries("n1", "n2", 1, 0, 0, tuple(log[:3]), 0)
    a2 = AppendEntries("n1", "n2", 1, 3, 1, tuple(log[3:5]), 0)
    a3 = AppendEntries("n1", "n2", 1, 5, 1, tuple(log[5:]), 2)
    for m in [a2, a1, a2, a3, a1, a2, a1]:
        f.step(m)
        drain(f)
    assert log_entries(f) == log
    assert f.committed == 2


def test_5_3_truncation_rewrites_storage_from_the_conflict_point() -> None:
    f = make_node("n2", term=2, log_terms=[1, 1, 2, 2])
    new = ents([3, 3], 3)
    f.step(AppendEntries("n1", "n2", 3, 2, 1, tuple(new), 0))
    rd = drain(f)
    assert rd.entries == new  # the runtime truncates at entries[0].index before writing
    assert rd.must_sync


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "terms", "leader_commit", "expected_commit"),
    [
        (2, 1, [], 5, 2),  # our entries 3..5 are an old term's leftovers: not covered
        (2, 1, [2], 5, 3),  # covered up to 3 only
        (1, 1, [1], 1, 1),
        (4, 1, [], 3, 3),  # leader commit below what is covered
        (5, 1, [], 9, 5),
    ],
)
def test_5_3_follower_commit_is_min_of_leader_commit_and_last_new_entry(
    prev_index: int, prev_term: int, terms: list[int], leader_commit: int, expected_commit: int
) -> None:
    f = make_node("n2", term=1, log_terms=[1, 1, 1, 1, 1])
    f.step(
        AppendEntries(
            "n1", "n2", 2, prev_index, prev_term, tuple(ents(terms, prev_index + 1)), leader_commit
        )
    )
    assert f.committed == expected_commit
    rd = drain(f)
    assert [e.index for e in rd.committed_entries] == list(range(1, expected_commit + 1))


def test_5_3_follower_commit_from_heartbeat_is_bounded_by_its_log() -> None:
    f = make_node("n2", term=2, log_terms=[1, 2])
    f.step(Heartbeat("n1", "n2", 2, 7))
    assert f.committed == 2
    f.step(Heartbeat("n1", "n2", 2, 1))
    assert f.committed == 2  # never decreases


# ---------------------------------------------------------------------------- §5.4.2 / Fig. 8


def test_5_4_2_leader_never_commits_previous_term_entry_by_counting_replicas() -> None:
    # Figure 8 (c): n1 leads term 4 with index 2 from its term 2 on a majority.
    n = make_leader("n1", IDS5, term=3, log_terms=[1, 2], grants=["n2", "n3"])
    assert n.term == 4 and log_terms(n) == [1, 2, 4]
    for p in ("n2", "n3", "n4"):
        n.step(AppendResp(p, "n1", 4, True, 2))  # index 2 is now on all of n1..n4
    assert n.committed == 0
    assert drain(n).committed_entries == []
    n.step(AppendResp("n2", "n1", 4, True, 3))
    assert n.committed == 0  # n1 + n2 hold index 3: 2 of 5
    n.step(AppendResp("n3", "n1", 4, True, 3))
    assert n.committed == 3  # the current-term entry commits, and index 2 with it
    assert [e.index for e in drain(n).committed_entries] == [1, 2, 3]


def test_5_4_2_figure8_previous_term_entry_may_be_overwritten_until_committed() -> None:
    # Why the rule matters (Figure 8 (d)): index 2 of term 2 sits on n1, n2 (and n3), yet n5,
    # whose last entry has term 3, can still be elected and overwrite it. Had the term-4 leader
    # counted replicas of index 2 as a commit, a committed entry would now be lost.
    n2 = make_node("n2", IDS5, term=4, log_terms=[1, 2])
    n2.step(RequestVote("n5", "n2", 5, 2, 3))
    assert of_type(drain(n2).persisted_messages, RequestVoteResp)[0].granted
    s5 = make_leader("n5", IDS5, term=4, log_terms=[1, 3], grants=["n2", "n4"], settle=False)
    assert s5.term == 5
    for _ in range(4):
        for m in drain_msgs(s5):
            if m.dst == "n2":
                n2.step(m)
        for m in drain_msgs(n2):
            s5.step(m)
    assert log_terms(n2) == [1, 3, 5]


# ---------------------------------------------------------------------------- stale replies


def test_late_rejection_never_moves_next_below_match_plus_one() -> None:
    n = replicating_leader(IDS3)
    for i in range(4):
        n.propose(f"{i}".encode())
    drain(n)
    last = n.log.last_index()
    n.step(AppendResp("n2", "n1", n.term, True, last))
    pr = n.progress["n2"]
    assert pr.match == last
    n.step(AppendResp("n2", "n1", n.term, False, 1, 0, 0))  # a rejection from long ago
    assert pr.match == last and pr.next == last + 1
    assert n.counters.get("stale_reject") == 1
    # Nothing below match is resent (only the new commit index goes out).
    assert all(a.prev_index >= last for a in of_type(drain_msgs(n), AppendEntries))


def test_duplicated_rejection_hinting_below_match_keeps_next_above_match() -> None:
    # n2 rejected a probe at prev=6 hinting index 2; the leader then got an ack for index 3
    # (one entry per message). Now the network delivers that rejection again: it concerns an
    # index above match, so the leader probes again, but never from below match + 1.
    n = make_leader("n1", term=2, log_terms=[1, 1, 2, 2, 2, 2], max_msg_bytes=1)
    pr = n.progress["n2"]
    rej = AppendResp("n2", "n1", n.term, False, 6, 2, 1)
    n.step(rej)
    assert pr.next == 3
    (probe,) = [a for a in of_type(drain_msgs(n), AppendEntries) if a.dst == "n2"]
    assert (probe.prev_index, [e.index for e in probe.entries]) == (2, [3])
    n.step(AppendResp("n2", "n1", n.term, True, 3))
    assert pr.state == ProgressState.REPLICATE and pr.match == 3
    drain(n)
    n.step(rej)
    assert pr.match == 3 and pr.next == 4
    sent = [a for a in of_type(drain_msgs(n), AppendEntries) if a.dst == "n2"]
    assert [a.prev_index for a in sent] == [3]


def test_match_never_decreases_on_reordered_acks() -> None:
    n = replicating_leader(IDS3)
    for i in range(4):
        n.propose(f"{i}".encode())
    drain(n)
    last = n.log.last_index()
    for idx in [last, 2, last - 1, 1]:
        n.step(AppendResp("n2", "n1", n.term, True, idx))
        assert n.progress["n2"].match == last
        assert n.progress["n2"].next >= last + 1


def test_responses_from_an_older_term_are_ignored() -> None:
    n = replicating_leader(IDS3, term=4)
    idx = n.propose(b"x")
    drain(n)
    before = (n.progress["n2"].match, n.progress["n2"].next)
    n.step(AppendResp("n2", "n1", n.term - 1, True, idx))
    n.step(AppendResp("n3", "n1", n.term - 1, True, idx))
    n.step(AppendResp("n2", "n1", n.term - 1, False, idx - 1, 0, 0))
    assert (n.progress["n2"].match, n.progress["n2"].next) == before
    assert n.committed < idx and n.role == Role.LEADER
    assert n.counters.get("drop_stale_term") == 3


def test_probe_rejection_for_an_append_we_no_longer_wait_for_is_ignored() -> None:
    ldr = make_leader("n1", term=4, log_terms=[1, 2, 3, 4])
    pr = ldr.progress["n2"]
    assert pr.state == ProgressState.PROBE and pr.next == 5
    ldr.step(AppendResp("n2", "n1", ldr.term, False, 4, 2, 2))
    assert pr.next == 3  # jumped to the hint (index 2 has term 2 on the leader too)
    ldr.step(AppendResp("n2", "n1", ldr.term, False, 4, 2, 2))  # duplicate: stale now
    assert pr.next == 3
    assert ldr.counters.get("stale_reject") == 1


# ---------------------------------------------------------------------------- persist first


def test_figure2_votes_and_vote_requests_are_sent_only_after_persisting() -> None:
    c = make_node("n1", term=1, pre_vote=False)
    c.campaign()
    rd = c.ready()
    assert rd.hard_state is not None and rd.must_sync
    assert of_type(rd.messages, RequestVote) == []
    assert len(of_type(rd.persisted_messages, RequestVote)) == 2
    c.advance(rd)

    v = make_node("n2", term=1)
    v.step(RequestVote("n1", "n2", 2, 0, 0))
    rd = v.ready()
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (2, "n1")
    assert rd.must_sync
    assert rd.messages == [] and len(of_type(rd.persisted_messages, RequestVoteResp)) == 1

    # A rejection at an unchanged term is still a vote answer: after persistence.
    v.advance(rd)
    v.step(RequestVote("n3", "n2", 2, 0, 0))
    rd = v.ready()
    assert rd.messages == [] and [m.granted for m in rd.persisted_messages] == [False]


@pytest.mark.parametrize("ok", [True, False])
def test_figure2_append_answers_are_sent_only_after_persisting(ok: bool) -> None:
    f = make_node("n2", term=2, log_terms=[1])
    f.step(AppendEntries("n1", "n2", 2, 1 if ok else 5, 1, tuple(ents([2], 2 if ok else 6)), 0))
    rd = f.ready()
    assert rd.messages == []
    assert [type(m) for m in rd.persisted_messages] == [AppendResp]
    assert rd.must_sync is ok
    assert [e.index for e in rd.entries] == ([2] if ok else [])


def test_figure2_anything_sent_after_a_term_change_waits_for_persistence() -> None:
    f = make_node("n2", term=2)
    f.step(Heartbeat("n1", "n2", 5, 0))  # term bump: HeartbeatResp must wait for it on disk
    f.step(PreVote("n3", "n2", 3, 0, 0))  # stale pre-vote rejected at term 5
    rd = f.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 5 and rd.must_sync
    assert rd.messages == []
    assert {type(m) for m in rd.persisted_messages} == {HeartbeatResp, PreVoteResp}
    f.advance(rd)
    f.step(Heartbeat("n1", "n2", 5, 0))
    rd = f.ready()
    assert [type(m) for m in rd.messages] == [HeartbeatResp]  # unchanged term: may go at once
    assert rd.hard_state is None and not rd.must_sync


def test_10_2_1_leader_appends_and_heartbeats_go_out_immediately() -> None:
    n = replicating_leader(IDS3)
    n.propose(b"x")
    for _ in range(n.cfg.heartbeat_ticks):
        n.tick()
    rd = n.ready()
    assert {type(m) for m in rd.messages} == {AppendEntries, Heartbeat}
    assert rd.persisted_messages == []


@pytest.mark.parametrize(
    ("event", "hard_state", "must_sync"),
    [
        ("nothing", None, False),
        ("heartbeat same term", None, False),
        ("append entries", None, True),
        ("grant vote", (3, "n3"), True),
        ("higher term heartbeat", (4, ""), True),
        ("grant pre-vote", None, False),
        ("campaign with pre-vote", None, False),
    ],
)
def test_ready_hard_state_and_must_sync(
    event: str, hard_state: tuple[int, str] | None, must_sync: bool
) -> None:
    f = make_node("n2", term=2, log_terms=[1])
    if event == "heartbeat same term":
        f.step(Heartbeat("n1", "n2", 2, 0))
    elif event == "append entries":
        f.step(AppendEntries("n1", "n2", 2, 1, 1, tuple(ents([2], 2)), 0))
    elif event == "grant vote":
        f.step(RequestVote("n3", "n2", 3, 1, 1))
    elif event == "higher term heartbeat":
        f.step(Heartbeat("n1", "n2", 4, 0))
    elif event == "grant pre-vote":
        f.step(PreVote("n3", "n2", 3, 1, 1))
        assert of_type(f.ready().messages, PreVoteResp)[0].granted
        return
    elif event == "campaign with pre-vote":
        f.campaign()
    rd = f.ready()
    got = None if rd.hard_state is None else (rd.hard_state.term, rd.hard_state.vote)
    assert got == hard_state
    assert rd.must_sync is must_sync


def test_hard_state_is_handed_once_per_change() -> None:
    f = make_node("n2", term=2)
    f.step(RequestVote("n3", "n2", 3, 0, 0))
    assert f.ready().hard_state is not None
    assert f.ready().hard_state is None


# ---------------------------------------------------------------------------- proposals


def test_proposal_on_follower_raises_not_leader_with_hint() -> None:
    f = make_node("n2", term=2)
    with pytest.raises(NotLeader) as e:
        f.propose(b"x")
    assert e.value.leader == ""
    f.step(Heartbeat("n1", "n2", 2, 0))
    with pytest.raises(NotLeader) as e:
        f.propose(b"x")
    assert e.value.leader == "n1"
    assert f.log.last_index() == 0


def test_proposals_between_two_readies_are_batched_within_max_msg_bytes() -> None:
    max_bytes = 2000
    n = replicating_leader(IDS3, max_msg_bytes=max_bytes)
    first = n.propose_batch([(b"a" * 100, "", 0)] * 40)
    for _ in range(60):
        n.propose(b"b" * 100)
    rd = drain(n)
    size = Entry(0, 0, b"a" * 100).size_bytes()
    to_n2 = [a for a in of_type(rd.messages, AppendEntries) if a.dst == "n2"]
    assert all(sum(e.size_bytes() for e in a.entries) <= max_bytes for a in to_n2)
    # Few messages: as many entries per message as fit.
    assert len(to_n2) == math.ceil(100 / (max_bytes // size))
    sent = [e.index for a in to_n2 for e in a.entries]
    assert sent == list(range(first, first + 100))
    prevs = [a.prev_index for a in to_n2]
    assert prevs[0] == first - 1
    assert all(prevs[i + 1] == prevs[i] + len(to_n2[i].entries) for i in range(len(prevs) - 1))


def test_an_entry_larger_than_max_msg_bytes_still_travels_alone() -> None:
    n = replicating_leader(IDS3, max_msg_bytes=100)
    n.propose(b"z" * 500)
    n.propose(b"z" * 500)
    to_n2 = [a for a in of_type(drain_msgs(n), AppendEntries) if a.dst == "n2"]
    assert [len(a.entries) for a in to_n2] == [1, 1]


def test_max_uncommitted_entries_bounds_proposals() -> None:
    n = replicating_leader(IDS3, max_uncommitted_entries=5)
    for i in range(5):
        n.propose(f"{i}".encode())
    last = n.log.last_index()
    with pytest.raises(ProposalDropped):
        n.propose(b"over")
    with pytest.raises(ProposalDropped):
        n.propose_batch([(b"a", "", 0)])
    assert n.log.last_index() == last
    assert n.counters.get("proposal_dropped_uncommitted") == 2
    drain(n)
    n.step(AppendResp("n2", "n1", n.term, True, last))
    assert n.committed == last
    n.propose_batch([(b"a", "", 0)] * 5)  # room again once committed
    with pytest.raises(ProposalDropped):
        n.propose_batch([(b"a", "", 0)] * 6)


def test_inflight_window_pauses_sending_until_acks_arrive() -> None:
    n = replicating_leader(IDS3, max_inflight_msgs=2, max_msg_bytes=1)
    first = n.propose(b"1")
    for i in range(2, 8):
        n.propose(f"{i}".encode())
    to_n2 = [a for a in of_type(drain_msgs(n), AppendEntries) if a.dst == "n2"]
    assert [[e.index for e in a.entries] for a in to_n2] == [[first], [first + 1]]
    n.step(AppendResp("n2", "n1", n.term, True, first))
    to_n2 = [a for a in of_type(drain_msgs(n), AppendEntries) if a.dst == "n2"]
    assert [[e.index for e in a.entries] for a in to_n2] == [[first + 2]]
    n.step(AppendResp("n2", "n1", n.term, True, first + 2))  # cumulative ack frees both
    to_n2 = [a for a in of_type(drain_msgs(n), AppendEntries) if a.dst == "n2"]
    assert [[e.index for e in a.entries] for a in to_n2] == [[first + 3], [first + 4]]


def test_probe_state_sends_one_append_at_a_time() -> None:
    n = make_leader("n1", IDS3)  # peers are probed; first probe already went out
    n.propose(b"a")
    n.propose(b"b")
    assert of_type(drain_msgs(n), AppendEntries) == []
    n.step(HeartbeatResp("n2", "n1", n.term))  # the peer is alive: probe again
    (a,) = of_type(drain_msgs(n), AppendEntries)
    assert a.dst == "n2" and a.prev_index == 0 and len(a.entries) == 3


def test_lost_appends_are_resent_after_heartbeat_stall() -> None:
    net = Network.of(IDS3, seed=1)
    net.elect("n1")
    net.drop = lambda m: isinstance(m, AppendEntries) and m.dst == "n3"
    idx = net["n1"].propose(b"lost for n3")
    net.run()
    assert net["n3"].log.last_index() < idx
    net.drop = None
    net.tick(3 * net["n1"].cfg.heartbeat_ticks)
    assert net["n3"].log.last_index() == idx and net["n3"].committed == idx


def test_campaign_is_a_noop_on_a_leader() -> None:
    n = replicating_leader(IDS3)
    term = n.term
    n.campaign()
    assert n.role == Role.LEADER and n.term == term
    assert of_type(all_msgs(n.ready()), (PreVote, RequestVote)) == []


def test_a_truncation_pulls_back_what_counts_as_durable() -> None:
    """RAFT-NOTES §4.2 / §10.2.1: a leader counts itself only for entries on its disk. A
    follower whose durable suffix was cut by a new leader must not go on counting the cut
    indices as durable once it leads: its new entries there are not written yet."""
    n = make_node("n1", IDS3, term=2, log_terms=[1, 1, 1, 1, 1])
    assert n.log.stable == 5
    n.step(AppendEntries("n2", "n1", 2, 2, 1, tuple(ents([2], start=3)), 0))
    rd = drain(n)
    assert [e.index for e in rd.entries] == [3] and n.log.last_index() == 3
    assert n.log.stable == 3  # not 5: indices 4 and 5 hold nothing durable any more
    # n1 wins term 3 and appends its no-op and a proposal at 4 and 5, not yet written.
    for _ in range(3 * ELECTION):
        n.tick()
    assert n.role == Role.PRE_CANDIDATE
    n.step(PreVoteResp("n3", "n1", 3, True))
    drain(n)
    n.step(RequestVoteResp("n3", "n1", 3, True))
    assert n.role == Role.LEADER
    idx = n.propose(b"x")
    assert idx == 5
    rd = n.ready()
    # n3 acknowledges 5; the leader's own copy of 4..5 is still on its way to the disk, so
    # 5 sits on one disk of three: not committed.
    n.step(AppendResp("n3", "n1", 3, True, 5))
    assert n.committed < 4
    n.advance(rd)
    assert n.committed == 5
