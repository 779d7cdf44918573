"""FileLogStore: torn tails, corruption, segments, durability ordering, failure handling."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from udpraft.core.types import Entry, EntryKind, HardState
from udpraft.storage import CorruptLogError, FileLogStore, StorageError, _fs
from udpraft.storage import file as file_mod
from udpraft.storage.codec import FRAME_HEADER_SIZE, encode_frames
from udpraft.storage.hardstate import HARD_STATE_NAME, SLOT_STRIDE

LOGGER = "udpraft.storage.file"


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    # Varying sizes so record boundaries do not fall on a regular grid.
    return [
        Entry(i, term, bytes([i % 256]) * (i % 7 * 5), EntryKind.NORMAL, f"c{i % 4}", i, i)
        for i in range(lo, hi + 1)
    ]


def write_log(
    d: Path, entries: list[Entry], commit: int = 0, **kw: int
) -> tuple[list[str], list[int]]:
    """Write ``entries`` (in batches of 5), sync, close; return segment paths and offsets."""
    s = FileLogStore(str(d), **kw)
    for i in range(0, len(entries), 5):
        s.append(entries[i : i + 5])
    s.set_hard_state(HardState(3, "n1", commit))
    s.sync()
    paths = s.segment_paths()
    offsets = [s.entry_offset(e.index)[1] for e in entries]
    s.close()
    return paths, offsets


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def cut(path: str, raw: bytes, at: int) -> None:
    with open(path, "wb") as f:
        f.write(raw[:at])


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        yield caplog


# -- crash at any point: torn tails are cut, with a warning -------------------------------


@pytest.mark.parametrize("segment_bytes_max", [1 << 20, 300])
def test_torn_tail_at_every_offset_of_the_last_two_records(
    tmp_path: Path, warnings: pytest.LogCaptureFixture, segment_bytes_max: int
) -> None:
    entries = ents(1, 40)
    paths, offsets = write_log(tmp_path, entries, 30, segment_bytes_max=segment_bytes_max)
    last = paths[-1]
    raw = Path(last).read_bytes()
    first_in_last = int(Path(last).name[4:24])
    # Frame start offsets in the last segment, plus the end of the file.
    bounds = [o for e, o in zip(entries, offsets) if e.index >= first_in_last] + [len(raw)]
    assert len(bounds) >= 3, "need two records in the last segment"
    for at in range(bounds[-3], len(raw)):
        cut(last, raw, at)
        warnings.clear()
        s = FileLogStore(str(tmp_path), segment_bytes_max=segment_bytes_max)
        hs, got = s.load()
        complete = first_in_last - 1 + sum(1 for b in bounds[1:] if b <= at)
        assert got == entries[:complete], at
        assert hs == HardState(3, "n1", 30)
        assert s.last_index() == complete
        good_end = max(b for b in bounds if b <= at)
        assert os.path.getsize(last) == good_end
        if at == good_end:
            assert not warnings.records
        else:
            (rec,) = warnings.records
            assert os.path.basename(last) in rec.getMessage()
            assert f"offset {good_end}" in rec.getMessage()
        if at % 8 == 0 or at == len(raw) - 1:  # and the log goes on from there
            s.append(ents(complete + 1, complete + 1, term=9))
        s.close()
    s = FileLogStore(str(tmp_path))
    assert s.load()[1] == entries[:39] + ents(40, 40, term=9)  # from the last cut
    s.close()


@pytest.mark.parametrize("tail", [bytes(4096), b"\x00\x00\x00", b"\xff" * 100])
def test_garbage_tail_is_cut(
    tmp_path: Path, warnings: pytest.LogCaptureFixture, tail: bytes
) -> None:
    entries = ents(1, 10)
    paths, _ = write_log(tmp_path, entries)
    size = os.path.getsize(paths[-1])
    with open(paths[-1], "ab") as f:
        f.write(tail)
    s = FileLogStore(str(tmp_path))
    assert s.load()[1] == entries
    assert os.path.getsize(paths[-1]) == size
    assert f"offset {size}" in warnings.text
    s.close()


def test_damaged_last_record_counts_as_torn(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    # A flipped byte in the very last record cannot be told from a torn write; it is cut.
    entries = ents(1, 10)
    paths, offsets = write_log(tmp_path, entries)
    flip(paths[-1], offsets[-1] + FRAME_HEADER_SIZE + 3)
    s = FileLogStore(str(tmp_path))
    assert s.load()[1] == entries[:-1]
    assert "crc mismatch" in warnings.text
    s.close()


def test_torn_tail_may_not_reach_below_the_durable_commit(tmp_path: Path) -> None:
    entries = ents(1, 10)
    paths, offsets = write_log(tmp_path, entries, commit=10)
    os.truncate(paths[-1], offsets[-1] + 3)  # entry 10 was synced before commit=10 was
    with pytest.raises(CorruptLogError, match=f"offset {offsets[-1]}: .*commit 10"):
        FileLogStore(str(tmp_path))
    os.truncate(paths[-1], offsets[-1])  # a clean end is not checked: nothing is cut
    FileLogStore(str(tmp_path)).close()


def test_no_segments_while_the_hard_state_has_a_commit_raises(tmp_path: Path) -> None:
    paths, _ = write_log(tmp_path, ents(1, 3), commit=3)
    os.unlink(paths[0])
    with pytest.raises(CorruptLogError, match="no log segment"):
        FileLogStore(str(tmp_path))


def test_new_data_dirs_are_created(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path / "a" / "b" / "wal"))
    s.append(ents(1, 1))
    s.close()
    assert (tmp_path / "a" / "b" / "wal" / "wal-00000000000000000001.log").exists()


# -- corruption: a bad record that is not the tail raises, naming file and offset --------


def test_flipped_byte_in_any_earlier_record_raises(tmp_path: Path) -> None:
    entries = ents(1, 12)
    paths, offsets = write_log(tmp_path, entries)
    path = paths[-1]
    raw = Path(path).read_bytes()
    ends = [*offsets[1:], len(raw)]
    for k in range(len(entries) - 1):
        for where in (0, 5, (ends[k] - offsets[k]) // 2):  # length, crc, payload
            Path(path).write_bytes(raw)
            flip(path, offsets[k] + where)
            with pytest.raises(CorruptLogError) as info:
                FileLogStore(str(tmp_path))
            assert info.value.path == path
            assert info.value.offset == offsets[k]
            assert os.path.basename(path) in str(info.value)
            assert f"offset {offsets[k]}" in str(info.value)
    Path(path).write_bytes(raw)
    s = FileLogStore(str(tmp_path))
    assert s.load()[1] == entries  # nothing was "repaired" by the failed opens
    s.close()


def test_bad_record_in_an_earlier_segment_raises(tmp_path: Path) -> None:
    entries = ents(1, 60)
    paths, offsets = write_log(tmp_path, entries, segment_bytes_max=300)
    assert len(paths) >= 3
    first = paths[0]
    size = os.path.getsize(first)
    # Even the last record of an earlier segment: it was synced before the next one began.
    last_off = max(o for e, o in zip(entries, offsets) if e.index < int(Path(paths[1]).name[4:24]))
    flip(first, (last_off + size) // 2)
    with pytest.raises(CorruptLogError, match=rf"{Path(first).name} at byte offset {last_off}"):
        FileLogStore(str(tmp_path))


def test_torn_earlier_segment_raises(tmp_path: Path) -> None:
    paths, _ = write_log(tmp_path, ents(1, 60), segment_bytes_max=300)
    size = os.path.getsize(paths[1])
    os.truncate(paths[1], size - 3)
    with pytest.raises(CorruptLogError, match=Path(paths[1]).name):
        FileLogStore(str(tmp_path))


def test_crc_valid_record_with_wrong_index_raises(tmp_path: Path) -> None:
    write_log(tmp_path, [])
    buf, offsets = encode_frames([*ents(1, 2), *ents(4, 5)])
    path = tmp_path / "wal-00000000000000000001.log"
    path.write_bytes(buf)
    with pytest.raises(CorruptLogError, match="entry index 4, expected 3") as info:
        FileLogStore(str(tmp_path))
    assert info.value.offset == offsets[2]


def test_missing_middle_segment_raises(tmp_path: Path) -> None:
    paths, _ = write_log(tmp_path, ents(1, 60), segment_bytes_max=300)
    os.unlink(paths[1])
    with pytest.raises(CorruptLogError, match="a segment is missing"):
        FileLogStore(str(tmp_path))


def test_missing_hard_state_with_segments_raises(tmp_path: Path) -> None:
    write_log(tmp_path, ents(1, 3))
    os.unlink(tmp_path / HARD_STATE_NAME)
    with pytest.raises(CorruptLogError, match="hard state file missing"):
        FileLogStore(str(tmp_path))


# -- hard state slots ---------------------------------------------------------------------


def test_torn_hard_state_slot_falls_back_to_the_previous_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = FileLogStore(str(tmp_path))
    s.set_hard_state(HardState(1, "a", 0))
    s.sync()  # seq 1 -> slot 1
    s.set_hard_state(HardState(2, "b", 0))
    s.sync()  # seq 2 -> slot 0
    s.close()
    hs_path = str(tmp_path / HARD_STATE_NAME)
    flip(hs_path, 20)  # slot 0 torn: as if the machine died writing seq 2
    with caplog.at_level(logging.WARNING):
        s = FileLogStore(str(tmp_path))
    assert s.load()[0] == HardState(1, "a", 0)
    assert "unreadable" in caplog.text
    s.set_hard_state(HardState(3, "c", 1))  # rewrites the torn slot, never the good one
    s.close()
    s = FileLogStore(str(tmp_path))
    assert s.load()[0] == HardState(3, "c", 1)
    s.close()
    flip(hs_path, 20)
    flip(hs_path, SLOT_STRIDE + 20)
    with pytest.raises(CorruptLogError, match="no valid hard state slot"):
        FileLogStore(str(tmp_path))


def test_leftover_hard_state_temp_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / (HARD_STATE_NAME + ".tmp")).write_bytes(b"half")
    FileLogStore(str(tmp_path)).close()
    assert not (tmp_path / (HARD_STATE_NAME + ".tmp")).exists()


# -- segments, truncation, compaction -----------------------------------------------------


def test_segments_roll_and_are_named_by_first_index(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path), segment_bytes_max=500)
    for lo in range(1, 200, 10):
        s.append(ents(lo, lo + 9))
    paths = s.segment_paths()
    assert len(paths) > 3
    for p in paths[:-1]:
        assert os.path.getsize(p) >= 500
    for p in paths:
        idx = int(Path(p).name[4:24])
        assert s.entry_offset(idx) == (p, 0)
    s.close()
    s = FileLogStore(str(tmp_path), segment_bytes_max=500)
    assert s.load()[1] == ents(1, 200)
    assert s.segment_paths() == paths
    s.close()


def test_truncation_across_segments_deletes_later_files(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path), segment_bytes_max=500)
    for lo in range(1, 200, 10):
        s.append(ents(lo, lo + 9))
    paths = s.segment_paths()
    s.append(ents(25, 26, term=2))
    kept = s.segment_paths()
    assert kept == [p for p in paths if int(Path(p).name[4:24]) <= 25]
    assert all(not os.path.exists(p) for p in paths if p not in kept)
    s.append(ents(27, 120, term=2))
    s.close()
    s = FileLogStore(str(tmp_path), segment_bytes_max=500)
    assert s.load()[1] == ents(1, 24) + ents(25, 120, term=2)
    s.close()


def test_compaction_unlinks_whole_old_segments(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path), segment_bytes_max=500)
    for lo in range(1, 200, 10):
        s.append(ents(lo, lo + 9))
    paths = s.segment_paths()
    s.compact(100)
    assert 1 < s.first_index() <= 101
    assert s.segment_paths() == [p for p in paths if os.path.exists(p)]
    assert s.segment_paths()[0].endswith(f"wal-{s.first_index():020d}.log")
    s.close()


# -- durability ordering and failures --------------------------------------------------------


class Recorder:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real_write_all = FileLogStore._write_all
        real_ftruncate = os.ftruncate
        real_unlink = os.unlink

        def wrap(name: str, fn: Callable[..., object]) -> Callable[..., object]:
            def inner(*a: object) -> object:
                self.calls.append(name)
                return fn(*a)

            return inner

        monkeypatch.setattr(file_mod, "fdatasync", wrap("fdatasync", _fs.fdatasync))
        monkeypatch.setattr(file_mod, "fsync_dir", wrap("fsync_dir", _fs.fsync_dir))
        monkeypatch.setattr(FileLogStore, "_write_all", wrap("write", real_write_all))
        monkeypatch.setattr(os, "ftruncate", wrap("ftruncate", real_ftruncate))
        monkeypatch.setattr(os, "unlink", wrap("unlink", real_unlink))


def test_group_commit_is_one_fdatasync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileLogStore(str(tmp_path))
    rec = Recorder(monkeypatch)
    for i in range(1, 51):
        s.append(ents(i, i))
    s.set_hard_state(HardState(1, "n1", 0))
    s.sync()
    assert rec.calls.count("write") == 50
    assert rec.calls.count("fdatasync") == 1  # the log; the hard state syncs its own file
    rec.calls.clear()
    s.set_hard_state(HardState(1, "n1", 0))  # unchanged: nothing to write
    s.sync()
    s.sync()
    assert rec.calls == []
    s.close()


def test_conflict_truncation_is_durable_before_new_entries_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = FileLogStore(str(tmp_path), segment_bytes_max=300)
    for lo in range(1, 100, 10):
        s.append(ents(lo, lo + 9))
    n_later = len(s.segment_paths()) - 1
    rec = Recorder(monkeypatch)
    s.append(ents(3, 4, term=2))
    # Old suffix gone for good (newest segment first), then the new entries.
    assert rec.calls == ["unlink", "fsync_dir"] * n_later + ["ftruncate", "fdatasync", "write"]
    s.close()


def test_roll_seals_the_old_segment_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileLogStore(str(tmp_path), segment_bytes_max=100)
    s.append(ents(1, 10))
    rec = Recorder(monkeypatch)
    s.append(ents(11, 12))
    assert rec.calls == ["fdatasync", "fsync_dir", "write"]
    s.close()


def test_failed_write_poisons_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileLogStore(str(tmp_path))
    s.append(ents(1, 5))
    s.sync()

    def enospc(self: FileLogStore, buf: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileLogStore, "_write_all", enospc)
    with pytest.raises(StorageError, match="write failed"):
        s.append(ents(6, 7))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="failed earlier"):
        s.append(ents(6, 7))
    with pytest.raises(StorageError, match="failed earlier"):
        s.sync()
    s.close()
    s = FileLogStore(str(tmp_path))
    assert s.load()[1] == ents(1, 5)
    s.close()


def test_failed_fsync_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileLogStore(str(tmp_path))
    s.append(ents(1, 5))

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(file_mod, "fdatasync", eio)
    with pytest.raises(StorageError, match="sync failed"):
        s.sync()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="failed earlier"):
        s.sync()  # the kernel may have dropped the dirty pages: a retry would lie
    s.close()
