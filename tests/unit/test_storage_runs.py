"""WAL run records (udpraft/storage/runs.py) and the file store's overwrite rule."""

from __future__ import annotations

import os
from itertools import accumulate
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.core.batch import EntryBatch
from udpraft.core.types import Entry, EntryKind
from udpraft.storage import CorruptLogError, FileLogStore
from udpraft.storage.runs import RUN_HEADER_SIZE, decode_run, encode_run, encode_run_batch

KINDS = frozenset(int(k) for k in EntryKind)


def ents(lo: int, hi: int, term: int, tag: str = "", cid: str = "") -> list[Entry]:
    return [Entry(i, term, f"{tag}{i}".encode() * (i % 3), client_id=cid, seq=i if cid else 0,
                  ts_ms=1_700_000_000_000 + i if cid else 0) for i in range(lo, hi + 1)]


def test_a_run_round_trips_every_field() -> None:
    es = [
        Entry(7, 3, b"", EntryKind.NOOP),
        Entry(8, 3, b"x" * 300, client_id="client-\u00e9", seq=2**63 - 1, ts_ms=5),
        Entry(9, 4, b"\x00\xff", EntryKind.CONFIG, client_id="", seq=0, ts_ms=2**64 - 1),
        Entry(10, 4, b"y", client_id="client-\u00e9", seq=1),
    ]
    payload = encode_run(es)
    r = decode_run(payload, 0, len(payload), KINDS)
    assert (r.first, r.count) == (7, 4)
    assert list(r.terms) == [3, 3, 4, 4] and list(r.kinds) == [1, 0, 2, 0]
    assert list(r.seqs) == [0, 2**63 - 1, 0, 1] and list(r.ts) == [0, 5, 2**64 - 1, 0]
    assert r.cid_blob == ("client-\u00e9" * 2).encode() and r.data == b"x" * 300 + b"\x00\xffy"


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda p: p[:RUN_HEADER_SIZE - 1], "shorter than its header"),
        (lambda p: b"\xe3" + p[1:], "unknown record tag"),
        (lambda p: p[:9] + b"\0\0\0\0" + p[13:], "no entries"),
        (lambda p: p[:-1], "lengths do not match"),
        (lambda p: p + b"z", "lengths do not match"),
        (lambda p: p[:RUN_HEADER_SIZE + 16] + b"\x09" + p[RUN_HEADER_SIZE + 17:], "unknown entry kind"),
    ],
)
def test_a_bad_run_record_is_refused_with_a_reason(mutate: object, reason: str) -> None:
    payload = encode_run(ents(1, 2, 1, cid="c"))
    bad = mutate(payload)  # type: ignore[operator]
    with pytest.raises(ValueError, match=reason):
        decode_run(bad, 0, len(bad), KINDS)


def test_runs_are_bounded_in_entries_and_bytes() -> None:
    from udpraft.storage import runs

    es = [Entry(i, 1, b"a") for i in range(1, runs.RUN_MAX_ENTRIES * 2 + 2)]
    got = runs.encode_runs(es)
    assert [len(r) for r, _ in got] == [runs.RUN_MAX_ENTRIES, runs.RUN_MAX_ENTRIES, 1]
    assert [e for r, _ in got for e in r] == es
    big = [Entry(i, 1, b"b" * (runs.RUN_MAX_BYTES // 3)) for i in range(1, 8)]
    got = runs.encode_runs(big)
    assert [e for r, _ in got for e in r] == big  # in order, all there
    assert all(len(p) <= runs.RUN_MAX_BYTES for _, p in got) and len(got) >= 3
    huge = [Entry(1, 1, b"c" * (runs.RUN_MAX_BYTES + 1))]
    assert [len(r) for r, _ in runs.encode_runs(huge)] == [1]  # one entry may exceed it


def reopen(d: Path) -> FileLogStore:
    return FileLogStore(str(d), segment_bytes_max=1000, run_min_entries=2)


def test_conflicts_inside_runs_keep_the_entries_before_them(tmp_path: Path) -> None:
    s = reopen(tmp_path)
    s.append(ents(1, 10, 1))  # run F
    s.append(ents(5, 7, 2, "g"))  # conflict at 5, inside F: F stays, G overwrites 5..
    s.sync()
    s.close()
    s = reopen(tmp_path)
    model = ents(1, 4, 1) + ents(5, 7, 2, "g")
    assert s.load()[1] == model
    s.append(ents(3, 4, 3, "h"))  # inside F again, before G: G goes, H overwrites 3..
    s.sync()
    s.close()
    s = reopen(tmp_path)
    assert s.load()[1] == ents(1, 2, 1) + ents(3, 4, 3, "h")
    s.append(ents(3, 3, 4, "i"))  # at H's first entry, whose predecessor lies in F
    s.sync()
    s.close()
    s = reopen(tmp_path)
    assert s.load()[1] == ents(1, 2, 1) + ents(3, 3, 4, "i")  # F's 3..10 stay replaced
    s.close()


def test_a_full_segment_is_not_sealed_before_the_overwrite_is_written(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path), segment_bytes_max=200, run_min_entries=2)
    s.append(ents(1, 20, 1))  # one run, well over 200 bytes
    s.append(ents(20, 20, 2, "x"))  # a single frame overwriting 20: same segment
    s.append(ents(21, 22, 2, "y"))  # now the segment rolls
    s.sync()
    assert len(s.segment_paths()) == 2
    s.close()
    s = FileLogStore(str(tmp_path), segment_bytes_max=200, run_min_entries=2)
    assert s.load()[1] == ents(1, 19, 1) + ents(20, 20, 2, "x") + ents(21, 22, 2, "y")
    s.close()


def test_damage_in_a_run_frame(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path), run_min_entries=2)
    s.append(ents(1, 5, 1, cid="c"))
    s.append(ents(6, 9, 1, cid="c"))
    s.sync()
    path, second = s.entry_offset(6)
    assert s.entry_offset(9) == (path, second)  # entries of a run share their frame
    s.close()
    raw = Path(path).read_bytes()
    # Torn tail: the last frame is cut short; the run before it stays.
    os.truncate(path, len(raw) - 3)
    s = FileLogStore(str(tmp_path), run_min_entries=2)
    assert s.load()[1] == ents(1, 5, 1, cid="c") and os.path.getsize(path) == second
    s.close()
    # A flipped byte in the first run, with an intact run behind it: corruption, named.
    Path(path).write_bytes(bytearray(raw[:40]) + bytes([raw[40] ^ 0x20]) + raw[41:])
    with pytest.raises(CorruptLogError) as info:
        FileLogStore(str(tmp_path), run_min_entries=2)
    assert (info.value.path, info.value.offset) == (path, 0)
    assert "intact record follows at offset" in str(info.value)


def test_runs_and_single_frames_mix_in_one_segment(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path), run_min_entries=3)
    s.append(ents(1, 1, 1))
    s.append(ents(2, 6, 1, cid="a"))
    s.append(ents(7, 8, 1))
    s.append(ents(9, 12, 2, cid="b"))
    s.sync()
    s.close()
    s = FileLogStore(str(tmp_path), run_min_entries=10**9)  # reads both whatever it writes
    assert s.load()[1] == ents(1, 1, 1) + ents(2, 6, 1, cid="a") + ents(7, 8, 1) + ents(9, 12, 2, cid="b")
    s.close()


