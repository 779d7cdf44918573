"""ReadIndex bookkeeping on the leader (dissertation §6.4).

How this works: a read asks for the leader's commit index *now*; it may be served once the
leader has proved it was still leader at that moment (a quorum answered a heartbeat sent
after the read arrived) and the state machine has applied up to that index.

Reads that arrive between two Readies share one heartbeat round (``ctx``). Rounds are
numbered increasingly; an answer to round ``c`` proves leadership for every read whose round
is ``<= c`` (it was sent later than they arrived), so reads are released from the front of
the queue in order. Before the leader has committed an entry of its own term its commit
index may be stale (Raft §8), so such reads wait in ``waiting_commit``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingRead:
    request_id: int
    requester: str  # "" for a local read, else the follower that asked
    index: int = 0
    ctx: int = 0
    acks: set[str] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("ctx", "pending", "round_needed", "waiting_commit")

    def __init__(self) -> None:
        self.ctx = 0
        self.pending: deque[PendingRead] = deque()
        self.waiting_commit: list[PendingRead] = []
        self.round_needed = False

    def __len__(self) -> int:
        return len(self.pending) + len(self.waiting_commit)

    def add(self, read: PendingRead, commit_index: int, self_id: str) -> None:
        read.index = commit_index
        read.ctx = self.ctx + 1  # confirmed by the next round
        read.acks = {self_id}
        self.pending.append(read)
        self.round_needed = True

    def start_round(self) -> int:
        self.ctx += 1
        self.round_needed = False
        return self.ctx

    def ack(self, ctx: int, voter: str, quorum: int) -> list[PendingRead]:
        """Record a heartbeat answer for round ``ctx``; return the reads now confirmed."""
        for r in self.pending:
            if r.ctx > ctx:
                break
            r.acks.add(voter)
        out: list[PendingRead] = []
        while self.pending and len(self.pending[0].acks) >= quorum:
            out.append(self.pending.popleft())
        return out

    def drain(self) -> list[PendingRead]:
        out = list(self.pending) + self.waiting_commit
        self.pending.clear()
        self.waiting_commit = []
        self.round_needed = False
        return out
