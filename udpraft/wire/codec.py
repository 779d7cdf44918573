"""Bytes <-> messages: the encode/decode entry points.

``encode`` = ``seal(encode_body(msg))``: the body (bodies.py) does not depend on the
message id, so the reliability layer encodes it once and seals it (envelope header + tag,
envelope.py) when it assigns an id. ``decode`` runs the envelope checks in the order
documented in envelope.py (size, magic, version, cluster, tag, then everything else) and
hands the body to its decoder.

:func:`decode` never raises on bad input: it returns :class:`Decoded` or :class:`Dropped`
with a :class:`DropReason`. Its last-resort ``except Exception`` turns a bug in this
package into a drop whose detail starts with "internal error" (the fuzz tests assert that
never happens) rather than an exception in the node's receive loop.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from udpraft.wire.bodies import BY_CLASS, BY_CODE
from udpraft.wire.envelope import (
    BODY_LEN,
    FLAG_INNER,
    HEADER,
    HEADER_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    MAX_ID_BYTES,
    MAX_U63,
    MIN_DATAGRAM_SIZE,
    TAG_SIZE,
    VERSION,
    DropReason,
    EncodeError,
    MessageTooLarge,
    MsgType,
    WireContext,
    id_bytes,
)
from udpraft.wire.fields import BodyError
from udpraft.wire.messages import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    ClientRequest,
    ClientResponse,
    WireMessage,
)

_TYPES: dict[int, MsgType] = {int(t): t for t in MsgType}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A datagram that passed every check, with its envelope fields."""

    msg: WireMessage
    mtype: MsgType
    sender: str
    dst: str
    incarnation: int
    msg_id: int
    flags: int

    @property
    def ok(self) -> Literal[True]:
        return True


@dataclass(frozen=True, slots=True)
class Dropped:
    """A datagram refused by :func:`decode`; ``detail`` names the offending field."""

    reason: DropReason
    detail: str = ""

    @property
    def ok(self) -> Literal[False]:
        return False


