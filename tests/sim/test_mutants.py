"""The simulator must catch the classic Raft bugs (RAFT-NOTES §4).

Each test plants one known-wrong rule into the core (monkeypatch, undone after the test) and
asserts that a sweep of random seeds finds a violation. If the simulator or its invariants
went blind, these tests fail — so the green seed sweeps elsewhere mean something.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from udpraft.core import raft as raft_mod
from udpraft.core.log import RaftLog
from udpraft.core.messages import AppendEntries, AppendResp, RequestVote, RequestVoteResp
from udpraft.core.raft import RaftNode
from udpraft.core.readonly import PendingRead
from udpraft.core.types import Entry, HardState
from udpraft.sim.cluster import SimNode
from udpraft.sim.run import run_seed


def first_failure(seeds: range, nodes: int = 5) -> str | None:
    for s in seeds:
        r = run_seed(s, nodes=nodes, safety_ms=1500.0, liveness_ms=4000.0)
        if not r.ok:
            return f"seed {s}: {r.error}"
    return None


def _commit_any_term(self: RaftNode) -> None:
    matches = sorted(
        (self.progress[v].match if v != self.id else self.log.stable for v in self.voters),
        reverse=True,
    )
    q = matches[self.quorum - 1]
    if q > self.log.committed:  # BUG: Figure 8 — commits a previous-term entry by counting
        self.log.commit_to(q)
        self._need_bcast = True


def _truncate_always(self: RaftLog, prev_index: int, entries: list[Entry]) -> int | None:
    # BUG: cut everything after prev_index even when the entries already match.
    if not entries:
        return None
    if prev_index + 1 <= self.committed:
        return None
    del self._entries[prev_index + 1 - self.offset :]
    self.unstable_from = min(self.unstable_from, prev_index + 1)
    self.stable = min(self.stable, prev_index)
    self._entries.extend(entries)
    return prev_index + 1


def _commit_to_last_index(self: RaftNode, m: AppendEntries) -> None:
    if self.role == raft_mod.Role.LEADER:
        return
    self._become_follower(self.term, m.src, reset_timer=True)
    if self.log.term(m.prev_index) != m.prev_term:
        hi, ht = self.log.find_conflict_by_term(min(m.prev_index, self.log.last_index()), m.prev_term)
        self._send(AppendResp(self.id, m.src, self.term, False, m.prev_index, hi, ht))
        return
    try:
        self.log.maybe_append(m.prev_index, m.entries)
    except ValueError:
        return
    self.log.commit_to(m.commit)  # BUG: should be min(commit, last index this append covered)
    self._send(AppendResp(self.id, m.src, self.term, True, m.prev_index + len(m.entries)))


def _vote_twice(self: RaftNode, m: RequestVote) -> None:
    granted = self.log.is_up_to_date(m.last_index, m.last_term)  # BUG: ignores earlier vote
    if granted:
        self.vote = m.src
        self._reset_election_timer()
    self._send(RequestVoteResp(self.id, m.src, self.term, granted))


def _read_without_quorum(self: RaftNode, r: PendingRead) -> None:
    r.index = self.log.committed  # BUG: serves from local state without confirming leadership
    self._release_read(r, True)


def _forget_vote(self: SimNode, rd: object, n_entries: int | None = None) -> None:
    hs = getattr(rd, "hard_state", None)
    if hs is not None:
        rd.hard_state = HardState(hs.term, "", hs.commit)  # type: ignore[attr-defined]
        # BUG: the vote never reaches the disk
    _orig_persist(self, rd, n_entries)  # type: ignore[arg-type]


_orig_persist = SimNode.persist

MUTANTS: dict[str, tuple[object, str, Callable[..., object], range, int]] = {
    "figure8_commit_old_term": (RaftNode, "_maybe_commit", _commit_any_term, range(1, 400), 5),
    "truncate_on_stale_append": (RaftLog, "maybe_append", _truncate_always, range(1, 400), 5),
    "follower_commit_last_index": (
        RaftNode,
        "_on_append",
        _commit_to_last_index,
        range(1, 400),
        5,
    ),
    "vote_twice_in_a_term": (RaftNode, "_on_request_vote", _vote_twice, range(1, 400), 5),
    "stale_read_without_quorum": (RaftNode, "_leader_read", _read_without_quorum, range(1, 400), 5),
    "vote_not_persisted": (SimNode, "persist", _forget_vote, range(1, 600), 3),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_simulator_catches_planted_bug(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target, attr, fn, seeds, nodes = MUTANTS[name]
    monkeypatch.setattr(target, attr, fn)
    found = first_failure(seeds, nodes)
    assert found is not None, f"simulator did not catch planted bug {name!r} in {len(seeds)} seeds"
