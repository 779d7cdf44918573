"""The reliable endpoint's policy, bounds, per-peer state and counter names (endpoint.py).

Pure data: what is sent reliably by default, the bounds every queue and table obeys
(``ReliabilityConfig``), what the endpoint hands the application (``Delivery``), and the
state it keeps per peer: reliable messages awaiting their ACK (``PendingSend``), the id
counters and backlog (``PeerState``) and the ids to acknowledge (``AckBatch``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from udpraft.core.messages import MESSAGE_TYPES
from udpraft.reliability.rtt import RttEstimator
from udpraft.wire import DropReason, EncodedBody, WireMessage
from udpraft.wire.fields import MAX_ACK_RANGES

A = TypeVar("A", bound=Hashable)

_RAFT_CLASSES = frozenset(MESSAGE_TYPES)


def reliable_by_default(msg: WireMessage) -> bool:
    """The documented policy: Raft messages unreliable, client traffic reliable."""
    return type(msg) not in _RAFT_CLASSES


@dataclass(frozen=True, slots=True)
class ReliabilityConfig:
    rto_s_initial: float = 0.2
    rto_s_min: float = 0.02
    rto_s_max: float = 2.0
    max_retries: int = 6
    clock_granularity_s: float = 0.001
    window_msgs: int = 1024
    backlog_msgs: int = 1024
    reliable_bytes_max: int = 64 * 1024 * 1024
    send_queue_datagrams: int = 8192
    send_queue_bytes: int = 32 * 1024 * 1024
    dedupe_window: int = 1024
    max_senders: int = 4096
    max_peers: int = 4096
    retired_incarnations: int = 8
    ack_delay_s: float = 0.0
    ack_ranges_per_datagram: int = 256
    pending_acks_per_peer: int = 4096
    max_ack_batches: int = 4096
    reassembly_max_bytes: int = 64 * 1024 * 1024
    reassembly_max_messages: int = 64
    reassembly_timeout_s: float = 10.0
    max_batch_addrs: int = 4096
    responses_per_datagram: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.rto_s_min <= self.rto_s_max or self.rto_s_initial <= 0:
            raise ValueError("need 0 < rto_s_min <= rto_s_max and rto_s_initial > 0")
        if self.max_retries < 0 or self.ack_delay_s < 0:
            raise ValueError("max_retries and ack_delay_s must be >= 0")
        if not 1 <= self.window_msgs <= self.dedupe_window:
            raise ValueError("need 1 <= window_msgs <= dedupe_window (see module doc)")
        if not 1 <= self.ack_ranges_per_datagram <= MAX_ACK_RANGES:
            raise ValueError(f"ack_ranges_per_datagram must be 1..{MAX_ACK_RANGES}")
        if min(self.backlog_msgs, self.send_queue_datagrams, self.max_peers) < 1:
            raise ValueError("queue bounds must be positive")


@dataclass(frozen=True, slots=True)
class Delivery(Generic[A]):
    """A message handed to the application, once."""

    msg: WireMessage
    sender: str
    incarnation: int
    addr: A
    msg_id: int
    reliable: bool


class PendingSend:
    __slots__ = ("data", "deadline_s", "first_sent_s", "transmissions")

    def __init__(self, data: bytes, now: float, deadline_s: float) -> None:
        self.data = data
        self.first_sent_s = now
        self.deadline_s = deadline_s
        self.transmissions = 1


class PeerState:
    __slots__ = ("backlog", "next_rel", "rtt", "unacked")

    def __init__(self, first_id: int, rtt: RttEstimator) -> None:
        self.next_rel = first_id
        self.unacked: dict[int, PendingSend] = {}  # insertion order = id order
        self.backlog: deque[EncodedBody] = deque()
        self.rtt = rtt


class AckBatch:
    __slots__ = ("first_s", "ids")

    def __init__(self, now: float) -> None:
        self.first_s = now
        self.ids: list[int] = []


COUNTER_NAMES = (
    "sent_unreliable", "sent_reliable", "retransmits", "gave_up", "acked", "rtt_samples",
    "delivered", "duplicates", "replays", "no_msg_id", "nested",
    "send_queue_full", "backlog_full", "reliable_bytes_full", "peers_full", "peers_evicted",
    "peers_forgotten", "split_append_entries", "fragmented", "fragments_sent",
    "acks_sent", "ack_ids_sent", "ack_overflow", "ack_stale", "inner_dropped",
    "client_batches_in", "client_batched_requests", "client_responses_out",
    "client_responses_coalesced",
    *(f"drop_{reason.value}" for reason in DropReason),
)  # fmt: skip
