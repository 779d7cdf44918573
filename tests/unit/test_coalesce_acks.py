"""coalesce_append_resps (udpraft.core.messages): a follower's answers to the appends one
group commit persisted are cut to the highest per leader and term, and a leader that gets
the cut list ends in the same state as one that got them all."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.raftkit import drain, make_leader
from udpraft.core.messages import (
    AppendResp,
    Heartbeat,
    Message,
    RequestVoteResp,
    coalesce_append_resps,
)


def ok(src: str, index: int, term: int = 2, dst: str = "n1") -> AppendResp:
    return AppendResp(src, dst, term, True, index)


def no(src: str, index: int, term: int = 2, dst: str = "n1") -> AppendResp:
    return AppendResp(src, dst, term, False, index, hint_index=index - 1)


def test_a_run_of_answers_keeps_the_highest_in_the_place_of_the_first() -> None:
    msgs: list[Message] = [ok("n2", 5), ok("n2", 9), ok("n2", 7)]
    assert coalesce_append_resps(msgs) == [ok("n2", 9)]


def test_rejections_other_messages_and_new_terms_end_a_run() -> None:
    vote = RequestVoteResp("n2", "n1", 3, True)
    msgs: list[Message] = [
        ok("n2", 5), ok("n2", 6), no("n2", 8), ok("n2", 9), ok("n2", 10),
        ok("n2", 11, term=3), vote, ok("n2", 12, term=3),
    ]
    assert coalesce_append_resps(msgs) == [
        ok("n2", 6), no("n2", 8), ok("n2", 10), ok("n2", 11, term=3), vote, ok("n2", 12, term=3),
    ]


def test_answers_to_different_peers_are_separate_runs() -> None:
    hb = Heartbeat("n2", "n3", 2, 0)  # to another peer: does not end n1's run
    msgs: list[Message] = [ok("n2", 4), ok("n2", 4, dst="n9"), hb, ok("n2", 6), ok("n2", 5, dst="n9")]
    assert coalesce_append_resps(msgs) == [ok("n2", 6), ok("n2", 5, dst="n9"), hb]


def test_nothing_to_cut_leaves_the_list_as_it_was() -> None:
    msgs: list[Message] = [no("n2", 3), ok("n2", 4, dst="n3"), RequestVoteResp("n2", "n1", 2, False)]
    assert coalesce_append_resps(msgs) == msgs
    assert coalesce_append_resps([]) == []


def _progress(leader: Any) -> dict[str, Any]:
    """What the leader knows: per follower its match and state, and the commit index.

    Not ``next`` or the in-flight appends: a lower answer processed on its own can make the
    leader re-send entries the higher answer shows the follower holds (a stale success
    after a rejection moves a probed follower back to REPLICATE at the old match; found by
    this test), traffic the cut list saves, after which the window ends elsewhere."""
    for pr in leader.progress.values():
        assert pr.next >= pr.match + 1
    return {
        p: (pr.match, int(pr.state)) for p, pr in leader.progress.items()
    } | {"commit": leader.log.committed, "role": int(leader.role)}


answers = st.lists(
    st.tuples(st.sampled_from(["n2", "n3"]), st.booleans(), st.integers(0, 40),
              st.sampled_from([0, 0, 0, -1])),
    max_size=20,
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), answers)
def test_a_leader_given_the_cut_list_ends_as_one_given_every_answer(
    batches: list[int], raw: list[tuple[str, bool, int, int]]
) -> None:
    leader = make_leader("n1", max_msg_bytes=200, max_inflight_msgs=4)
    for p in ("n2", "n3"):  # both followers hold the no-op: pipelining (REPLICATE) from here
        leader.step(ok(p, leader.log.last_index(), term=leader.term))
    drain(leader)
    for k, n in enumerate(batches):
        leader.propose_datas([f"b{k}-{i}".encode() for i in range(n)])
        drain(leader)  # the appends go out; the leader's own disk is instant
    last = leader.log.last_index()
    msgs: list[Message] = [
        AppendResp(src, "n1", leader.term + dterm, success, min(idx, last),
                   hint_index=max(0, min(idx, last) - 1))
        for src, success, idx, dterm in raw
    ]
    everything, cut = leader, copy.deepcopy(leader)
    for m in msgs:
        everything.step(m)
    for m in coalesce_append_resps(msgs):
        cut.step(m)
    drain(everything)
    drain(cut)
    assert _progress(cut) == _progress(everything)