def test_a_record_going_back_over_single_frames_is_corruption(tmp_path: Path) -> None:
    from udpraft.storage.codec import encode_frames

    s = FileLogStore(str(tmp_path), run_min_entries=10**9)
    s.append(ents(1, 5, 1))  # a frame per entry
    s.sync()
    path = s.segment_paths()[0]
    s.close()
    forged, _ = encode_frames(ents(3, 3, 2, "z"))  # valid CRC, but goes back to 3
    with open(path, "ab") as f:
        f.write(forged)
    with pytest.raises(CorruptLogError, match="goes back over entries outside a run frame"):
        FileLogStore(str(tmp_path))


# -- runs encoded from the entries' column form (core/batch.py) --------------------------

row = st.tuples(st.integers(1, 3), st.sampled_from(list(EntryKind)),
                st.sampled_from(["", "", "c1", "c\u00e9"]), st.integers(0, 2), st.integers(0, 2),
                st.binary(max_size=5))


def from_rows(first: int, rows: list[tuple[int, EntryKind, str, int, int, bytes]]) -> list[Entry]:
    out, seq = [], 0
    for i, (term, kind, cid, dseq, ts, data) in enumerate(rows):
        seq = seq + dseq if dseq < 2 else 40 + i
        out.append(Entry(first + i, term, data, kind, cid, seq, ts))
    return out


def forms(es: list[Entry]) -> list[EntryBatch]:
    """The same batch as the leader's datas, the decoder's blob and the decoder without blob."""
    b = EntryBatch.of(es)
    ends = list(accumulate(len(e.data) for e in es))
    cols = (b.first, b.n, b.terms, b.kinds, b.cids, b.seqs, b.ts)
    return [b, EntryBatch(*cols, blob=b"".join(e.data for e in es), ends=ends, max_len=b.max_len),
            EntryBatch(*cols, max_len=b.max_len)]


@settings(max_examples=300, deadline=None)
@given(st.lists(row, min_size=1, max_size=30), st.data())
def test_a_run_from_a_batch_is_the_same_bytes(rows: list[tuple[int, EntryKind, str, int, int, bytes]],
                                              data: st.DataObject) -> None:
    es = from_rows(5, rows)
    off = data.draw(st.integers(0, len(es) - 1))
    cnt = data.draw(st.integers(1, len(es) - off))
    for b in forms(es):
        assert encode_run_batch(b, off, es[off : off + cnt]) == encode_run(es[off : off + cnt])


def test_runs_from_pieces_split_as_usual_and_round_trip(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from udpraft.storage import runs

    monkeypatch.setattr(runs, "RUN_MAX_ENTRIES", 4)
    es = [Entry(i, 1 + i // 6, bytes([i]) * (i % 4), client_id="c" if i % 5 == 0 else "",
                seq=i) for i in range(1, 15)]
    a, b = EntryBatch.of(es[:9]), EntryBatch.of(es[9:])
    pieces = [(a, 2, 7), (b, 0, 5)]  # entries 3..14
    got = runs.encode_runs(es[2:], pieces)
    assert [len(r) for r, _ in got] == [4, 3, 4, 1]  # never across a piece, at most 4 each
    assert [p for _, p in got] == [encode_run(r) for r, _ in got]
    one = runs.encode_runs(es, [(EntryBatch.of(es), 0, len(es))])
    assert one == runs.encode_runs(es)  # one piece: the very same frames
    with pytest.raises(ValueError, match="cover"):
        runs.encode_runs(es[2:], pieces[:1])
    s = reopen(tmp_path)
    s.append(es[:2])
    s.append(es[2:], pieces)
    s.sync()
    s.close()
    s = reopen(tmp_path)
    assert list(s.load()[1]) == es
    s.close()
