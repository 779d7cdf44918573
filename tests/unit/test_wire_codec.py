"""Wire codec: round trips, and hostile input never raises or slips through.

Property tests (hypothesis) cover every message type: random field values round-trip,
random bytes never raise, every truncation and every single bit flip of a valid datagram
is rejected, a wrong key is rejected, and an authentic datagram with a garbage body is
dropped (never an internal error) or decodes to a message that re-encodes cleanly.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udpraft.core import messages as cm
from udpraft.core.batch import EntryBatch
from udpraft.core.types import Entry, EntryKind
from udpraft.wire import (
    FLAG_ACK_REQUESTED,
    FLAG_INNER,
    HARD_MAX_DATAGRAM,
    RAFT_TYPES,
    Ack,
    AppForward,
    AppForwardResp,
    ClientKind,
    ClientRequest,
    ClientResponse,
    Decoded,
    Dropped,
    DropReason,
    EncodeError,
    Forward,
    Fragment,
    MessageTooLarge,
    MsgType,
    WireContext,
    WireMessage,
    decode,
    dump_header,
    encode,
    encode_body,
    entries_from_wire,
    entries_to_wire,
    message_type,
)
from udpraft.wire.envelope import HEADER, HEADER_SIZE, MAGIC, MIN_DATAGRAM_SIZE, VERSION

SECRET = b"correct horse battery staple"
N1 = WireContext("cluster-a", SECRET, "n1", incarnation=1111)
N2 = WireContext("cluster-a", SECRET, "n2", incarnation=2222)
U63 = st.integers(0, 2**63 - 1)
SMALL = st.integers(0, 2**20)
IDS = st.text(st.characters(codec="utf-8"), max_size=16)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- strategies

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
BODIES = st.dictionaries(st.text(max_size=8), JSON, max_size=5)
BLOBS = st.lists(st.binary(max_size=40), max_size=4).map(tuple)


def _field_strategy(ann: str) -> st.SearchStrategy[Any]:
    return {"int": U63, "bool": st.booleans(), "str": IDS}[ann]


def _raft_strategy(cls: type) -> st.SearchStrategy[Any]:
    kwargs = {
        f.name: _field_strategy(f.type if isinstance(f.type, str) else f.type.__name__)
        for f in dataclasses.fields(cls)[2:]
    }
    return st.builds(cls, src=st.just("n1"), dst=st.just("n2"), **kwargs)


@st.composite
def append_entries(draw: st.DrawFn, max_entries: int = 6) -> cm.AppendEntries:
    prev_index = draw(st.integers(0, 2**63 - 1 - max_entries))
    n = draw(st.integers(0, max_entries))
    entries = tuple(
        Entry(
            index=prev_index + 1 + i,
            term=draw(U63),
            data=draw(st.binary(max_size=64)),
            kind=draw(st.sampled_from(EntryKind)),
            client_id=draw(st.text(max_size=12)),
            seq=draw(U63),
            ts_ms=draw(U63),
        )
        for i in range(n)
    )
    return cm.AppendEntries("n1", "n2", draw(U63), prev_index, draw(U63), entries, draw(U63))


REQUESTS = st.builds(
    ClientRequest,
    kind=st.sampled_from(ClientKind),
    req_id=U63,
    client_id=st.text(max_size=30),
    body=BODIES,
    blobs=BLOBS,
)
RESPONSES = st.builds(
    ClientResponse,
    kind=st.sampled_from(ClientKind),
    req_id=U63,
    ok=st.booleans(),
    body=BODIES,
    leader_hint=IDS,
    blobs=BLOBS,
)
FORWARDS = st.builds(
    Forward, client_host=st.text(max_size=40), client_port=st.integers(0, 65535), request=REQUESTS
)
APP_FORWARDS = st.builds(AppForward, req_id=U63, cmds=BLOBS)
APP_FORWARD_RESPS = st.builds(
    AppForwardResp, req_id=U63, first=st.integers(0, 2**20),
    results=st.lists(st.none() | st.binary(max_size=40), max_size=6).map(tuple),
)
ACKS = st.builds(
    Ack,
    incarnation=st.integers(1, 2**63 - 1),
    ranges=st.lists(
        st.tuples(st.integers(0, 2**63 - 1 - 2**20), SMALL).map(lambda t: (t[0], t[0] + t[1])),
        max_size=12,
    ).map(tuple),
)


@st.composite
def fragments(draw: st.DrawFn) -> Fragment:
    count = draw(st.integers(1, 8))
    chunk = draw(st.binary(min_size=1, max_size=64))
    total = draw(st.integers(max(count, len(chunk)), 2**31))
    return Fragment(draw(U63), draw(st.integers(0, count - 1)), count, total, chunk)


STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    cls.__name__: _raft_strategy(cls) for cls in RAFT_TYPES if cls is not cm.AppendEntries
}
STRATEGIES.update(
    AppendEntries=append_entries(),
    ClientRequest=REQUESTS,
    ClientResponse=RESPONSES,
    Forward=FORWARDS,
    AppForward=APP_FORWARDS,
    AppForwardResp=APP_FORWARD_RESPS,
    Ack=ACKS,
    Fragment=fragments(),
)
ANY_MESSAGE = st.one_of(*STRATEGIES.values())
EVERY_TYPE = pytest.mark.parametrize("name", sorted(STRATEGIES))


def why(result: Decoded | Dropped) -> DropReason | None:
    """The drop reason, or None if the datagram was accepted."""
    return result.reason if isinstance(result, Dropped) else None


def _dst_for(msg: WireMessage, dst: str) -> str:
    return "n2" if type(msg) in RAFT_TYPES else dst


# ----------------------------------------------------------------------------- coverage


def test_every_core_message_has_a_wire_type() -> None:
    assert set(cm.MESSAGE_TYPES) == set(RAFT_TYPES)
    codes = [t.value for t in MsgType]
    assert len(codes) == len(set(codes))
    assert all(0 < c < 256 for c in codes)


def test_message_type_of_every_class() -> None:
    assert message_type(ClientRequest(ClientKind.READ, 1, "c")) is MsgType.CLIENT_READ
    assert message_type(ClientResponse(ClientKind.SUBMIT, 1, True)) is MsgType.CLIENT_SUBMIT_RESP
    assert message_type(cm.TimeoutNow("n1", "n2", 3)) is MsgType.TIMEOUT_NOW
    with pytest.raises(EncodeError):
        message_type(object())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- round trip


@EVERY_TYPE
@SETTINGS
@given(data=st.data())
def test_round_trip_every_type(name: str, data: st.DataObject) -> None:
    msg = data.draw(STRATEGIES[name])
    msg_id = data.draw(U63)
    flags = data.draw(st.sampled_from([0, FLAG_ACK_REQUESTED]))
    dst = data.draw(st.sampled_from(["", "n2"]))
    wire = encode(msg, N1, msg_id=msg_id, flags=flags, dst=dst)
    assert len(wire) <= N1.max_datagram_bytes
    result = decode(wire, N2)
    assert isinstance(result, Decoded), result
    assert result.msg == msg
    assert type(result.msg) is type(msg)
    assert (result.sender, result.incarnation, result.msg_id, result.flags) == (
        "n1", 1111, msg_id, flags,
    )  # fmt: skip
    assert result.dst == _dst_for(msg, dst)
    assert result.mtype is message_type(msg)
    if isinstance(msg, cm.AppendEntries):
        assert isinstance(result.msg, cm.AppendEntries)
        for got, want in zip(result.msg.entries, msg.entries):
            assert type(got.data) is bytes and type(got.kind) is EntryKind
            assert got.size_bytes() == want.size_bytes()


def test_inner_round_trip_and_replay_as_whole_refused() -> None:
    msg = cm.Heartbeat("n1", "n2", 4, 3)
    inner = encode(msg, N1, msg_id=9, flags=FLAG_INNER)
    result = decode(inner, N2, inner=True)
    assert isinstance(result, Decoded) and result.msg == msg
    assert decode(inner, N2) == Dropped(DropReason.BAD_FIELD, "flags")
    plain = encode(msg, N1, msg_id=9)
    assert decode(plain, N2, inner=True) == Dropped(DropReason.BAD_FIELD, "flags")


# ----------------------------------------------------------------------------- hostile bytes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    result = decode(data, N2)
    assert isinstance(result, Dropped)
    assert "internal" not in result.detail


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 255), st.integers(0, 255))
def test_random_bytes_behind_a_valid_prefix_fail_the_tag(
    tail: bytes, mtype: int, flags: int
) -> None:
    head = HEADER.pack(MAGIC, VERSION, mtype, flags, N2.cluster, 1, 1, 2, 0)
    result = decode(head + tail, N2)
    assert isinstance(result, Dropped)
    expected = DropReason.TRUNCATED if len(head + tail) < MIN_DATAGRAM_SIZE else DropReason.BAD_TAG
    assert result.reason is expected


@EVERY_TYPE
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_truncation_is_rejected(name: str, data: st.DataObject) -> None:
    wire = encode(data.draw(STRATEGIES[name]), N1, msg_id=data.draw(U63))
    for cut in range(len(wire)):
        result = decode(wire[:cut], N2)
        assert isinstance(result, Dropped)
        want = DropReason.TRUNCATED if cut < MIN_DATAGRAM_SIZE else DropReason.BAD_TAG
        assert result.reason is want, (cut, result)


def _expected_flip_reason(byte: int) -> DropReason:
    if byte < 2:
        return DropReason.BAD_MAGIC
    if byte == 2:
        return DropReason.BAD_VERSION
    if 5 <= byte < 13:
        return DropReason.WRONG_CLUSTER
    return DropReason.BAD_TAG  # type, flags, ids, body and the tag itself are authenticated


@EVERY_TYPE
@SETTINGS
@given(data=st.data())
def test_single_bit_flip_is_rejected(name: str, data: st.DataObject) -> None:
    wire = encode(data.draw(STRATEGIES[name]), N1, msg_id=data.draw(U63))
    bit = data.draw(st.integers(0, 8 * len(wire) - 1))
    flipped = bytearray(wire)
    flipped[bit // 8] ^= 1 << (bit % 8)
    result = decode(bytes(flipped), N2)
    assert isinstance(result, Dropped)
    assert result.reason is _expected_flip_reason(bit // 8)


@EVERY_TYPE
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_every_bit_flip_of_one_datagram(name: str, data: st.DataObject) -> None:
    wire = encode(data.draw(STRATEGIES[name]), N1, msg_id=77)
    for bit in range(8 * len(wire)):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        result = decode(bytes(flipped), N2)
        assert isinstance(result, Dropped) and result.reason is _expected_flip_reason(bit // 8)


@SETTINGS
@given(ANY_MESSAGE, st.binary(min_size=1, max_size=70))
def test_wrong_key_is_bad_tag(msg: WireMessage, key: bytes) -> None:
    if key == SECRET:
        return
    forger = WireContext("cluster-a", key, "n1", incarnation=1111)
    result = decode(encode(msg, forger, msg_id=5), N2)
    assert result == Dropped(DropReason.BAD_TAG)


def _forge(mtype: int, body: bytes, *, dst: str = "", flags: int = 0, msg_id: int = 1) -> bytes:
    sender = N1.sender_bytes
    dst_b = dst.encode()
    head = HEADER.pack(
        MAGIC, VERSION, mtype, flags, N1.cluster, N1.incarnation, msg_id, len(sender), len(dst_b)
    )
    signed = head + sender + dst_b + body
    return signed + N1.tag(signed)


def _forge_json(mtype: int, header: Any, blob: bytes = b"", dst: str = "n2") -> bytes:
    h = orjson.dumps(header)
    return _forge(mtype, struct.pack("!I", len(h)) + h + blob, dst=dst)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([t.value for t in MsgType] + [0, 99, 255]), st.binary(max_size=200))
def test_authentic_garbage_body_never_raises(mtype: int, body: bytes) -> None:
    result = decode(_forge(mtype, body, dst="n2"), N2)
    if isinstance(result, Dropped):
        assert "internal" not in result.detail


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([t.value for t in MsgType]),
    st.lists(JSON, max_size=8) | JSON,
    st.binary(max_size=40),
)
def test_authentic_random_json_decodes_only_to_clean_messages(
    mtype: int, header: Any, blob: bytes
) -> None:
    result = decode(_forge_json(mtype, header, blob), N2)
    if isinstance(result, Dropped):
        assert "internal" not in result.detail
        return
    # Whatever got through is well-typed: it re-encodes and decodes to itself.
    again = decode(encode(result.msg, _ctx_for(result), msg_id=3), N2)
    assert isinstance(again, Decoded) and again.msg == result.msg


def _ctx_for(result: Decoded) -> WireContext:
    return WireContext("cluster-a", SECRET, result.sender, incarnation=5)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, list):
        for k, v in enumerate(value):
            out += _paths(v, (*prefix, k))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        return [_replace(v, rest, new) if k == head else v for k, v in enumerate(value)]
    return {k: _replace(v, rest, new) if k == head else v for k, v in value.items()}


@settings(max_examples=500, deadline=None)
@given(ANY_MESSAGE, st.data())
def test_mutated_valid_bodies_decode_only_to_clean_messages(
    msg: WireMessage, data: st.DataObject
) -> None:
    """One element of a valid JSON header swapped for any JSON value: dropped, or clean."""
    body = encode_body(msg, "n2")
    (hlen,) = struct.unpack_from("!I", body.body)
    header = orjson.loads(body.body[4 : 4 + hlen])
    path = data.draw(st.sampled_from(_paths(header)))
    mutated = _replace(header, path, data.draw(JSON))
    blob = body.body[4 + hlen :]
    if data.draw(st.booleans()):
        blob = data.draw(st.binary(max_size=80))
    result = decode(_forge_json(body.mtype, mutated, blob, dst="n2"), N2)
    if isinstance(result, Dropped):
        assert "internal" not in result.detail
        return
    again = decode(encode(result.msg, _ctx_for(result), msg_id=3), N2)
    assert isinstance(again, Decoded) and again.msg == result.msg


# ----------------------------------------------------------------------------- field checks

BAD_FIELDS = [
    (MsgType.HEARTBEAT, [-1, 0, 0], DropReason.BAD_FIELD),
    (MsgType.HEARTBEAT, [True, 0, 0], DropReason.BAD_FIELD),
    (MsgType.HEARTBEAT, [1.0, 0, 0], DropReason.BAD_FIELD),
    (MsgType.HEARTBEAT, [2**63, 0, 0], DropReason.BAD_FIELD),
    (MsgType.HEARTBEAT, [1, 2], DropReason.BAD_BODY),
    (MsgType.HEARTBEAT, {"term": 1}, DropReason.BAD_BODY),
    (MsgType.PRE_VOTE_RESP, [1, 1], DropReason.BAD_FIELD),
    (MsgType.REQUEST_VOTE, [1, 1, 1, "yes"], DropReason.BAD_FIELD),
    # AppendEntries: [term, prev, prev_term, commit, n, terms, kinds, cids, seqs, ts, lens]
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], ["c", 1], [1, 0, 1], [1, 1], [3, 1]],
     DropReason.BAD_FIELD),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [7, 1], ["c", 1], [1, 0, 1], [1, 1], [0, 1]],
     DropReason.BAD_FIELD),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [True, 1], ["c", 1], [1, 0, 1], [1, 1],
                              [0, 1]], DropReason.BAD_FIELD),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], [5, 1], [1, 0, 1], [1, 1], [0, 1]],
     DropReason.BAD_FIELD),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], ["c" * 129, 1], [1, 0, 1], [1, 1],
                              [0, 1]], DropReason.BAD_FIELD),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], ["c", 1], [1, 0, 1], [1, 1]],
     DropReason.BAD_BODY),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], ["c", 1], [1, 0, 1], [1, 1], [0]],
     DropReason.BAD_BODY),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], ["c", 1], [1, 0, 1], [1, 1], [-1, 1]],
     DropReason.BAD_FIELD),
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 2, [1, 1], [0, 2], ["c", 2], [1, 0, 2], [1, 2], [0, 2]],
     DropReason.BAD_FIELD),  # the term runs cover 1 of 2 entries
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], ["c", 1], [1, 2, 1], [1, 1], [0, 1]],
     DropReason.BAD_FIELD),  # seq step 2
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 1], [0, 1], ["c", 1], [1, 0, 2**63], [1, 1],
                              [0, 1]], DropReason.BAD_FIELD),  # a seq run past any count
    (MsgType.APPEND_ENTRIES, [1, 0, 0, 0, 1, [1, 0], [0, 1], ["c", 1], [1, 0, 1], [1, 1], [0, 1]],
     DropReason.BAD_FIELD),  # an empty run
    (MsgType.APPEND_ENTRIES, [1, 2**63 - 1, 0, 0, 1, [1, 1], [0, 1], ["", 1], [1, 0, 1], [1, 1],
                              [0, 1]], DropReason.BAD_FIELD),
    (MsgType.CLIENT_SUBMIT, [1, "c", [], []], DropReason.BAD_FIELD),
    (MsgType.CLIENT_SUBMIT, [1, "c", {}, [5]], DropReason.BAD_FIELD),
    (MsgType.CLIENT_SUBMIT, [1, "c", {}, 5], DropReason.BAD_BODY),
    (MsgType.CLIENT_SUBMIT_RESP, [1, 1, {}, "", []], DropReason.BAD_FIELD),
    (MsgType.FORWARD, ["h", 70000, 0, 1, "c", {}, []], DropReason.BAD_FIELD),
    (MsgType.FORWARD, ["h", 1, 9, 1, "c", {}, []], DropReason.BAD_FIELD),
    (MsgType.APP_FORWARD, [1, [2]], DropReason.BAD_FIELD),  # declares 2 bytes, has none
    (MsgType.APP_FORWARD, [1, [-1]], DropReason.BAD_FIELD),  # None is for results only
    (MsgType.APP_FORWARD, [-1, []], DropReason.BAD_FIELD),
    (MsgType.APP_FORWARD, [1], DropReason.BAD_BODY),
    (MsgType.APP_FORWARD_RESP, [1, 0, [-2]], DropReason.BAD_FIELD),
    (MsgType.APP_FORWARD_RESP, [1, 0, [True]], DropReason.BAD_FIELD),
    (MsgType.APP_FORWARD_RESP, [1, 0, [-1, 4]], DropReason.BAD_FIELD),  # 4 bytes missing
    (MsgType.APP_FORWARD_RESP, [1, 0, 5], DropReason.BAD_BODY),
    (MsgType.APP_FORWARD_RESP, ["x", 0, []], DropReason.BAD_FIELD),
    (MsgType.APP_FORWARD_RESP, [1, -1, []], DropReason.BAD_FIELD),
    (MsgType.APP_FORWARD_RESP, [1, []], DropReason.BAD_BODY),
    (MsgType.ACK, [1, [5, 4]], DropReason.BAD_FIELD),
    (MsgType.ACK, [0, [1, 1]], DropReason.BAD_FIELD),
    (MsgType.ACK, [1, [1]], DropReason.BAD_BODY),
    (MsgType.ACK, [1, [0, 1] * 1025], DropReason.BAD_BODY),
    (MsgType.FRAGMENT, [1, 2, 2, 10], DropReason.BAD_FIELD),
    (MsgType.FRAGMENT, [1, 0, 0, 10], DropReason.BAD_FIELD),
    (MsgType.FRAGMENT, [1, 0, 20, 10], DropReason.BAD_FIELD),
]


@pytest.mark.parametrize(("mtype", "header", "reason"), BAD_FIELDS)
def test_bad_fields_are_dropped(mtype: MsgType, header: Any, reason: DropReason) -> None:
    blob = b"xyz" if mtype is MsgType.FRAGMENT else b""
    if mtype is MsgType.APPEND_ENTRIES and header[-1] == [3, 1]:
        blob = b"ab"  # declared 3 bytes, carries 2
    result = decode(_forge_json(mtype, header, blob), N2)
    assert isinstance(result, Dropped) and result.reason is reason, result


def test_fragment_chunk_must_fit_total() -> None:
    result = decode(_forge_json(MsgType.FRAGMENT, [1, 0, 1, 2], b"abc"), N2)
    assert result == Dropped(DropReason.BAD_FIELD, "chunk")


def test_envelope_checks() -> None:
    wire = encode(cm.Heartbeat("n1", "n2", 1, 0), N1, msg_id=1)
    other_cluster = WireContext("cluster-b", SECRET, "n2", incarnation=3)
    assert why(decode(wire, other_cluster)) is DropReason.WRONG_CLUSTER
    n3 = WireContext("cluster-a", SECRET, "n3", incarnation=3)
    assert why(decode(wire, n3)) is DropReason.WRONG_DESTINATION
    assert why(decode(b"xx" + wire[2:], N2)) is DropReason.BAD_MAGIC
    assert why(decode(wire[:2] + b"\x09" + wire[3:], N2)) is DropReason.BAD_VERSION
    assert why(decode(wire + b"\0" * HARD_MAX_DATAGRAM, N2)) is DropReason.TOO_BIG
    assert decode(bytearray(wire), N2).ok  # any bytes-like input
    assert decode(memoryview(wire), N2).ok


def test_authentic_envelope_field_checks() -> None:
    body = struct.pack("!I", 2) + b"[]"
    assert why(decode(_forge(200, body), N2)) is DropReason.UNKNOWN_TYPE
    assert why(decode(_forge(MsgType.ACK, body, flags=0x80), N2)) is DropReason.BAD_FIELD
    assert why(decode(_forge(MsgType.ACK, body, msg_id=2**63), N2)) is DropReason.BAD_FIELD
    # A Raft message must name its destination.
    hb = struct.pack("!I", 7) + b"[1,0,0]"
    assert decode(_forge(MsgType.HEARTBEAT, hb, dst=""), N2) == Dropped(DropReason.BAD_FIELD, "dst")
    assert decode(_forge(MsgType.HEARTBEAT, hb, dst="n2"), N2).ok
    # Body header longer than the body.
    long_header = _forge(MsgType.ACK, struct.pack("!I", 99) + b"[]")
    assert why(decode(long_header, N2)) is DropReason.TRUNCATED
    assert why(decode(_forge(MsgType.ACK, struct.pack("!I", 2) + b"[!"), N2)) is DropReason.BAD_BODY


def test_non_utf8_sender_is_bad_field() -> None:
    head = HEADER.pack(MAGIC, VERSION, MsgType.ACK, 0, N1.cluster, 1, 1, 2, 0)
    signed = head + b"\xff\xfe" + struct.pack("!I", 2) + b"[]"
    assert decode(signed + N1.tag(signed), N2) == Dropped(DropReason.BAD_FIELD, "id encoding")
    head = HEADER.pack(MAGIC, VERSION, MsgType.ACK, 0, N1.cluster, 1, 1, 0, 0)
    signed = head + struct.pack("!I", 2) + b"[]" + b"\0"
    assert why(decode(signed + N1.tag(signed), N2)) is DropReason.BAD_FIELD
    assert len(signed) + 16 >= MIN_DATAGRAM_SIZE and HEADER_SIZE == 31


# ----------------------------------------------------------------------------- encode misuse


def test_encode_misuse_raises() -> None:
    with pytest.raises(EncodeError):
        encode(cm.Heartbeat("n9", "n2", 1, 0), N1)  # not our message
    with pytest.raises(EncodeError):
        encode(cm.Heartbeat("n1", "", 1, 0), N1)  # no destination
    with pytest.raises(EncodeError):
        encode(ClientRequest(ClientKind.READ, 1, "c"), N1, dst="x" * 65)
    with pytest.raises(EncodeError):
        encode(ClientRequest(ClientKind.READ, 1, "c", {"v": object()}), N1)
    with pytest.raises(EncodeError):
        encode(ClientRequest(ClientKind.READ, 1, "c", {"v": 2**70}), N1)
    with pytest.raises(EncodeError):
        encode(ClientRequest(ClientKind.READ, 1, "c", blobs=("text",)), N1)  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode(cm.Heartbeat("n1", "n2", 1, 0), N1, msg_id=-1)
    with pytest.raises(EncodeError):
        encode(cm.AppendEntries("n1", "n2", 1, 5, 1, (Entry(7, 1),), 0), N1)
    with pytest.raises(MessageTooLarge):
        encode(ClientRequest(ClientKind.SUBMIT, 1, "c", blobs=(b"x" * 70_000,)), N1)
    with pytest.raises(EncodeError):
        encode_body(object())  # type: ignore[arg-type]


def test_context_validation() -> None:
    with pytest.raises(ValueError):
        WireContext("c", b"", "n1")
    with pytest.raises(ValueError):
        WireContext("c", b"k", "n1", incarnation=0)
    with pytest.raises(ValueError):
        WireContext("c", b"k", "n1", max_datagram_bytes=HARD_MAX_DATAGRAM + 1)
    with pytest.raises(EncodeError):
        WireContext("c", b"k", "")
    long_key = WireContext("cluster-a", b"k" * 200, "n1")  # hashed down to a BLAKE2b key
    wire = encode(cm.Heartbeat("n1", "n2", 1, 0), long_key)
    assert decode(wire, WireContext("cluster-a", b"k" * 200, "n2")).ok


def test_entries_helpers_round_trip() -> None:
    entries = (Entry(3, 1, b"a", EntryKind.NOOP, "c", 1, 2), Entry(9, 2, b"", client_id="d"))
    rows, blobs = entries_to_wire(entries)
    body = orjson.loads(orjson.dumps({"entries": rows}))
    assert entries_from_wire(body["entries"], blobs) == entries
    assert entries_from_wire([[1, 1, 9, "c", 1, 1]], (b"",)) is None
    assert entries_from_wire([[1, 1, 0, "c", 1]], (b"",)) is None
    assert entries_from_wire(rows, blobs[:1]) is None
    assert entries_from_wire("nope", ()) is None


def test_dump_header() -> None:
    wire = encode(cm.Heartbeat("n1", "n2", 1, 0), N1, msg_id=42)
    info = dump_header(wire)
    assert info is not None and info["msg_id"] == 42 and info["type"] is MsgType.HEARTBEAT
    assert dump_header(b"short") is None


@pytest.mark.parametrize("payload", [10, 3_900, 4_200, 40_000])
def test_both_macs_authenticate_and_reject_a_flip(payload: int) -> None:
    # Small datagrams carry a keyed BLAKE2b tag, from LARGE_SIGNED bytes on a keyed BLAKE3
    # one (keys derived from the secret), computed here independently of the envelope.
    import hashlib

    import blake3

    from udpraft.wire.envelope import LARGE_SIGNED, TAG_SIZE

    ents = [Entry(1, 1, b"x" * payload)]
    msg = cm.AppendEntries("n1", "n2", 1, 0, 0, tuple(ents), 0)
    data = encode(msg, N1, msg_id=9)
    assert isinstance(decode(data, N2), Decoded)
    signed, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    key3 = hashlib.blake2b(SECRET, digest_size=32, person=b"udpraft/b3/v2").digest()
    small = hashlib.blake2b(signed, key=SECRET, digest_size=TAG_SIZE, person=b"udpraft/wire/v1")
    if len(signed) >= LARGE_SIGNED:
        assert tag == blake3.blake3(signed, key=key3).digest(TAG_SIZE) != small.digest()
    else:
        assert tag == small.digest() != blake3.blake3(signed, key=key3).digest(TAG_SIZE)
    for pos in (HEADER_SIZE + 2, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        assert decode(bytes(bad), N2) == Dropped(DropReason.BAD_TAG)


def _fresh_append_cache() -> None:
    from udpraft.wire import append

    append._APPEND_CACHE.entries = ()  # encode again, not from the last message's cache


@settings(max_examples=300, deadline=None)
@given(append_entries(max_entries=8), st.integers(0, 3), st.integers(0, 3))
def test_append_encoded_from_the_leaders_batch_is_the_same_bytes(
    msg: cm.AppendEntries, before: int, after: int
) -> None:
    """The encoder takes a batch's runs (core/batch.py) for the columns when the message
    has one covering its entries: it decodes to the same message. (Not always the same
    bytes: a run cut out of a longer one may be coded differently, e.g. one seq as a
    step-1 run of one.)"""
    if not msg.entries or msg.prev_index < before:
        return
    first = msg.prev_index + 1
    extra_lo = [Entry(first - before + i, 1, b"p") for i in range(before)]
    extra_hi = [Entry(first + len(msg.entries) + i, 1, b"q") for i in range(after)]
    batch = EntryBatch.of(extra_lo + list(msg.entries) + extra_hi)
    _fresh_append_cache()
    plain = encode_body(msg, "n2")
    _fresh_append_cache()
    got = decode(encode(dataclasses.replace(msg, batch=batch), N1, msg_id=1), N2)
    assert isinstance(got, Decoded) and got.msg == msg
    # a batch that does not cover the entries is not used
    _fresh_append_cache()
    short = EntryBatch.of(list(msg.entries)[:-1] or [Entry(first + 9, 1)])
    assert encode_body(dataclasses.replace(msg, batch=short), "n2").body == plain.body


def test_append_from_a_uniform_batch() -> None:
    datas = tuple(bytes([65 + i]) * i for i in range(5))
    es = tuple(Entry(10 + i, 3, d, EntryKind.NORMAL, "", 0, 77) for i, d in enumerate(datas))
    batch = EntryBatch.uniform(10, 3, EntryKind.NORMAL, "", 0, 77, datas)
    msg = cm.AppendEntries("n1", "n2", 3, 11, 3, es[2:], 9, batch)
    _fresh_append_cache()
    got = decode(encode(msg, N1, msg_id=1), N2)
    assert isinstance(got, Decoded) and got.msg == msg
    _fresh_append_cache()
    assert encode_body(msg, "n2").body == encode_body(dataclasses.replace(msg, batch=None), "n2").body


def test_append_from_a_batch_with_seq_and_client_runs() -> None:
    es = [Entry(i, 2, b"d", EntryKind.NORMAL, "c" if i < 7 else "", i + 100 if i < 7 else 0, 5)
          for i in range(1, 10)]  # seqs 101..106 (one run of consecutive), then 0 0 0
    batch = EntryBatch.of(es)
    for lo, hi in [(2, 9), (3, 5), (6, 8), (8, 9)]:
        part = tuple(es[lo - 1 : hi])
        msg = cm.AppendEntries("n1", "n2", 2, lo - 1, 2, part, 1, batch)
        _fresh_append_cache()
        got = decode(encode(msg, N1, msg_id=1), N2)
        assert isinstance(got, Decoded) and got.msg.entries == part
