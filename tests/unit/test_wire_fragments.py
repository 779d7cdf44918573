"""Size safety nets: AppendEntries chunking, fragmentation and bounded reassembly."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.core import messages as cm
from udpraft.core.types import Entry
from udpraft.wire import (
    FLAG_INNER,
    Decoded,
    Fragment,
    MessageTooLarge,
    Reassembler,
    WireContext,
    append_entries_size_bound,
    decode,
    encode,
    fragment_chunk_size,
    split_append_entries,
    split_into_fragments,
)

N1 = WireContext("c", b"key", "n1", incarnation=5, max_datagram_bytes=2000)
N2 = WireContext("c", b"key", "n2", incarnation=6, max_datagram_bytes=2000)


@st.composite
def big_appends(draw: st.DrawFn) -> cm.AppendEntries:
    prev = draw(st.integers(0, 1000))
    n = draw(st.integers(0, 40))
    entries = tuple(
        Entry(
            prev + 1 + i,
            draw(st.integers(0, 2**63 - 1)),
            b"x" * draw(st.integers(0, 900)),
            client_id=draw(st.text(max_size=20)),
            seq=draw(st.integers(0, 2**63 - 1)),
            ts_ms=draw(st.integers(0, 2**63 - 1)),
        )
        for i in range(n)
    )
    return cm.AppendEntries("n1", "n2", 7, prev, 3, entries, 99)


@settings(max_examples=80, deadline=None)
@given(big_appends(), st.integers(600, 2000))
def test_split_append_entries_fits_and_chains(msg: cm.AppendEntries, max_bytes: int) -> None:
    parts = split_append_entries(msg, max_bytes)
    assert sum((p.entries for p in parts), ()) == msg.entries
    prev_index, prev_term = msg.prev_index, msg.prev_term
    for part in parts:
        assert (part.prev_index, part.prev_term) == (prev_index, prev_term)
        assert (part.term, part.commit, part.src, part.dst) == (7, 99, "n1", "n2")
        size = len(encode(part, N1, msg_id=2**63 - 1, max_bytes=1 << 20))
        assert size <= append_entries_size_bound(part)
        if len(part.entries) > 1:
            assert size <= max_bytes
        if part.entries:
            prev_index, prev_term = part.entries[-1].index, part.entries[-1].term
    if append_entries_size_bound(msg) <= max_bytes:
        assert parts == [msg]


def test_worst_case_client_id_stays_within_bound() -> None:
    nasty = "\x01" * 128  # every character escaped as \u0001 by orjson
    entries = tuple(
        Entry(i, 2**63 - 1, b"", client_id=nasty, seq=2**63 - 1, ts_ms=2**63 - 1)
        for i in range(1, 6)
    )
    msg = cm.AppendEntries("n1", "n2", 2**63 - 1, 0, 2**63 - 1, entries, 2**63 - 1)
    assert len(encode(msg, N1, msg_id=2**63 - 1, max_bytes=1 << 20)) <= append_entries_size_bound(
        msg
    )


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=5000), st.integers(1, 700), st.randoms(use_true_random=False))
def test_fragments_reassemble_in_any_order(inner: bytes, chunk: int, rnd: random.Random) -> None:
    frags = split_into_fragments(inner, 42, chunk)
    assert all(0 < len(f.chunk) <= chunk for f in frags)
    order = frags + rnd.sample(frags, k=min(3, len(frags)))  # some duplicates at the end
    rnd.shuffle(order)
    r: Reassembler[str] = Reassembler(max_total_bytes=10_000, max_messages=2)
    results = [r.add("k", f, 0.0) for f in order]
    assert [x for x in results if x is not None] == [inner]
    assert r.bytes_reserved == 0 and len(r) == 0


def test_large_message_through_fragment_datagrams() -> None:
    msg = cm.AppendEntries("n1", "n2", 1, 0, 0, (Entry(1, 1, bytes(range(256)) * 40),), 1)
    inner = encode(msg, N1, msg_id=7, flags=FLAG_INNER, max_bytes=N1.max_message_bytes)
    chunk = fragment_chunk_size(N1, "n2")
    datagrams = [
        encode(f, N1, msg_id=100 + f.index, dst="n2") for f in split_into_fragments(inner, 7, chunk)
    ]
    assert len(datagrams) > 1 and all(len(d) <= N1.max_datagram_bytes for d in datagrams)
    r: Reassembler[int] = Reassembler()
    whole = None
    for d in reversed(datagrams):
        got = decode(d, N2)
        assert isinstance(got, Decoded) and isinstance(got.msg, Fragment)
        whole = r.add(got.msg.group_id, got.msg, 1.0) or whole
    assert whole is not None
    result = decode(whole, N2, inner=True)
    assert isinstance(result, Decoded) and result.msg == msg and result.msg_id == 7


def test_too_many_fragments_refused() -> None:
    with pytest.raises(MessageTooLarge):
        split_into_fragments(b"x" * 70_000, 1, 1)
    with pytest.raises(ValueError):
        split_into_fragments(b"", 1, 10)


def _frag(index: int, count: int, total: int, chunk: bytes, group: int = 1) -> Fragment:
    return Fragment(group, index, count, total, chunk)


def test_reassembler_memory_bound_and_lru_eviction() -> None:
    r: Reassembler[int] = Reassembler(max_total_bytes=100, max_messages=3, timeout_s=5)
    assert r.add(1, _frag(0, 2, 40, b"a" * 20), 0.0) is None
    assert r.add(2, _frag(0, 2, 40, b"b" * 20), 0.1) is None
    assert r.bytes_reserved == 80
    r.add(1, _frag(1, 3, 40, b"a"), 0.2)  # inconsistent count kills group 1
    assert r.counters["reassembly_inconsistent"] == 1 and len(r) == 1
    r.add(1, _frag(0, 2, 40, b"a" * 20), 0.3)
    r.add(3, _frag(0, 2, 50, b"c" * 25), 0.4)  # needs room: evicts group 2 (least recent)
    assert r.counters["reassembly_evicted"] == 1 and r.bytes_reserved == 90
    assert r.add(2, _frag(1, 2, 40, b"b" * 20), 0.5) is None  # group 2 starts over
    assert r.bytes_reserved <= 100 and len(r) <= 3
    assert r.add(9, _frag(0, 1, 101, b"z"), 0.6) is None
    assert r.counters["reassembly_too_big"] == 1


def test_reassembler_max_messages_and_overflowing_bytes() -> None:
    r: Reassembler[int] = Reassembler(max_total_bytes=10_000, max_messages=2)
    for key in range(5):
        r.add(key, _frag(0, 2, 10, b"12345"), float(key))
        assert len(r) <= 2
    assert r.counters["reassembly_evicted"] == 3
    r.add(4, _frag(1, 2, 10, b"123456"), 9.0)  # more bytes than declared
    assert r.counters["reassembly_inconsistent"] == 1 and len(r) == 1
    r.add(7, _frag(0, 2, 10, b"1"), 9.0)
    assert r.add(7, _frag(1, 2, 10, b"2"), 9.0) is None  # complete but short: inconsistent
    assert r.counters["reassembly_inconsistent"] == 2


def test_reassembler_timeout() -> None:
    r: Reassembler[int] = Reassembler(timeout_s=2.0)
    r.add(1, _frag(0, 2, 4, b"ab"), 0.0)
    r.add(2, _frag(0, 2, 4, b"ab"), 1.0)
    assert r.next_deadline() == 2.0
    r.add(1, _frag(0, 2, 4, b"ab"), 1.5)  # a duplicate piece: the sender is still there
    assert r.counters["reassembly_duplicate"] == 1
    assert r.next_deadline() == 3.0
    assert r.expire(2.9) == 0
    assert r.expire(3.0) == 1 and len(r) == 1  # group 2, idle since 1.0
    assert r.expire(3.5) == 1 and len(r) == 0  # group 1, idle since 1.5
    assert r.counters["reassembly_expired"] == 2 and r.bytes_reserved == 0
    assert r.next_deadline() is None


def test_reassembler_bounds_pieces_not_just_bytes() -> None:
    """Each stored piece costs ~100 bytes of dict, int and bytes objects however short it
    is: groups of 65,535 two-byte pieces reserve 128 KB each but held ~7 MB, so the default
    byte budget (64 MB) let 64 such groups hold ~450 MB. Pieces are bounded too."""
    r: Reassembler[int] = Reassembler()  # the defaults the endpoint uses
    n = 65_535
    for group in range(8):
        for i in range(n - 1):  # never complete
            r.add(group, _frag(i, n, 2 * n, b"ab", group), 0.0)
    held = sum(len(g.chunks) for g in r._groups.values())
    assert held <= 4 * n
    assert r.counters["reassembly_evicted"] >= 4
