"""Messages that exist only on the wire: transport (ACK, FRAGMENT) and client traffic.

Raft's own peer messages live in :mod:`udpraft.core.messages`; these sit beside them.
Client requests and responses keep a generic JSON ``body`` (the client library and the
key-value layer shape it) plus ``blobs``: opaque payloads carried as raw bytes after the
JSON header, never base64 (see bodies.py). A submit carries its payload(s) as blobs, a
retrieve response can carry entries with :func:`udpraft.wire.entries_to_wire`.

JSON values round-trip exactly through orjson with two caveats the caller owns: integers
must fit in 64 bits, and NaN/Infinity are written as ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from udpraft.core.messages import Message
from udpraft.wire.envelope import MsgType


class ClientKind(IntEnum):
    """What a client asks for. Each kind has a request and a response message type."""

    SUBMIT = 0  # append payload(s) to the log; body: {"seq": n, ...}, blobs: payloads
    RETRIEVE = 1  # committed entries from body["start"] on
    STATUS = 2  # role, term, leader, indices, counters
    READ = 3  # a key-value read (linearizable unless body says otherwise)


REQUEST_TYPES: dict[ClientKind, MsgType] = {
    ClientKind.SUBMIT: MsgType.CLIENT_SUBMIT,
    ClientKind.RETRIEVE: MsgType.CLIENT_RETRIEVE,
    ClientKind.STATUS: MsgType.CLIENT_STATUS,
    ClientKind.READ: MsgType.CLIENT_READ,
}
RESPONSE_TYPES: dict[ClientKind, MsgType] = {
    ClientKind.SUBMIT: MsgType.CLIENT_SUBMIT_RESP,
    ClientKind.RETRIEVE: MsgType.CLIENT_RETRIEVE_RESP,
    ClientKind.STATUS: MsgType.CLIENT_STATUS_RESP,
    ClientKind.READ: MsgType.CLIENT_READ_RESP,
}


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's request to any node (followers forward it to the leader)."""

    kind: ClientKind
    req_id: int  # chosen by the client; echoed in the response
    client_id: str
    body: dict[str, Any] = field(default_factory=dict)
    blobs: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientResponse:
    kind: ClientKind
    req_id: int
    ok: bool
    body: dict[str, Any] = field(default_factory=dict)
    leader_hint: str = ""  # node id of the leader as far as the responder knows ("" = none)
    blobs: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientBatch:
    """Requests of several client sessions that share one socket, in one datagram.

    Each request keeps its own client id, sequence numbers and request id, so the node
    handles it exactly as if it had come alone (exactly-once is per session, not per
    datagram). A node that received a batch from an address may answer several requests
    to that address in one :class:`ClientResponses`.
    """

    requests: tuple[ClientRequest, ...]


@dataclass(frozen=True, slots=True)
class ClientResponses:
    """Several answers to one client address (a socket that sent a :class:`ClientBatch`)."""

    responses: tuple[ClientResponse, ...]


@dataclass(frozen=True, slots=True)
class Forward:
    """A follower relays a client request to the leader, naming the client's address.

    The leader answers the client directly at ``client_host:client_port``.
    """

    client_host: str
    client_port: int
    request: ClientRequest


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledges message ids sent by the node whose incarnation is ``incarnation``.

    ``ranges`` are inclusive ``(lo, hi)`` pairs: one ACK covers many ids, and a run of
    consecutive ids costs one pair (cumulative and selective at once).
    """

    incarnation: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Fragment:
    """Piece ``index`` of ``count`` of a datagram too big to send whole.

    The pieces of one message share ``group_id``; joined in index order they are
    ``total_len`` bytes: a complete, separately authenticated datagram flagged FLAG_INNER.
    """

    group_id: int
    index: int
    count: int
    total_len: int
    chunk: bytes


class SnapshotStatus(IntEnum):
    """What a follower says about a snapshot transfer (SnapshotAck.status)."""

    PROGRESS = 0  # keep going from next_offset
    DONE = 1  # received, verified, handed to Raft
    STALE = 2  # this follower already has the log up to the snapshot index
    FAILED = 3  # the assembled file failed its checks: start over or give up


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Bytes ``offset .. offset + len(data)`` of the leader's snapshot file (Raft §7).

    ``index``/``snap_term`` name the snapshot, ``total`` the file size and ``checksum`` (hex
    BLAKE2b of the snapshot body) tells one transfer's bytes from another's. ``term`` is the
    leader's current term. Sent reliably; the receiver writes chunks at their offsets.
    """

    term: int
    index: int
    snap_term: int
    offset: int
    total: int
    checksum: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The follower has every byte before ``next_offset`` (and what ``status`` says)."""

    term: int
    index: int
    snap_term: int
    next_offset: int
    status: SnapshotStatus


@dataclass(frozen=True, slots=True)
class AppForward:
    """A follower hands application commands (its KV writes) to the leader to propose.

    Node to node only, sent reliably. The leader answers with :class:`AppForwardResp`
    carrying the same ``req_id``, one result per command, in order.
    """

    req_id: int
    cmds: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AppForwardResp:
    """Results of commands ``first``, ``first + 1``, ... of request ``req_id`` (a large
    answer comes in several parts): what the application's apply returned, or None when
    the command was not proposed (the node does not lead now): nothing happened, retry."""

    req_id: int
    first: int
    results: tuple[bytes | None, ...]


WireMessage = (
    Message | Ack | Fragment | ClientRequest | ClientResponse | Forward | SnapshotChunk | SnapshotAck
    | ClientBatch | ClientResponses | AppForward | AppForwardResp
)
