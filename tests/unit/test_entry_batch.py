"""EntryBatch (core/batch.py): the column form of a batch of entries, and the cold columns
filled from it (``ColdEntries.extend_batch``) equal the same filled from the entries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.core import columns as columns_mod
from udpraft.core.batch import EntryBatch, expand, expand_seqs
from udpraft.core.columns import REF_MIN, ColdEntries
from udpraft.core.types import Entry, EntryKind
from udpraft.wire.append import _entries_from_columns

fields = st.tuples(
    st.integers(1, 3),  # term
    st.sampled_from(list(EntryKind)),
    st.sampled_from(["", "", "c1", "c2"]),
    st.integers(0, 4),  # seq: runs of equal and of consecutive values both occur
    st.integers(0, 2),  # ts
    st.binary(max_size=6),
)


def entries_of(first: int, rows: list[tuple[int, EntryKind, str, int, int, bytes]]) -> list[Entry]:
    out = []
    seq = 0
    for i, (term, kind, cid, dseq, ts, data) in enumerate(rows):
        seq = seq + 1 if dseq == 1 else seq if dseq == 0 else dseq * 7
        out.append(Entry(first + i, term, data, kind, cid, seq, ts))
    return out


def columns(c: ColdEntries) -> tuple[object, ...]:
    return (c.first, list(c.terms), bytes(c.kinds), list(c.seqs), list(c.ts), c.cids,
            bytes(c.data), list(c.ends), dict(c.refs))


@settings(max_examples=300, deadline=None)
@given(st.lists(fields, min_size=1, max_size=40), st.data())
def test_of_describes_its_entries_and_expands_any_range(
        rows: list[tuple[int, EntryKind, str, int, int, bytes]], data: st.DataObject) -> None:
    ents = entries_of(10, rows)
    b = EntryBatch.of(ents)
    assert (b.first, b.n) == (10, len(ents))
    off = data.draw(st.integers(0, len(ents) - 1))
    cnt = data.draw(st.integers(0, len(ents) - off))
    part = ents[off : off + cnt]
    assert list(expand(b.terms, off, cnt)) == [e.term for e in part]
    assert list(expand(b.kinds, off, cnt)) == [int(e.kind) for e in part]
    assert list(expand(b.cids, off, cnt)) == [e.client_id for e in part]
    assert list(expand(b.ts, off, cnt)) == [e.ts_ms for e in part]
    assert list(expand_seqs(b.seqs, off, cnt)) == [e.seq for e in part]


@settings(max_examples=300, deadline=None)
@given(st.lists(fields, min_size=1, max_size=40), st.lists(fields, max_size=5), st.data())
def test_extend_batch_fills_the_same_columns_as_extend(
        rows: list[tuple[int, EntryKind, str, int, int, bytes]],
        before: list[tuple[int, EntryKind, str, int, int, bytes]], data: st.DataObject) -> None:
    ents = entries_of(1, before + rows)
    head, tail = ents[: len(before)], ents[len(before) :]
    off = data.draw(st.integers(0, len(tail) - 1))
    cnt = data.draw(st.integers(1, len(tail) - off))
    batch = EntryBatch.of(tail)
    if data.draw(st.booleans()):  # the wire decoder's form: one blob and end offsets
        blob = b"".join(e.data for e in tail)
        ends, end = [], 0
        for e in tail:
            end += len(e.data)
            ends.append(end)
        batch = EntryBatch(batch.first, batch.n, batch.terms, batch.kinds, batch.cids,
                           batch.seqs, batch.ts, blob=blob, ends=ends, max_len=batch.max_len)
    a, b = ColdEntries(1), ColdEntries(1)
    a.extend(head)
    b.extend(head)
    # the entries before ``off`` reach the columns first (from the objects), as in RaftLog
    a.extend(tail[:off])
    b.extend(tail[:off])
    a.extend_batch(batch, off, tail[off : off + cnt])
    b.extend(tail[off : off + cnt])
    assert columns(a) == columns(b)
    assert a.entries(1, len(before) + off + cnt + 1) == ents[: len(before) + off + cnt]


def test_uniform_is_a_leaders_batch() -> None:
    datas = (b"a", b"", b"ccc")
    b = EntryBatch.uniform(7, 4, EntryKind.NORMAL, "", 0, 99, datas)
    want = [Entry(7 + i, 4, d, EntryKind.NORMAL, "", 0, 99) for i, d in enumerate(datas)]
    c = ColdEntries(7)
    c.extend_batch(b, 0, want)
    assert c.entries(7, 10) == want


def test_large_payloads_come_from_the_entries_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns_mod, "REF_MIN", 4)
    ents = [Entry(1, 1, b"ab"), Entry(2, 1, b"abcd")]
    c = ColdEntries(1)
    c.extend_batch(EntryBatch.uniform(1, 1, EntryKind.NORMAL, "", 0, 0, (b"ab", b"abcd")), 0, ents)
    assert c.refs == {2: b"abcd"} and c.entries(1, 3) == ents
    no_blob = EntryBatch(3, 3, [1, 3], [0, 3], ["", 3], [0, 0, 3], [0, 3], max_len=6)
    more = [Entry(3, 1, b"abcde"), Entry(4, 1, b"x"), Entry(5, 1, b"uvwxyz")]
    c.extend_batch(no_blob, 0, more)
    assert c.entries(1, 6) == ents + more and set(c.refs) == {2, 3, 5}
    with pytest.raises(ValueError, match="outside"):
        c.extend_batch(no_blob, 1, more)


def test_the_wire_decoder_hands_over_the_batch_of_what_it_decoded() -> None:
    ents = entries_of(5, [(1, EntryKind.NORMAL, "", 0, 3, b"xy"), (1, EntryKind.NORMAL, "c1", 1, 3, b""),
                          (2, EntryKind.NOOP, "c1", 1, 4, b"z")])
    head = [len(ents), [1, 2, 2, 1], [0, 2, 1, 1], ["", 1, "c1", 2], [0, 1, 3], [3, 2, 4, 1],
            [2, 1, 0, 1, 1, 1]]
    got, batch = _entries_from_columns(head, b"xyz", 5)
    assert list(got) == ents
    assert batch is not None
    c = ColdEntries(6)
    c.extend_batch(batch, 1, got[1:])
    assert c.entries(6, 8) == ents[1:]
    # a body with a large payload keeps no batch (the entries take it by reference)
    big = [1, [1, 1], [0, 1], ["", 1], [0, 0, 1], [0, 1], [REF_MIN, 1]]
    got, batch = _entries_from_columns(big, b"x" * REF_MIN, 1)
    assert batch is not None and batch.blob == b"" and got[0].data == b"x" * REF_MIN
    c = ColdEntries(1)
    c.extend_batch(batch, 0, got)
    assert c.refs == {1: got[0].data} and c.entries(1, 2) == list(got)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=6), min_size=1, max_size=6),
       st.integers(0, 40))
def test_cold_columns_keep_large_payloads_in_any_mix(chunks: list[list[int]], cut: int) -> None:
    # REF_MIN 4: sizes 4..7 are kept by reference; chunks of only those take the all-large
    # path of ``extend``, mixed chunks the loop.
    saved, columns_mod.REF_MIN = columns_mod.REF_MIN, 4
    try:
        c = ColdEntries(1)
        ents: list[Entry] = []
        for sizes in chunks:
            new = [Entry(len(ents) + 1 + j, 2, bytes([j + 65]) * n) for j, n in enumerate(sizes)]
            c.extend(new)
            ents += new
        assert c.entries(1, len(ents) + 1) == ents
        assert [c.size_bytes(e.index) for e in ents] == [e.size_bytes() for e in ents]
        assert set(c.refs) == {e.index for e in ents if len(e.data) >= 4}
        cut = 1 + cut % len(ents)
        c.truncate(cut)
        assert c.entries(1, cut) == ents[: cut - 1]
    finally:
        columns_mod.REF_MIN = saved


ENTRY_ROWS = st.lists(st.tuples(
    st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1), st.binary(max_size=20),
    st.sampled_from(list(EntryKind)), st.text(max_size=6), st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
), max_size=30)


@settings(max_examples=200, deadline=None)
@given(rows=ENTRY_ROWS)
def test_build_entries_from_columns_equals_the_constructor(
        rows: list[tuple[int, int, bytes, EntryKind, str, int, int]]) -> None:
    want = [Entry(*r) for r in rows]
    cols = list(zip(*rows)) if rows else [()] * 7
    got = columns_mod.build_entries(len(rows), *map(iter, cols))
    assert got == want and all(type(e) is Entry for e in got)
    # every field set (a frozen dataclass compares all of them, but say it plainly)
    assert [tuple(getattr(e, f) for f in columns_mod._FIELDS) for e in got] == rows


def test_build_entries_falls_back_to_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns_mod, "_SLOT_SETTERS", None)
    got = columns_mod.build_entries(2, [1, 2], [3, 3], [b"a", b"b"], [EntryKind.NORMAL] * 2,
                                    ["", "c"], [0, 5], [7, 7])
    assert got[0] == Entry(1, 3, b"a", EntryKind.NORMAL, "", 0, 7)
    assert got[1] == Entry(2, 3, b"b", EntryKind.NORMAL, "c", 5, 7)


PROPOSALS = st.lists(st.tuples(
    st.binary(max_size=12), st.sampled_from(["", "a", "b", "c-1"]), st.integers(0, 6),
), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(items=PROPOSALS)
def test_propose_batch_appends_a_batch_that_describes_its_entries(
        items: list[tuple[bytes, str, int]]) -> None:
    """The batch a leader's propose_batch hands the log (client ids and seqs as runs) says
    exactly what its entries say, field by field, and encodes the same AppendEntries."""
    from tests.helpers.raftkit import log_entries, make_leader
    from udpraft.core.batch import expand

    n = make_leader()
    first = n.propose_batch(items)
    got = [e for e in log_entries(n) if e.index >= first]
    assert [(e.data, e.client_id, e.seq) for e in got] == items
    b = n.log.batch_of(first, first + len(items) - 1)
    assert b is not None and (b.first, b.n) == (first, len(items))
    cnt = len(items)
    assert list(expand(b.terms, 0, cnt)) == [e.term for e in got]
    assert list(expand(b.kinds, 0, cnt)) == [int(e.kind) for e in got]
    assert list(expand(b.cids, 0, cnt)) == [e.client_id for e in got]
    assert list(expand_seqs(b.seqs, 0, cnt)) == [e.seq for e in got]
    assert list(expand(b.ts, 0, cnt)) == [e.ts_ms for e in got]
    assert b.datas is not None and list(b.datas) == [e.data for e in got]
    # and it is the batch EntryBatch.of computes from the entries
    ref = EntryBatch.of(got)
    assert (b.terms, b.kinds, b.cids, b.seqs, b.ts) == (ref.terms, ref.kinds, ref.cids, ref.seqs, ref.ts)


def _cut_runs_ref(runs: list[object], off: int, cnt: int) -> list[object]:
    """The plain loop cut_runs replaced (a run per value, clipped to the range)."""
    out: list[object] = []
    pos, end = 0, off + cnt
    for v, c in zip(runs[::2], runs[1::2]):
        lo, hi = max(off, pos), min(end, pos + int(c))  # type: ignore[call-overload]
        if lo < hi:
            out += (v, hi - lo)
        pos += int(c)  # type: ignore[call-overload]
    return out


def _cut_seqs_ref(triples: list[int], off: int, cnt: int) -> list[int]:
    out: list[int] = []
    pos, end = 0, off + cnt
    for i in range(0, len(triples), 3):
        first, step, count = triples[i : i + 3]
        lo, hi = max(off, pos), min(end, pos + count)
        if lo < hi:
            out += (first + step * (lo - pos), step, hi - lo)
        pos += count
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(1, 9)), min_size=1, max_size=30),
       st.lists(st.tuples(st.integers(0, 99), st.integers(0, 1), st.integers(1, 9)), min_size=1,
                max_size=30), st.data())
def test_cuts_by_binary_search_equal_the_plain_loop(
        runs: list[tuple[str, int]], seqs: list[tuple[int, int, int]], data: st.DataObject) -> None:
    from udpraft.core.batch import cut_runs, cut_seqs

    flat: list[object] = [x for r in runs for x in r]
    total = sum(c for _, c in runs)
    off = data.draw(st.integers(0, total + 2))
    cnt = data.draw(st.integers(0, total + 2))
    assert cut_runs(flat, off, cnt) == _cut_runs_ref(flat, off, cnt)
    triples = [x for t in seqs for x in t]
    total = sum(c for _, _, c in seqs)
    off = data.draw(st.integers(0, total + 2))
    cnt = data.draw(st.integers(0, total + 2))
    assert cut_seqs(triples, off, cnt) == _cut_seqs_ref(triples, off, cnt)
