"""Elections: election timer, pre-vote (§9.6), votes (§5.2, §5.4.1), leadership transfer.

Part of RaftNode (see base.py). A follower or candidate whose randomized election timeout
passes campaigns — first a pre-vote round that changes nobody's term, then the real vote.
Votes are counted as a set of voter ids; a quorum of rejections ends the candidacy.
"""

from __future__ import annotations

from collections.abc import Callable

from udpraft.core.base import NodeBase
from udpraft.core.messages import (
    PreVote,
    PreVoteResp,
    RequestVote,
    RequestVoteResp,
    TimeoutNow,
)
from udpraft.core.ready import Role


class Elections(NodeBase):
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            self._campaign(pre=self.cfg.pre_vote, transfer=False)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if self.id not in self.voters:
            return
        if pre:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        if len(self.votes) >= self.quorum:  # single-voter cluster
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return
        li, lt = self.log.last_index(), self.log.last_term()
        for p in self.voters:
            if p == self.id:
                continue
            if pre:
                self._send(PreVote(self.id, p, term, li, lt))
            else:
                self._send(RequestVote(self.id, p, term, li, lt, transfer))

    def _on_pre_vote(self, m: PreVote) -> None:
        # Raft §9.6: grant when the pre-candidate's term would be newer and its log is at
        # least as up to date (§5.4.1). Nothing is recorded; the timer is not reset.
        granted = m.term > self.term and self.log.is_up_to_date(m.last_index, m.last_term)
        self._send(PreVoteResp(self.id, m.src, m.term if granted else self.term, granted))

    def _on_request_vote(self, m: RequestVote) -> None:
        # Raft §5.2: one vote per term (a repeated request from the same candidate is
        # granted again); §5.4.1: only to a candidate whose log is at least as up to date.
        can_vote = self.vote == m.src or (self.vote == "" and self.leader == "")
        granted = can_vote and self.log.is_up_to_date(m.last_index, m.last_term)
        if granted:
            self.vote = m.src
            self._reset_election_timer()
        self._send(RequestVoteResp(self.id, m.src, self.term, granted))

    def _on_pre_vote_resp(self, m: PreVoteResp) -> None:
        if self.role != Role.PRE_CANDIDATE:
            return
        if m.granted and m.term != self.term + 1:
            self._count("drop_stale_vote")
            return
        self._tally(m.src, m.granted, on_win=lambda: self._campaign(pre=False, transfer=False))

    def _on_vote_resp(self, m: RequestVoteResp) -> None:
        if self.role != Role.CANDIDATE:
            return
        self._tally(m.src, m.granted, on_win=self._become_leader)

    def _tally(self, voter: str, granted: bool, on_win: Callable[[], None]) -> None:
        if voter not in self.voters:
            self._count("drop_vote_not_voter")  # learners and strangers do not count
            return
        self.votes.setdefault(voter, granted)  # a set of voters: duplicates count once
        yes = sum(1 for g in self.votes.values() if g)
        no = len(self.votes) - yes
        if yes >= self.quorum:
            on_win()
        elif no >= self.quorum:
            self._become_follower(self.term, "", reset_timer=False)

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role == Role.LEADER:
            return
        # Dissertation §3.10: skip pre-vote; voters ignore their lease for this election.
        self._campaign(pre=False, transfer=True)
