"""Bytes <-> messages for udpraft: envelope, authentication, bodies, size safety nets.

Pure (no sockets, clocks, files). See envelope.py for the datagram layout and bodies.py
for the body layout and validation rules.
"""

from udpraft.wire.bodies import (
    RAFT_TYPES,
    entries_from_wire,
    entries_to_wire,
)
from udpraft.wire.codec import (
    Decoded,
    DecodeResult,
    Dropped,
    EncodedBody,
    decode,
    dump_header,
    encode,
    encode_body,
    message_type,
    seal,
)
from udpraft.wire.envelope import (
    DEFAULT_MAX_DATAGRAM,
    DEFAULT_MAX_MESSAGE,
    FLAG_ACK_REQUESTED,
    FLAG_INNER,
    HARD_MAX_DATAGRAM,
    DropReason,
    EncodeError,
    MessageTooLarge,
    MsgType,
    WireContext,
    new_incarnation,
)
from udpraft.wire.fields import MAX_ACK_RANGES, MAX_FRAGMENTS
from udpraft.wire.messages import (
    Ack,
    AppForward,
    AppForwardResp,
    ClientBatch,
    ClientKind,
    ClientRequest,
    ClientResponse,
    ClientResponses,
    Forward,
    Fragment,
    WireMessage,
)
from udpraft.wire.reassembly import Reassembler
from udpraft.wire.sizing import (
    append_entries_size_bound,
    fragment_chunk_size,
    split_append_entries,
    split_into_fragments,
)

__all__ = [
    "DEFAULT_MAX_DATAGRAM",
    "DEFAULT_MAX_MESSAGE",
    "FLAG_ACK_REQUESTED",
    "FLAG_INNER",
    "HARD_MAX_DATAGRAM",
    "MAX_ACK_RANGES",
    "MAX_FRAGMENTS",
    "RAFT_TYPES",
    "Ack",
    "AppForward",
    "AppForwardResp",
    "ClientBatch",
    "ClientKind",
    "ClientRequest",
    "ClientResponse",
    "ClientResponses",
    "DecodeResult",
    "Decoded",
    "DropReason",
    "Dropped",
    "EncodeError",
    "EncodedBody",
    "Forward",
    "Fragment",
    "MessageTooLarge",
    "MsgType",
    "Reassembler",
    "WireContext",
    "WireMessage",
    "append_entries_size_bound",
    "decode",
    "dump_header",
    "encode",
    "encode_body",
    "entries_from_wire",
    "entries_to_wire",
    "fragment_chunk_size",
    "message_type",
    "new_incarnation",
    "seal",
    "split_append_entries",
    "split_into_fragments",
]
