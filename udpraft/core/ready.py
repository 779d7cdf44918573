"""What the core hands to its runtime, and the runtime's configuration of the core.

How this works: the runtime feeds inputs (``step``, ``tick``, ``propose``, ``read_index``)
and then calls ``ready()``. The Ready says, in this order of obligations:

1. ``messages``: may be sent at once. They depend on nothing that is not yet durable
   (a leader's appends and heartbeats — Raft §10.2.1 lets the leader replicate in parallel
   with its own disk write — pre-votes and heartbeat answers in an unchanged term).
2. ``snapshot`` (rare: one received from the leader), ``hard_state`` and ``entries``: write
   them (truncating the stored log at ``entries[0].index`` first) and, when ``must_sync``,
   fsync.
3. ``persisted_messages``: send only after step 2 is durable (votes, append answers,
   anything sent after a term or vote change: Raft Figure 2, "persist before responding").
4. ``committed_entries``: apply in order. They are durable on a quorum already, so they may
   be applied as soon as the Ready is taken, before this node's own write completes (the
   runtime does; the simulator checks both orders) — as long as the state machine is
   rebuilt from the log after a crash.
5. ``advance(ready)``: tell the core steps 2-4 happened.

Readies must be advanced in the order they were produced; the runtime may take a new Ready
before advancing the previous one (to keep the network moving during an fsync) as long as it
persists them in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from udpraft.core.batch import EntryBatch
from udpraft.core.messages import Message
from udpraft.core.types import Entry, HardState, SnapshotMeta


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class ReadState:
    """Outcome of a ReadIndex request: serve the read once applied >= ``index``."""

    request_id: int
    index: int
    ok: bool  # False: leadership was lost or could not be confirmed; retry elsewhere


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    # A snapshot received from the leader to install: restore the state machine from it and
    # make it durable (the stored log then starts after it) before persisted_messages go.
    snapshot: SnapshotMeta | None = None
    entries: list[Entry] = field(default_factory=list)
    # ``entries`` in column form, when the log has it (RaftLog.batch_pieces): for storage.
    entry_batches: list[tuple[EntryBatch, int, int]] | None = None
    must_sync: bool = False
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def empty(self) -> bool:
        return not (
            self.hard_state
            or self.snapshot
            or self.entries
            or self.messages
            or self.persisted_messages
            or self.committed_entries
            or self.read_states
        )


@dataclass(frozen=True, slots=True)
class Config:
    """Tunables, all in ticks, entries or bytes. Defaults suit a 10 ms tick."""

    election_ticks: int = 20  # minimum election timeout; actual is random in [e, 2e)
    heartbeat_ticks: int = 3
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_msgs: int = 256  # pipelined appends per follower before pausing
    max_msg_bytes: int = 48_000  # entry bytes per AppendEntries (fits one datagram)
    max_uncommitted_entries: int = 100_000  # proposals beyond this are refused (ProposalDropped)
    max_apply_entries: int = 10_000  # committed entries per Ready
    max_pending_reads: int = 10_000  # ReadIndex requests waiting for confirmation
    hot_entries: int | None = None  # log entries kept as objects behind applied (None: 16,384)

    def validate(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_inflight_msgs < 1 or self.max_msg_bytes < 1:
            raise ValueError("max_inflight_msgs and max_msg_bytes must be positive")
