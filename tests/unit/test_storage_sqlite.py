"""SqliteLogStore specifics: journal settings, group commit, damaged databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from udpraft.core.types import Entry, HardState
from udpraft.storage import CorruptLogError, SqliteLogStore, StorageError


def test_wal_journal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    s = SqliteLogStore(str(path))
    s.append([Entry(1, 1)])
    s.sync()
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in the file
    db.close()


def test_unsynced_writes_are_invisible_to_other_readers(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    s = SqliteLogStore(str(path))
    s.append([Entry(1, 1), Entry(2, 1)])
    s.set_hard_state(HardState(1, "n1", 0))
    s.sync()
    s.append([Entry(3, 1)])
    s.set_hard_state(HardState(2, "", 2))
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 2
    assert dict(reader.execute("SELECT key, value FROM meta"))["term"] == 1
    s.sync()  # one commit for both
    assert reader.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 3
    assert dict(reader.execute("SELECT key, value FROM meta"))["term"] == 2
    reader.close()
    s.close()


def test_values_outside_int64_are_rejected_before_any_write(tmp_path: Path) -> None:
    s = SqliteLogStore(str(tmp_path / "log.sqlite3"))
    s.append([Entry(1, 1)])
    with pytest.raises(ValueError, match="outside"):
        s.append([Entry(2, 1), Entry(3, 2**63)])
    with pytest.raises(ValueError, match="outside"):
        s.set_hard_state(HardState(term=2**63))
    assert s.load() == (HardState(), [Entry(1, 1)])
    s.close()


def test_garbage_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptLogError, match=r"log\.sqlite3"):
        SqliteLogStore(str(path))


def test_hole_in_the_rows_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    s = SqliteLogStore(str(path))
    s.append([Entry(i, 1) for i in range(1, 6)])
    s.close()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM log WHERE idx = 3")
    db.commit()
    db.close()
    with pytest.raises(CorruptLogError, match="not contiguous"):
        SqliteLogStore(str(path))


def test_bad_kind_is_reported_on_load(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    s = SqliteLogStore(str(path))
    s.append([Entry(1, 1)])
    s.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE log SET kind = 7")
    db.commit()
    db.close()
    s = SqliteLogStore(str(path))
    with pytest.raises(CorruptLogError, match="kind 7"):
        s.load()
    s.close()


class _FailingDb:
    """Delegates to a real connection, but every write statement hits a disk error."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("disk I/O error")

    executemany = execute


def test_a_failed_write_poisons_the_store(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    s = SqliteLogStore(str(path))
    s.append([Entry(1, 1)])
    s.sync()
    real = s._db
    s._db = _FailingDb(real)  # type: ignore[assignment]
    with pytest.raises(StorageError, match="disk I/O error"):
        s.append([Entry(2, 1)])
    s._db = real
    with pytest.raises(StorageError, match="failed earlier"):
        s.sync()
    s.close()
    s = SqliteLogStore(str(path))
    assert s.load()[1] == [Entry(1, 1)]
    s.close()