DecodeResult = Decoded | Dropped


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A message's type, addressing and body bytes: everything but the envelope.

    The body does not depend on the message id, so the reliability layer encodes it once
    and seals it (header + tag) when it assigns the id.
    """

    mtype: MsgType
    src: str  # Raft messages name their sender; "" for everything else
    dst: str
    body: bytes


# ------------------------------------------------------------------------- encode


def encode_body(msg: WireMessage, dst: str = "") -> EncodedBody:
    """Encode ``msg``'s body. Raft messages are addressed by their own ``dst``; other
    messages go to ``dst`` ("" = whoever listens at the address they are sent to)."""
    cls = type(msg)
    if cls is ClientRequest:
        assert isinstance(msg, ClientRequest)
        codec = BY_CODE[REQUEST_TYPES[msg.kind].value]
    elif cls is ClientResponse:
        assert isinstance(msg, ClientResponse)
        codec = BY_CODE[RESPONSE_TYPES[msg.kind].value]
    else:
        found = BY_CLASS.get(cls)
        if found is None:
            raise EncodeError(f"no wire encoding for {cls.__name__}")
        codec = found
    src = ""
    if codec.raft:
        src = msg.src  # type: ignore[union-attr]
        dst = msg.dst  # type: ignore[union-attr]
        if not dst:
            raise EncodeError(f"{cls.__name__}: a Raft message needs a destination")
    header, blobs = codec.encode(msg)
    return EncodedBody(
        codec.mtype, src, dst, b"".join((BODY_LEN.pack(len(header)), header, *blobs))
    )


def seal(
    body: EncodedBody,
    ctx: WireContext,
    *,
    msg_id: int = 0,
    flags: int = 0,
    max_bytes: int | None = None,
) -> bytes:
    """Wrap an encoded body in the envelope and append the authentication tag."""
    if body.src and body.src != ctx.node_id:
        raise EncodeError(f"message from {body.src!r} sealed by node {ctx.node_id!r}")
    if not 0 <= msg_id < MAX_U63 or flags & ~KNOWN_FLAGS:
        raise EncodeError("msg_id must be 0 <= id < 2**63 and flags known")
    dst = id_bytes("dst", body.dst, allow_empty=True)
    sender = ctx.sender_bytes
    limit = ctx.max_datagram_bytes if max_bytes is None else max_bytes
    size = HEADER_SIZE + len(sender) + len(dst) + len(body.body) + TAG_SIZE
    if size > limit:
        raise MessageTooLarge(f"{body.mtype.name}: {size} bytes > {limit}")
    head = HEADER.pack(
        MAGIC, VERSION, body.mtype, flags, ctx.cluster, ctx.incarnation, msg_id,
        len(sender), len(dst),
    )  # fmt: skip
    signed = b"".join((head, sender, dst, body.body))
    return signed + ctx.tag(signed)


def encode(
    msg: WireMessage,
    ctx: WireContext,
    *,
    msg_id: int = 0,
    flags: int = 0,
    dst: str = "",
    max_bytes: int | None = None,
) -> bytes:
    """One datagram for ``msg``. Raises :class:`EncodeError` on misuse (a Raft message
    from another node, an id too long, a body that is not JSON-able) and
    :class:`MessageTooLarge` above ``max_bytes`` (default ``ctx.max_datagram_bytes``)."""
    return seal(encode_body(msg, dst), ctx, msg_id=msg_id, flags=flags, max_bytes=max_bytes)


# ------------------------------------------------------------------------- decode


def decode(
    data: bytes | bytearray | memoryview,
    ctx: WireContext,
    *,
    max_bytes: int | None = None,
    inner: bool = False,
) -> DecodeResult:
    """Parse and check one datagram. Never raises: bad input gives :class:`Dropped`.

    ``inner=True`` decodes a datagram reassembled from fragments (it must carry
    FLAG_INNER, and may be up to ``ctx.max_message_bytes``); a datagram off the network
    carrying FLAG_INNER is refused, so fragments cannot be replayed as a whole.
    """
    try:
        raw = data if type(data) is bytes else bytes(data)
        if max_bytes is None:
            max_bytes = ctx.max_message_bytes if inner else ctx.max_datagram_bytes
        return _decode(raw, ctx, max_bytes, inner)
    except BodyError as bad:
        return Dropped(bad.reason, bad.detail)
    except Exception as exc:  # a bug here must not take the node down; tests assert never
        return Dropped(DropReason.BAD_BODY, f"internal error: {type(exc).__name__}: {exc}")


def _decode(data: bytes, ctx: WireContext, max_bytes: int, inner: bool) -> DecodeResult:
    n = len(data)
    if n > max_bytes:
        return Dropped(DropReason.TOO_BIG, str(n))
    if n < MIN_DATAGRAM_SIZE:
        return Dropped(DropReason.TRUNCATED, str(n))
    magic, version, mtype, flags, cluster, incarnation, msg_id, slen, dlen = HEADER.unpack_from(
        data
    )
    if magic != MAGIC:
        return Dropped(DropReason.BAD_MAGIC)
    if version != VERSION:
        return Dropped(DropReason.BAD_VERSION, str(version))
    if cluster != ctx.cluster:
        return Dropped(DropReason.WRONG_CLUSTER)
    body_end = n - TAG_SIZE
    if not hmac.compare_digest(ctx.tag(memoryview(data)[:body_end]), data[body_end:]):
        return Dropped(DropReason.BAD_TAG)
    # From here on the bytes are authentic: what remains are checks against a buggy peer.
    codec = BY_CODE.get(mtype)
    if codec is None:
        return Dropped(DropReason.UNKNOWN_TYPE, str(mtype))
    if flags & ~KNOWN_FLAGS or bool(flags & FLAG_INNER) != inner:
        return Dropped(DropReason.BAD_FIELD, "flags")
    if not 0 < incarnation < MAX_U63 or msg_id >= MAX_U63:
        return Dropped(DropReason.BAD_FIELD, "incarnation/msg_id")
    if not 0 < slen <= MAX_ID_BYTES or dlen > MAX_ID_BYTES:
        return Dropped(DropReason.BAD_FIELD, "id length")
    pos = HEADER_SIZE + slen + dlen
    if pos + BODY_LEN.size > body_end:
        return Dropped(DropReason.TRUNCATED, "ids")
    try:
        sender = data[HEADER_SIZE : HEADER_SIZE + slen].decode("utf-8")
        dst = data[HEADER_SIZE + slen : pos].decode("utf-8")
    except UnicodeDecodeError:
        return Dropped(DropReason.BAD_FIELD, "id encoding")
    if dst and dst != ctx.node_id:
        return Dropped(DropReason.WRONG_DESTINATION, dst)
    if codec.raft and not dst:
        return Dropped(DropReason.BAD_FIELD, "dst")
    (hlen,) = BODY_LEN.unpack_from(data, pos)
    hstart = pos + BODY_LEN.size
    hend = hstart + hlen
    if hend > body_end:
        return Dropped(DropReason.TRUNCATED, "body header")
    try:
        header = orjson.loads(memoryview(data)[hstart:hend])
    except orjson.JSONDecodeError:
        return Dropped(DropReason.BAD_BODY, "json")
    msg = codec.decode(header, data[hend:body_end], sender, dst)
    return Decoded(msg, _TYPES[mtype], sender, dst, incarnation, msg_id, flags)


def message_type(msg: WireMessage) -> MsgType:
    """The wire type code ``msg`` is sent as."""
    if isinstance(msg, ClientRequest):
        return REQUEST_TYPES[msg.kind]
    if isinstance(msg, ClientResponse):
        return RESPONSE_TYPES[msg.kind]
    codec = BY_CLASS.get(type(msg))
    if codec is None:
        raise EncodeError(f"no wire encoding for {type(msg).__name__}")
    return codec.mtype


def dump_header(data: bytes) -> dict[str, Any] | None:
    """The unauthenticated header fields of a datagram, for log dumps and debugging."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, mtype, flags, cluster, incarnation, msg_id, slen, dlen = HEADER.unpack_from(
        data
    )
    return {
        "magic": magic, "version": version, "type": _TYPES.get(mtype, mtype), "flags": flags,
        "cluster": cluster.hex(), "incarnation": incarnation, "msg_id": msg_id,
        "sender_len": slen, "dst_len": dlen, "size": len(data),
    }  # fmt: skip
