"""Snapshot files (atomic, checksummed, keep 2, damage detection), recovery, store reset."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from udpraft.core.types import Entry, HardState, SnapshotMeta
from udpraft.io.snapshots import (
    HEADER_SIZE,
    SnapshotDamaged,
    SnapshotError,
    SnapshotStore,
    encode_header,
    recover,
    snapshot_name,
)
from udpraft.storage import FileLogStore, MemoryLogStore, SqliteLogStore
from udpraft.storage.base import LogStore
from udpraft.storage.file import RESET_NAME


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, b"e%d" % i) for i in range(lo, hi + 1)]


def body(n: int) -> bytes:
    return bytes(range(256)) * n + b"tail"


# ----------------------------------------------------------------------- files


def test_write_read_round_trip_and_keep_two(tmp_path: Path) -> None:
    s = SnapshotStore(str(tmp_path))
    for i in (10, 20, 30):
        path = s.write(SnapshotMeta(i, 2), body(i))
        assert os.path.basename(path) == snapshot_name(SnapshotMeta(i, 2))
        assert s.read(path) == (SnapshotMeta(i, 2), body(i))
    assert [m.index for m, _p in s.files()] == [20, 30]
    assert s.load_latest() == (SnapshotMeta(30, 2), body(30))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_empty_body_and_header_size(tmp_path: Path) -> None:
    s = SnapshotStore(str(tmp_path))
    path = s.write(SnapshotMeta(1, 1), b"")
    assert os.path.getsize(path) == HEADER_SIZE + 4  # the header and an empty membership field
    assert s.read(path) == (SnapshotMeta(1, 1), b"")


def test_membership_is_stored_and_checked(tmp_path: Path) -> None:
    s = SnapshotStore(str(tmp_path))
    conf = "v:n1,n2,n4;l:;r:n3;a:n4=127.0.0.1:7004/127.0.0.1:2384"
    path = s.write(SnapshotMeta(9, 2, conf), b"state")
    assert s.read(path) == (SnapshotMeta(9, 2, conf), b"state")
    assert s.load_latest() == (SnapshotMeta(9, 2, conf), b"state")
    # A membership length that overruns the body is damage, even with a matching checksum.
    raw = bytearray(open(path, "rb").read())
    body = bytes(raw[HEADER_SIZE:])
    bad_body = (10_000).to_bytes(4, "little") + body[4:]
    meta = SnapshotMeta(9, 2)
    open(path, "wb").write(encode_header(meta, bad_body) + bad_body)
    with pytest.raises(SnapshotDamaged, match="membership field"):
        s.read(path)


def test_leftovers_of_interrupted_writes_and_transfers_are_removed(tmp_path: Path) -> None:
    (tmp_path / (snapshot_name(SnapshotMeta(5, 1)) + ".tmp")).write_bytes(b"half")
    (tmp_path / "incoming-9-1-abcd.part").write_bytes(b"half")
    SnapshotStore(str(tmp_path))
    assert os.listdir(tmp_path) == []


def _damage_cases(size: int) -> list[tuple[str, Callable[[bytearray], bytearray]]]:
    def flip(pos: int) -> Callable[[bytearray], bytearray]:
        def f(b: bytearray) -> bytearray:
            b[pos] ^= 0x10
            return b

        return f

    cases: list[tuple[str, Callable[[bytearray], bytearray]]] = [
        (f"flip@{p}", flip(p)) for p in (0, 9, 13, 17, 25, 33, 41, 57, HEADER_SIZE, size - 1)
    ]
    cases += [
        ("truncated-header", lambda b: b[:30]),
        ("truncated-body", lambda b: b[: size - 7]),
        ("empty", lambda b: bytearray()),
        ("appended", lambda b: b + b"zz"),
    ]
    return cases


@pytest.mark.parametrize("case", range(14))
def test_damaged_newest_is_skipped_with_a_warning_naming_it(
    tmp_path: Path, case: int, caplog: pytest.LogCaptureFixture
) -> None:
    s = SnapshotStore(str(tmp_path))
    s.write(SnapshotMeta(10, 1), body(3))
    newest = s.write(SnapshotMeta(20, 1), body(4))
    raw = bytearray(Path(newest).read_bytes())
    name, damage = _damage_cases(len(raw))[case]
    Path(newest).write_bytes(bytes(damage(raw)))
    with pytest.raises(SnapshotDamaged):
        s.read(newest)
    with caplog.at_level(logging.WARNING, logger="udpraft.snapshots"):
        got = s.load_latest()
    assert got == (SnapshotMeta(10, 1), body(3)), name
    assert newest in caplog.text and "damaged" in caplog.text


def test_every_file_damaged_gives_none(tmp_path: Path) -> None:
    s = SnapshotStore(str(tmp_path))
    p = s.write(SnapshotMeta(3, 1), b"abc")
    Path(p).write_bytes(b"garbage" * 20)
    assert s.load_latest() is None


def test_renamed_file_does_not_pass_for_another_snapshot(tmp_path: Path) -> None:
    s = SnapshotStore(str(tmp_path))
    p = s.write(SnapshotMeta(3, 1), b"abc")
    os.rename(p, s.path_for(SnapshotMeta(4, 1)))
    with pytest.raises(SnapshotDamaged, match="header says"):
        s.read(s.path_for(SnapshotMeta(4, 1)))


def test_install_moves_a_received_file_into_place(tmp_path: Path) -> None:
    a = SnapshotStore(str(tmp_path / "a"))
    b = SnapshotStore(str(tmp_path / "b"))
    src = a.write(SnapshotMeta(7, 3), body(2))
    part = b.incoming_path(SnapshotMeta(7, 3), "x")
    Path(part).write_bytes(Path(src).read_bytes())
    assert b.read(part, expect=SnapshotMeta(7, 3))[1] == body(2)
    b.install(part, SnapshotMeta(7, 3))
    assert b.load_latest() == (SnapshotMeta(7, 3), body(2))
    assert not os.path.exists(part)


# ----------------------------------------------------------------------- stores

BACKENDS: dict[str, Callable[[Path], LogStore]] = {
    "memory": lambda d: MemoryLogStore(),
    "file": lambda d: FileLogStore(str(d / "wal"), segment_bytes_max=300),
    "sqlite": lambda d: SqliteLogStore(str(d / "log.sqlite3")),
}


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_reset_empties_the_log_and_moves_its_start(tmp_path: Path, kind: str) -> None:
    s = BACKENDS[kind](tmp_path)
    s.append(ents(1, 40))
    s.set_hard_state(HardState(3, "n1", 40))
    s.sync()
    s.reset(101)
    s.sync()
    assert (s.first_index(), s.last_index()) == (101, 100)
    assert s.load() == (HardState(3, "n1", 40), [])
    with pytest.raises(ValueError):
        s.append(ents(100, 100))
    s.append(ents(101, 105, term=4))
    s.sync()
    if kind != "memory":
        s.close()
        s = BACKENDS[kind](tmp_path)
    assert (s.first_index(), s.last_index()) == (101, 105)
    assert s.load()[1] == ents(101, 105, term=4)
    with pytest.raises(ValueError):
        s.reset(0)
    s.close()


def test_file_reset_interrupted_by_a_crash_is_finished_on_open(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    s = FileLogStore(str(d), segment_bytes_max=300)
    s.append(ents(1, 40))
    s.sync()
    s.close()
    (d / RESET_NAME).write_text("77\n")  # the intent was durable; the crash came after
    s = FileLogStore(str(d), segment_bytes_max=300)
    assert (s.first_index(), s.last_index()) == (77, 76)
    assert s.load()[1] == []
    assert not (d / RESET_NAME).exists()
    s.close()
    (d / (RESET_NAME + ".tmp")).write_text("5")  # never renamed: nothing happened
    s = FileLogStore(str(d), segment_bytes_max=300)
    assert s.first_index() == 77 and not (d / (RESET_NAME + ".tmp")).exists()
    s.close()


def test_file_compaction_seals_the_active_segment_so_the_log_stays_bounded(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path), segment_bytes_max=1 << 30)  # segments never fill up
    last = 0
    for _ in range(10):
        s.append(ents(last + 1, last + 50))
        last += 50
        s.sync()
        s.compact(last - 50)  # the runtime compacts to the previous snapshot
    assert len(s.segment_paths()) <= 3
    assert last - s.first_index() < 150
    s.close()
    s = FileLogStore(str(tmp_path))
    assert s.load()[1] == ents(s.first_index(), last)
    s.close()


# ----------------------------------------------------------------------- recovery


def _store_with(tmp_path: Path, lo: int, hi: int, term: int = 1) -> FileLogStore:
    s = FileLogStore(str(tmp_path / "wal"))
    s.append(ents(1, hi, term))
    s.set_hard_state(HardState(term, "", hi))
    if lo > 1:
        s.compact(lo - 1)
    s.sync()
    return s


def test_recover_without_snapshots(tmp_path: Path) -> None:
    s = _store_with(tmp_path, 1, 20)
    rec = recover(s, SnapshotStore(str(tmp_path / "snaps")))
    assert rec.snapshot.index == 0 and rec.body is None and rec.entries == ents(1, 20)
    assert recover(s, None).entries == ents(1, 20)


def test_recover_drops_entries_the_snapshot_covers(tmp_path: Path) -> None:
    s = _store_with(tmp_path, 1, 60)  # the store's compaction lagged the snapshot
    snaps = SnapshotStore(str(tmp_path / "snaps"))
    snaps.write(SnapshotMeta(40, 1), b"state@40")
    rec = recover(s, snaps)
    assert rec.snapshot == SnapshotMeta(40, 1) and rec.body == b"state@40"
    assert rec.entries == ents(41, 60)
    assert rec.hard_state == HardState(1, "", 60)


def test_recover_falls_back_to_the_previous_snapshot(tmp_path: Path) -> None:
    s = _store_with(tmp_path, 1, 60)
    snaps = SnapshotStore(str(tmp_path / "snaps"))
    snaps.write(SnapshotMeta(30, 1), b"state@30")
    p = snaps.write(SnapshotMeta(50, 1), b"state@50")
    Path(p).write_bytes(Path(p).read_bytes()[:-1])
    rec = recover(s, snaps)
    assert rec.snapshot == SnapshotMeta(30, 1) and rec.entries == ents(31, 60)


def test_recover_gap_between_snapshot_and_log_is_an_error(tmp_path: Path) -> None:
    s = FileLogStore(str(tmp_path / "wal"))
    s.reset(51)
    s.append(ents(51, 60))
    s.sync()
    snaps = SnapshotStore(str(tmp_path / "snaps"))
    snaps.write(SnapshotMeta(30, 1), b"old")
    with pytest.raises(SnapshotError, match=r"31\.\.50 are missing"):
        recover(s, snaps)
    with pytest.raises(SnapshotError, match="no valid snapshot"):
        recover(s, SnapshotStore(str(tmp_path / "empty")))


@pytest.mark.parametrize("case", ["other-term", "short"])
def test_recover_resets_a_log_that_does_not_continue_the_snapshot(tmp_path: Path, case: str) -> None:
    # A snapshot installed from the leader whose log reset did not happen before a crash.
    s = _store_with(tmp_path, 1, 60 if case == "other-term" else 20)
    snaps = SnapshotStore(str(tmp_path / "snaps"))
    snaps.write(SnapshotMeta(40, 2), b"leader state")
    rec = recover(s, snaps)
    assert rec.snapshot == SnapshotMeta(40, 2) and rec.entries == []
    assert (s.first_index(), s.last_index()) == (41, 40)
    s.close()
    s = FileLogStore(str(tmp_path / "wal"))
    assert recover(s, snaps).entries == []
    s.append(ents(41, 42, 2))
    s.close()
