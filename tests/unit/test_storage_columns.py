"""Recovery into columns: a store's ``load`` hands the log over as ``EntryColumns`` (no Entry
object per entry) and ``RaftLog`` adopts them as its cold prefix.

The property: a log recovered from disk through that path answers exactly like one built
from a list of the same ``Entry`` objects, for random contents, conflict truncations (also
into the recovered prefix), snapshots (``recover``'s slice) and later operations.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udpraft.core.columns import ColdEntries, EntryColumns
from udpraft.core.log import RaftLog
from udpraft.core.types import NO_SNAPSHOT, Entry, EntryKind, HardState, SnapshotMeta
from udpraft.io.snapshots import SnapshotStore, recover
from udpraft.storage import CorruptLogError, FileLogStore, SqliteLogStore
from udpraft.storage import scan as scan_mod
from udpraft.storage.base import LogStore
from udpraft.storage.codec import encode_frames

from .test_raft_log_cold import NEVER, state

FRAME_PER_ENTRY = 10**9  # run_min_entries that keeps a frame per entry (no run records)

def mk(index: int, term: int, i: int) -> Entry:
    kind = EntryKind.CONFIG if i % 7 == 3 else EntryKind.NOOP if i % 11 == 5 else EntryKind.NORMAL
    cid = "" if i % 3 == 0 else f"cl-{i % 5}-é" if i % 4 else f"c{i % 13}"
    return Entry(index, term, bytes([i % 256]) * (i % 9), kind, cid, i % 1000, 1000 + i // 3)


def cols_of(entries: list[Entry]) -> EntryColumns:
    c = ColdEntries(entries[0].index if entries else 1)
    c.extend(entries)
    return EntryColumns(c)


# -- EntryColumns as a sequence ------------------------------------------------------------


def test_entry_columns_is_a_read_only_sequence_of_entries() -> None:
    ents = [mk(i, 2, i) for i in range(5, 30)]
    v = cols_of(ents)
    assert len(v) == 25 and v.first_index == 5
    assert v[0] == ents[0] and v[-1] == ents[-1] and v[7] == ents[7]
    with pytest.raises(IndexError):
        v[25]
    with pytest.raises(IndexError):
        v[-26]
    assert list(v) == ents and v == ents and v == tuple(ents) and ents == v
    assert v != ents[:-1] and v != [*ents[:-1], mk(29, 3, 29)] and v != "x"
    s = v[3:10]
    assert isinstance(s, EntryColumns) and s == ents[3:10] and s.first_index == 8
    assert s[1:3] == ents[4:6] and v[20:100] == ents[20:] and v[10:3] == []
    assert v[::2] == ents[::2] and v[::-1] == ents[::-1]
    assert "8..14" in repr(s)
    assert cols_of([]) == [] and not cols_of([])


def test_take_hands_over_exactly_the_view_and_voids_every_view() -> None:
    ents = [mk(i, 1, i) for i in range(1, 41)]
    v = cols_of(ents)
    s = v[10:30]
    assert isinstance(s, EntryColumns)
    cols = s.take()
    assert (cols.first, cols.last) == (11, 30)
    assert cols.entries(11, 31) == ents[10:30]
    dead: EntryColumns
    for dead in (v, s):
        with pytest.raises(RuntimeError, match="handed over"):
            dead[0]
        with pytest.raises(RuntimeError):
            list(dead)
        with pytest.raises(RuntimeError):
            dead.take()


# -- RaftLog adopting columns --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(0, 6), st.integers(1, 50), st.integers(0, 40),
       st.integers(0, 3))
def test_raft_log_adopting_columns_equals_one_built_from_a_list(
    n: int, offset: int, hot: int, cut: int, jump: int
) -> None:
    ents = [mk(offset + i, 1 + i // 6, i) for i in range(1, n + 1)]
    a = RaftLog(cols_of(ents) if ents else EntryColumns(ColdEntries(offset + 1)), offset,
                1 if offset else 0, hot_entries=hot)
    b = RaftLog(ents, offset, 1 if offset else 0, hot_entries=NEVER)
    assert state(a) == state(b)
    # a new leader overwrites an uncommitted suffix, maybe deep in the recovered prefix
    prev = offset + min(cut, n)
    if prev < a.last_index():
        t = (a.term(prev) or 0) + jump + 1
        new = [mk(prev + 1 + j, t, 500 + j) for j in range(3)]
        assert a.maybe_append(prev, new) == b.maybe_append(prev, new)
    assert state(a) == state(b)
    a.commit_to(a.last_index())
    b.commit_to(b.last_index())
    assert a.take_committed(10**6) == b.take_committed(10**6)
    a.applied_to(a.last_index())
    b.applied_to(b.last_index())
    a.compact(min(a.applied, a.stable, offset + cut))
    b.compact(min(b.applied, b.stable, offset + cut))
    assert state(a) == state(b)


def test_raft_log_refuses_columns_that_do_not_continue_the_offset() -> None:
    with pytest.raises(ValueError, match="not contiguous"):
        RaftLog(cols_of([mk(i, 1, i) for i in range(5, 9)]), 2, 1)


# -- through the stores and recover() --------------------------------------------------------


def _write(store: LogStore, script: list[tuple[int, int]]) -> list[Entry]:
    """Append per ``script`` (how many entries; where a conflicting append starts, as a
    distance back from the end); returns the model list of what the store must hold."""
    model: list[Entry] = []
    term = 1
    n = 0
    for k, back in script:
        start = max(1, len(model) + 1 - back)
        if start <= len(model):
            term += 1  # a new leader's entries
        new = [mk(start + j, term, n + j) for j in range(k)]
        n += k
        store.append(new)
        store.sync()
        del model[start - 1 :]
        model.extend(new)
    store.set_hard_state(HardState(term, "n1", 0))
    store.sync()
    return model


SCRIPTS = st.lists(st.tuples(st.integers(1, 30), st.integers(0, 40)), max_size=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(SCRIPTS, st.sampled_from(["file", "sqlite"]), st.integers(1, 8), st.integers(0, 60),
       st.integers(1, 400), st.booleans())
def test_log_recovered_through_columns_equals_one_built_from_objects(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[int, int]], kind: str,
    hot: int, snap_at: int, window: int, cut_deep: bool,
) -> None:
    d = tmp_path_factory.mktemp("log")

    def open_store() -> LogStore:
        if kind == "file":
            return FileLogStore(str(d / "wal"), segment_bytes_max=200)
        return SqliteLogStore(str(d / "log.sqlite3"))

    s = open_store()
    model = _write(s, script)
    s.close()
    old_window = scan_mod._WINDOW
    scan_mod._WINDOW = window  # the scan's fast path stops and resumes every few bytes
    try:
        s = open_store()
        hs, got = s.load()
    finally:
        scan_mod._WINDOW = old_window
    assert isinstance(got, EntryColumns) and got == model
    snaps = None
    meta = NO_SNAPSHOT
    if model and snap_at:
        at = min(snap_at, len(model))
        meta = SnapshotMeta(at, model[at - 1].term)
        snaps = SnapshotStore(str(d / "snaps"))
        snaps.write(meta, b"")
        s.compact(at - 1)
        s.sync()
    s.close()
    s = open_store()
    rec = recover(s, snaps)
    assert rec.hard_state == hs and rec.snapshot.index == meta.index
    tail = model[meta.index :]
    assert rec.entries == tail
    a = RaftLog(rec.entries, meta.index, meta.term, hot_entries=hot)
    b = RaftLog(tail, meta.index, meta.term, hot_entries=NEVER)
    assert state(a) == state(b)
    # a leader of a later term overwrites the recovered (uncommitted) suffix, in the log
    # and in the store (whose truncation uses the frame offsets found by the scan)
    if a.last_index() > a.offset:
        prev = a.offset if cut_deep else a.last_index() - 1
        t = a.last_term() + 1
        new = [mk(prev + 1 + j, t, 900 + j) for j in range(2)]
        assert a.maybe_append(prev, new) == b.maybe_append(prev, new)
        assert state(a) == state(b)
        s.append(new)
        s.sync()
        model[prev:] = new
    s.close()
    s = open_store()
    assert s.load()[1] == model[s.first_index() - 1 :]
    s.close()


def test_fast_scan_windows_still_name_file_and_offset_of_a_flipped_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_mod, "_WINDOW", 64)
    entries = [mk(i, 1, i) for i in range(1, 80)]
    s = FileLogStore(str(tmp_path), run_min_entries=FRAME_PER_ENTRY)
    s.append(entries)
    s.sync()
    offsets = [s.entry_offset(e.index)[1] for e in entries]
    path = s.segment_paths()[0]
    s.close()
    raw = Path(path).read_bytes()
    for k in (0, 1, 40, 77):
        for where in (0, 5, 8, 9, 17):  # length, crc, tag, index, term
            Path(path).write_bytes(raw)
            with open(path, "r+b") as f:
                f.seek(offsets[k] + where)
                f.write(bytes([raw[offsets[k] + where] ^ 0x5A]))
            with pytest.raises(CorruptLogError) as info:
                FileLogStore(str(tmp_path), run_min_entries=FRAME_PER_ENTRY)
            assert (info.value.path, info.value.offset) == (path, offsets[k])
    Path(path).write_bytes(raw)
    s = FileLogStore(str(tmp_path), run_min_entries=FRAME_PER_ENTRY)
    assert s.load()[1] == entries
    s.close()


def test_torn_tail_behind_a_fast_run_is_cut(tmp_path: Path) -> None:
    entries = [mk(i, 1, i) for i in range(1, 50)]
    s = FileLogStore(str(tmp_path), run_min_entries=FRAME_PER_ENTRY)
    s.append(entries)
    s.sync()
    off = s.entry_offset(49)[1]
    path = s.segment_paths()[0]
    s.close()
    os.truncate(path, off + 11)
    s = FileLogStore(str(tmp_path), run_min_entries=FRAME_PER_ENTRY)
    assert s.load()[1] == entries[:-1] and os.path.getsize(path) == off
    s.append([mk(49, 2, 1)])  # and the log goes on from there
    s.sync()
    s.close()
    s = FileLogStore(str(tmp_path), run_min_entries=FRAME_PER_ENTRY)
    assert s.load()[1] == [*entries[:-1], mk(49, 2, 1)]
    s.close()


def test_a_second_load_reads_the_segments_again(tmp_path: Path) -> None:
    entries = [mk(i, 1, i) for i in range(1, 60)]
    s = FileLogStore(str(tmp_path), segment_bytes_max=300)
    s.append(entries)
    s.sync()
    s.close()
    s = FileLogStore(str(tmp_path), segment_bytes_max=300)
    assert s.load()[1] == entries  # the columns recovered on open
    assert s.load()[1] == entries  # read back from the files
    raw_first = s.segment_paths()[0]
    os.truncate(raw_first, 30)
    with pytest.raises(CorruptLogError):
        s.load()
    s.close()


def test_entries_written_by_encode_frames_decode_to_the_same_columns(tmp_path: Path) -> None:
    """The codec's two decoders (fast run, careful one-by-one) agree on every field."""
    entries = [mk(i, 3, i * 7) for i in range(1, 200)]
    FileLogStore(str(tmp_path)).close()
    buf, _ = encode_frames(entries)
    (tmp_path / "wal-00000000000000000001.log").write_bytes(buf)
    s = FileLogStore(str(tmp_path))
    got = s.load()[1]
    assert got == entries and [e.kind for e in got] == [e.kind for e in entries]
    assert all(type(e.kind) is EntryKind for e in got)
    s.close()


def test_recovery_does_not_build_an_object_per_entry(tmp_path: Path) -> None:
    n = 100_000
    s = FileLogStore(str(tmp_path))
    for lo in range(1, n + 1, 10_000):
        s.append([Entry(i, 1, b"0123456789", EntryKind.NORMAL, f"client-{i % 16}", i, i // 100)
                  for i in range(lo, lo + 10_000)])
    s.sync()
    s.close()
    tracemalloc.start()
    s = FileLogStore(str(tmp_path))
    _hs, got = s.load()
    log = RaftLog(got, hot_entries=1000)
    _size, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    s.close()
    assert log.last_index() == n and log.entry(n // 2).seq == n // 2
    assert peak / n < 80, f"{peak / n:.0f} bytes per entry at the peak of recovery"
