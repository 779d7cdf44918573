"""Messages exchanged between Raft peers.

One frozen dataclass per message type. Every message names its sender (``src``), its
receiver (``dst``) and the sender's term. The wire layer turns these into bytes and back; the
core validates the fields it reads (a peer may be buggy or hostile) and counts what it drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udpraft.core.batch import EntryBatch
from udpraft.core.types import Entry


@dataclass(frozen=True, slots=True)
class PreVote:
    """Raft §9.6: "would you vote for me at term+1?" — changes no state on either side."""

    src: str
    dst: str
    term: int  # the term the candidate *would* use (its current term + 1)
    last_index: int
    last_term: int


@dataclass(frozen=True, slots=True)
class PreVoteResp:
    src: str
    dst: str
    term: int  # echoes the pre-vote term when granted; the voter's term when rejected
    granted: bool


@dataclass(frozen=True, slots=True)
class RequestVote:
    src: str
    dst: str
    term: int
    last_index: int
    last_term: int
    transfer: bool = False  # leadership transfer: bypasses the "leader is alive" lease


@dataclass(frozen=True, slots=True)
class RequestVoteResp:
    src: str
    dst: str
    term: int
    granted: bool


@dataclass(frozen=True, slots=True)
class AppendEntries:
    src: str
    dst: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    # The same entries in column form (core/batch.py; entry ``e`` is the batch's entry
    # ``e.index - batch.first``), when known: the follower's decoder gives the log the
    # columns it decoded; the leader's encoder takes the columns of the batch it appended
    # the entries with. Not part of the message's value.
    batch: EntryBatch | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AppendResp:
    """Reply to AppendEntries.

    On success ``index`` is the last index the append covered (prev_index + len(entries)).
    On rejection ``index`` is the rejected prev_index and ``hint_index``/``hint_term`` tell
    the leader where to retry (the conflict hint of etcd-io/raft / Raft §5.3 optimisation).
    """

    src: str
    dst: str
    term: int
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    src: str
    dst: str
    term: int
    commit: int  # min(follower's match, leader commit): never beyond what matches
    ctx: int = 0  # ReadIndex round this heartbeat confirms (0 = none)


@dataclass(frozen=True, slots=True)
class HeartbeatResp:
    src: str
    dst: str
    term: int
    ctx: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the receiver starts an election at once (dissertation §3.10)."""

    src: str
    dst: str
    term: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Raft §7: the leader's log no longer holds what this follower needs.

    The core names only the snapshot's last index and term; the runtime carries the
    snapshot's bytes out of band (chunked, checksummed) and steps this message into the
    receiver's core once the whole snapshot has arrived intact. The answer is an AppendResp.
    """

    src: str
    dst: str
    term: int
    index: int
    snap_term: int
    conf: str = ""  # the membership at ``index`` (membership.py encoding); "" = unchanged


@dataclass(frozen=True, slots=True)
class ReadIndexReq:
    """A follower asks the leader for a read index on behalf of a local read (§6.4)."""

    src: str
    dst: str
    term: int
    req_id: int


@dataclass(frozen=True, slots=True)
class ReadIndexResp:
    src: str
    dst: str
    term: int
    req_id: int
    index: int
    ok: bool


Message = (
    PreVote
    | PreVoteResp
    | RequestVote
    | RequestVoteResp
    | AppendEntries
    | AppendResp
    | Heartbeat
    | HeartbeatResp
    | TimeoutNow
    | InstallSnapshot
    | ReadIndexReq
    | ReadIndexResp
)

MESSAGE_TYPES: tuple[type, ...] = (
    PreVote,
    PreVoteResp,
    RequestVote,
    RequestVoteResp,
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    TimeoutNow,
    ReadIndexReq,
    ReadIndexResp,
    InstallSnapshot,
)


def coalesce_append_resps(msgs: list[Message]) -> list[Message]:
    """``msgs`` with each run of successful AppendResps from one node to one peer, in one
    term, cut to the one acknowledging the highest index.

    A follower answers every append it persisted, and one group commit often persists
    several: their answers are a run to the same leader. The leader gains nothing from the
    lower ones: an acknowledged index frees every append up to it and only ever raises
    ``match`` (Progress.update); the highest does all the lower ones would. The run ends at
    any other message to that peer (a rejection, a vote) or a new term, so what the peer
    sees keeps its order; messages to other peers are untouched. Pure.
    """
    out: list[Message] = []
    run_at: dict[tuple[str, str], int] = {}  # (from, to) -> position of its run's kept answer
    for m in msgs:
        link = (m.src, m.dst)
        if type(m) is AppendResp and m.success:
            i = run_at.get(link)
            if i is not None:
                kept = out[i]
                assert isinstance(kept, AppendResp)
                if kept.term == m.term:
                    if m.index > kept.index:
                        out[i] = m
                    continue
            run_at[link] = len(out)
        else:
            run_at.pop(link, None)
        out.append(m)
    return out
