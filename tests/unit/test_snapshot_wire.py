"""SNAPSHOT_CHUNK / SNAPSHOT_ACK on the wire: round trips, strict decoding, reliable delivery."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.wire import Decoded, Dropped, DropReason, MsgType, WireContext, decode, encode
from udpraft.wire.envelope import HEADER, MAGIC, VERSION
from udpraft.wire.messages import SnapshotAck, SnapshotChunk, SnapshotStatus

N1 = WireContext("c", b"k" * 16, "n1", 5)
N2 = WireContext("c", b"k" * 16, "n2", 6)
U63 = st.integers(0, 2**63 - 1)


@st.composite
def chunks(draw: st.DrawFn) -> SnapshotChunk:
    data = draw(st.binary(max_size=200))
    offset = draw(st.integers(0, 2**40))
    total = draw(st.integers(offset + len(data), 2**63 - 1))
    return SnapshotChunk(draw(U63), draw(U63), draw(U63), offset, total,
                         draw(st.text("0123456789abcdef", max_size=32)), data)


ACKS = st.builds(SnapshotAck, U63, U63, U63, U63, st.sampled_from(SnapshotStatus))


@settings(max_examples=200, deadline=None)
@given(msg=chunks() | ACKS)
def test_round_trip(msg: SnapshotChunk | SnapshotAck) -> None:
    r = decode(encode(msg, N1, msg_id=9, dst="n2"), N2)
    assert isinstance(r, Decoded)
    assert r.msg == msg and r.sender == "n1"
    assert r.mtype in (MsgType.SNAPSHOT_CHUNK, MsgType.SNAPSHOT_ACK)


def test_a_full_chunk_fits_one_datagram() -> None:
    msg = SnapshotChunk(2**62, 2**62, 2**62, 2**62, 2**62 + 32 * 1024, "f" * 32, b"x" * 32 * 1024)
    assert len(encode(msg, N1, msg_id=1, dst="n2")) <= N1.max_datagram_bytes


def _forge(mtype: int, header: Any, blob: bytes = b"") -> bytes:
    h = orjson.dumps(header)
    body = struct.pack("!I", len(h)) + h + blob
    head = HEADER.pack(MAGIC, VERSION, mtype, 0, N1.cluster, 5, 1, 2, 2)
    signed = head + b"n1" + b"n2" + body
    return signed + N1.tag(signed)


@pytest.mark.parametrize(
    ("mtype", "header", "blob", "reason"),
    [
        (MsgType.SNAPSHOT_CHUNK, [1, 2, 1, 0, 3, "ab"], b"toolong", DropReason.BAD_FIELD),
        (MsgType.SNAPSHOT_CHUNK, [1, 2, 1, -1, 3, "ab"], b"", DropReason.BAD_FIELD),
        (MsgType.SNAPSHOT_CHUNK, [1, 2, 1, 0, 3, 5], b"", DropReason.BAD_FIELD),
        (MsgType.SNAPSHOT_CHUNK, [1, 2, 1, 0, 3, "a" * 65], b"", DropReason.BAD_FIELD),
        (MsgType.SNAPSHOT_CHUNK, [1, 2, 1, 0, 3], b"", DropReason.BAD_BODY),
        (MsgType.SNAPSHOT_ACK, [1, 2, 1, 0, 9], b"", DropReason.BAD_FIELD),
        (MsgType.SNAPSHOT_ACK, [1, 2, 1, 0, True], b"", DropReason.BAD_FIELD),
        (MsgType.SNAPSHOT_ACK, [1, 2, 1, 0, 1], b"x", DropReason.BAD_BODY),
        (MsgType.SNAPSHOT_ACK, [1, 2, 1.5, 0, 1], b"", DropReason.BAD_FIELD),
    ],
)
def test_malformed_bodies_are_dropped(
    mtype: MsgType, header: Any, blob: bytes, reason: DropReason
) -> None:
    r = decode(_forge(mtype, header, blob), N2)
    assert isinstance(r, Dropped) and r.reason == reason, r


def test_chunks_are_retransmitted_until_acknowledged() -> None:
    a: ReliableEndpoint[str] = ReliableEndpoint(N1)
    b: ReliableEndpoint[str] = ReliableEndpoint(N2)
    msg = SnapshotChunk(1, 5, 1, 0, 10, "ab", b"0123456789")
    assert a.send("b", msg, True, 0.0, dst="n2")
    first = a.datagrams_to_send(0.0)
    assert len(first) == 1  # ...and it is lost
    a.handle_timer(10.0)
    again = a.datagrams_to_send(10.0)
    assert again and again[0][0] == first[0][0], "the same bytes (same id) again"
    got = b.receive_datagram(again[0][0], "a", 10.0)
    assert [d.msg for d in got] == [msg] and got[0].reliable
