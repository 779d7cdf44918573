"""Linearizable reads (ReadIndex, dissertation §6.4): leader rounds and follower requests.

Part of RaftNode (see base.py; the round bookkeeping is in readonly.py). A read on the
leader waits for its no-op to commit (Raft §8), records the commit index, and is released
once a quorum answered a heartbeat round sent after it; a follower asks the leader and
gives up (ok=False) after an election timeout without an answer.
"""

from __future__ import annotations

from udpraft.core.base import NodeBase
from udpraft.core.messages import ReadIndexReq, ReadIndexResp
from udpraft.core.readonly import PendingRead
from udpraft.core.ready import ReadState, Role


class Reads(NodeBase):
    def _leader_read(self, r: PendingRead) -> None:
        if len(self.reads) >= self.cfg.max_pending_reads:
            self._count("read_dropped_full")
            self._release_read(r, False)
            return
        if self.id not in self.voters:
            self._release_read(r, False)  # being removed: cannot vouch for a quorum
            return
        if self.quorum == 1:
            r.index = self.log.committed
            if self.log.term(self.log.committed) == self.term:
                self._release_read(r, True)
            else:
                self.reads.waiting_commit.append(r)
            return
        if self.log.term(self.log.committed) != self.term:
            self.reads.waiting_commit.append(r)  # Raft §8: wait for our no-op to commit
            return
        self.reads.add(r, self.log.committed, self.id)

    def _release_read(self, r: PendingRead, ok: bool) -> None:
        if r.requester:
            self._send(ReadIndexResp(self.id, r.requester, self.term, r.request_id, r.index, ok))
        else:
            self._read_states.append(ReadState(r.request_id, r.index, ok))

    def _fail_reads(self) -> None:
        for r in self.reads.drain():
            self._release_read(r, False)

    def _fail_follower_reads(self) -> None:
        for rid in sorted(self._follower_reads):
            self._read_states.append(ReadState(rid, 0, False))
        self._follower_reads.clear()

    def _on_read_index_req(self, m: ReadIndexReq) -> None:
        if self.role != Role.LEADER:
            self._send(ReadIndexResp(self.id, m.src, self.term, m.req_id, 0, False))
            return
        self._leader_read(PendingRead(m.req_id, m.src))

    def _on_read_index_resp(self, m: ReadIndexResp) -> None:
        if self._follower_reads.pop(m.req_id, None) is None:
            self._count("drop_unknown_read")
            return
        self._read_states.append(ReadState(m.req_id, m.index, m.ok))

    def _expire_follower_reads(self) -> None:
        """Fail (ok=False) follower reads unanswered for an election timeout: over UDP the
        request or its answer may be lost while the leader stays the same, and nothing else
        would ever answer them (their ids piled up to the cap, then every read failed)."""
        reads = self._follower_reads
        deadline = self._ticks - self.cfg.election_ticks
        while reads:
            rid, asked = next(iter(reads.items()))  # oldest first: asked in insertion order
            if asked > deadline:
                return
            del reads[rid]
            self._read_states.append(ReadState(rid, 0, False))
            self._count("follower_read_timeout")
