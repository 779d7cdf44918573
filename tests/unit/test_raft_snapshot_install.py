"""Raft §7 / dissertation §5.4.1 on a follower: installing a snapshot from the leader.

RAFT-NOTES §4.6: ignore an InstallSnapshot older than what is already committed; if its
last index/term matches a log entry keep the suffix, else discard the log; commit and
applied never go backwards; after a restart the applied index is the snapshot's.
(The simulator's sweeps reach these paths only by chance: these pin them.)
"""

from __future__ import annotations

import random

from tests.helpers.raftkit import (
    IDS3,
    config,
    drain,
    drain_msgs,
    ents,
    log_terms,
    make_node,
    of_type,
)
from udpraft.core import HardState, RaftNode
from udpraft.core.messages import AppendEntries, AppendResp, InstallSnapshot
from udpraft.core.types import SnapshotMeta


def follower(log_terms_: list[int], commit: int, term: int = 2) -> RaftNode:
    """n2, following n1 in ``term``, with the given log and commit index (all durable)."""
    n = make_node("n2", IDS3, term=term, log_terms=log_terms_)
    last = n.log.last_index()
    n.step(AppendEntries("n1", "n2", term, last, n.log.last_term(), (), commit))
    rd = drain(n)
    assert n.committed == commit and n.log.applied == commit, rd
    return n


def test_7_snapshot_at_or_below_commit_is_ignored_and_answered_with_commit() -> None:
    n = follower([1, 1, 2, 2, 2], commit=4)
    before = (n.log.offset, log_terms(n), n.committed, n.log.applied)
    for index, snap_term in ((2, 1), (4, 2), (1, 1)):
        n.step(InstallSnapshot("n1", "n2", 2, index, snap_term))
        rd = n.ready()
        assert rd.snapshot is None
        assert (n.log.offset, log_terms(n), n.committed, n.log.applied) == before
        (resp,) = of_type(rd.persisted_messages, AppendResp)
        assert resp.success and resp.index == 4  # "I am at my commit index": no rollback
        n.advance(rd)
    assert n.counters["snapshot_stale"] == 3


def test_7_snapshot_below_a_compacted_log_is_ignored() -> None:
    n = follower([1, 1, 2, 2, 2, 2], commit=5)
    n.compact(SnapshotMeta(4, 2))
    assert n.log.offset == 4
    n.step(InstallSnapshot("n1", "n2", 2, 2, 1))  # older than our own snapshot
    drain(n)
    assert (n.log.offset, n.log.last_index(), n.committed) == (4, 6, 5)
    assert n.snapshot == SnapshotMeta(4, 2)


def test_7_snapshot_matching_a_log_entry_keeps_the_suffix() -> None:
    # Entries 4..6 may already be acknowledged to the leader: dropping them would let the
    # leader count a copy this follower no longer has.
    n = follower([1, 1, 1, 2, 2, 2], commit=1)
    n.step(InstallSnapshot("n1", "n2", 2, 3, 1))
    rd = n.ready()
    assert rd.snapshot == SnapshotMeta(3, 1)
    assert (n.log.offset, n.log.last_index(), log_terms(n)) == (3, 6, [2, 2, 2])
    assert (n.committed, n.log.applied) == (3, 3)
    assert rd.committed_entries == []  # the snapshot holds 2..3: nothing to apply from the log
    (resp,) = of_type(rd.persisted_messages, AppendResp)
    assert resp.success and resp.index == 3
    n.advance(rd)
    assert n.counters["snapshot_kept_suffix"] == 1


def test_7_snapshot_not_matching_the_log_discards_it() -> None:
    n = follower([1, 1, 1, 1, 1], commit=1)
    n.step(InstallSnapshot("n1", "n2", 2, 3, 2))  # index 3 holds term 1 here: a conflict
    rd = n.ready()
    assert rd.snapshot == SnapshotMeta(3, 2)
    assert (n.log.offset, n.log.last_index(), n.log.last_term()) == (3, 3, 2)
    assert (n.committed, n.log.applied) == (3, 3)
    n.advance(rd)
    assert n.counters["snapshot_replaced_log"] == 1


def test_7_snapshot_ahead_of_the_log_replaces_it_and_commit_never_goes_back() -> None:
    n = follower([1, 1, 2], commit=2)
    n.step(InstallSnapshot("n1", "n2", 2, 10, 2))
    drain(n)
    assert (n.log.offset, n.log.last_index(), n.committed, n.log.applied) == (10, 10, 10, 10)
    # A duplicate of the same snapshot, and an older one, change nothing.
    # Each is answered with where the log is (one Ready at a time: the answers of one
    # Ready would be cut to one, coalesce_append_resps).
    n.step(InstallSnapshot("n1", "n2", 2, 10, 2))
    assert [m.index for m in of_type(drain_msgs(n), AppendResp)] == [10]
    n.step(InstallSnapshot("n1", "n2", 2, 7, 2))
    assert [m.index for m in of_type(drain_msgs(n), AppendResp)] == [10]
    assert (n.log.offset, n.committed, n.log.applied) == (10, 10, 10)


def test_7_restart_from_a_snapshot_starts_applied_at_its_index() -> None:
    n = RaftNode(
        "n2", list(IDS3), random.Random(1), config(), HardState(3, ""), ents([3, 3], start=6),
        SnapshotMeta(5, 2),
    )
    assert (n.log.offset, n.committed, n.log.applied, n.log.last_index()) == (5, 5, 5, 7)
    rd = n.ready()
    assert rd.committed_entries == [] and rd.snapshot is None
