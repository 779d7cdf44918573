"""CRC-32C and the entry / hard-state / frame encodings shared by the storage backends."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.core.types import Entry, EntryKind, HardState
from udpraft.storage.codec import (
    ENTRY_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    CodecError,
    check_frame,
    decode_entry,
    decode_hard_state,
    encode_entry,
    encode_frames,
    encode_hard_state,
    frame,
)
from udpraft.storage.crc32c import crc32c

U64 = st.integers(min_value=0, max_value=2**64 - 1)


def crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),  # the catalogue check value
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 test vectors
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_vectors(data: bytes, want: int) -> None:
    assert crc32c(data) == want
    assert crc32c(memoryview(data)) == want
    assert crc32c(bytearray(data)) == want


def test_crc32c_matches_bitwise_reference_at_every_length() -> None:
    data = os.urandom(80)
    for n in range(len(data) + 1):
        assert crc32c(data[:n]) == crc32c_bitwise(data[:n]), n


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_crc32c_continues(a: bytes, b: bytes) -> None:
    assert crc32c(b, crc32c(a)) == crc32c(a + b)


entries = st.builds(
    Entry,
    index=U64,
    term=U64,
    data=st.binary(max_size=300),
    kind=st.sampled_from(EntryKind),
    client_id=st.text(max_size=40),
    seq=U64,
    ts_ms=U64,
)


@settings(max_examples=200)
@given(entries)
def test_entry_round_trip(e: Entry) -> None:
    raw = encode_entry(e)
    assert len(raw) == ENTRY_HEADER_SIZE + len(e.client_id.encode()) + len(e.data)
    assert decode_entry(raw) == e
    padded = b"junk" + raw + b"tail"
    assert decode_entry(padded, 4, 4 + len(raw)) == e


@given(st.lists(entries, max_size=10))
def test_frames_round_trip(batch: list[Entry]) -> None:
    buf, offsets = encode_frames(batch)
    assert len(offsets) == len(batch)
    pos = 0
    for e, off in zip(batch, offsets, strict=True):
        assert off == pos
        pos = check_frame(buf, off)
        assert decode_entry(buf, off + FRAME_HEADER_SIZE, pos) == e
    assert pos == len(buf)


@given(st.builds(HardState, term=U64, vote=st.text(max_size=50), commit=U64))
def test_hard_state_round_trip(hs: HardState) -> None:
    assert decode_hard_state(encode_hard_state(hs)) == hs


@pytest.mark.parametrize(
    "bad",
    [
        Entry(-1, 1),
        Entry(1, 2**64),
        Entry(1, 1, seq=-5),
        Entry(1, 1, client_id="é" * 40_000),  # 80,000 UTF-8 bytes > u16
    ],
)
def test_encode_rejects_values_outside_the_format(bad: Entry) -> None:
    with pytest.raises(ValueError):
        encode_entry(bad)


def test_encode_hard_state_rejects_negative_term() -> None:
    with pytest.raises(ValueError):
        encode_hard_state(HardState(term=-1))


def _mutate(raw: bytes, at: int, value: int) -> bytes:
    return raw[:at] + bytes([value]) + raw[at + 1 :]


GOOD = encode_entry(Entry(3, 2, b"data", EntryKind.NOOP, "cl", 9, 10))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (GOOD[:-1], "lengths do not match"),
        (GOOD + b"x", "lengths do not match"),
        (GOOD[:10], "shorter than its header"),
        (_mutate(GOOD, 0, 0x00), "unknown record tag"),
        (_mutate(GOOD, 17, 9), "unknown entry kind"),
        (_mutate(GOOD, ENTRY_HEADER_SIZE, 0xFF), "not UTF-8"),
    ],
)
def test_decode_entry_errors_name_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        decode_entry(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xb1" + bytes(10), "shorter than its header"),
        (b"\x00" + bytes(18), "unknown hard state tag"),
        (encode_hard_state(HardState(1, "ab", 0))[:-1], "does not match"),
        (b"\xb1" + bytes(16) + struct.pack("<H", 1) + b"\xff", "not UTF-8"),
    ],
)
def test_decode_hard_state_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        decode_hard_state(raw)


def test_check_frame_errors() -> None:
    good = frame(GOOD)
    assert check_frame(good, 0) == len(good)
    with pytest.raises(CodecError, match="header cut off"):
        check_frame(good[:5], 0)
    with pytest.raises(CodecError, match="cut off at"):
        check_frame(good[:-1], 0)
    with pytest.raises(CodecError, match="crc mismatch"):
        check_frame(_mutate(good, 20, good[20] ^ 1), 0)
    with pytest.raises(CodecError, match="out of bounds"):
        check_frame(struct.pack("<II", 0, 0), 0)
    with pytest.raises(CodecError, match="out of bounds"):
        check_frame(good, 0, min_payload=len(GOOD) + 1)
