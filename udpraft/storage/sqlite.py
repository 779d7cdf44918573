"""``SqliteLogStore``: the Raft log in one SQLite database (WAL journal, synchronous=FULL).

How this works: two tables,

    log(idx INTEGER PRIMARY KEY, term, kind, client_id, seq, ts_ms, data BLOB)
    meta(key TEXT PRIMARY KEY, value)    -- term, vote, commit, first_index

``append``, ``set_hard_state``, ``compact`` and ``reset`` open a transaction if none is open and add
to it; ``sync`` commits it. So one commit, which with ``journal_mode=WAL`` and
``synchronous=FULL`` is one fsync of SQLite's WAL file, covers every write since the last
sync: group commit, and SQLite supplies the atomicity. A process killed before ``sync``
leaves an uncommitted transaction that SQLite rolls back on the next open: the store comes
back exactly as of the last sync. A conflict truncation (Raft §5.3) is a ``DELETE idx >= i``
in the same transaction as the new rows, so no mix of old and new suffix can survive.

Compared with the file backend this trades speed (per-row Python-to-SQLite overhead) for
a format any ``sqlite3`` shell can inspect. SQLite integers are signed 64-bit, so index,
term, seq and ts_ms must stay below 2**63 (plenty). A damaged database surfaces as
``CorruptLogError`` with offset 0: SQLite does not tell where. A failed write poisons the
store (crash-only): SQLite may have rolled back the open transaction with it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence

from udpraft.core.columns import ColdEntries, EntryColumns
from udpraft.core.types import Entry, EntryKind, HardState
from udpraft.storage._fs import lock_file, make_dirs
from udpraft.storage.base import (
    CorruptLogError,
    Pieces,
    StorageError,
    check_append,
    clamp_compact,
)
from udpraft.storage.codec import CLIENT_ID_BYTES_MAX, PAYLOAD_BYTES_MAX

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
"""
_INSERT = "INSERT INTO log (idx, term, kind, client_id, seq, ts_ms, data) VALUES (?,?,?,?,?,?,?)"
_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_KINDS = {k.value: k for k in EntryKind}
_INT64_MAX = (1 << 63) - 1


def _check_entry(e: Entry) -> None:
    """Hold sqlite rows to the limits of the file format, so backends stay swappable."""
    _check_int64(e.index, e.term, e.seq, e.ts_ms)
    # A str of n code points encodes to at most 4n bytes: encode only when it may not fit.
    cid_may_overflow = len(e.client_id) * 4 > CLIENT_ID_BYTES_MAX
    if cid_may_overflow and len(e.client_id.encode("utf-8")) > CLIENT_ID_BYTES_MAX:
        raise ValueError(f"entry {e.index}: client id over {CLIENT_ID_BYTES_MAX} bytes")
    if len(e.data) > PAYLOAD_BYTES_MAX:
        raise ValueError(f"entry {e.index}: data over {PAYLOAD_BYTES_MAX} bytes")


def _check_int64(*values: int) -> None:
    """Reject what SQLite cannot store (or the file codec would refuse) before any write."""
    for v in values:
        if not 0 <= v <= _INT64_MAX:
            raise ValueError(f"{v} is outside 0..2**63-1")


class SqliteLogStore:
    """Log and hard state in the SQLite database at ``path`` (parent dir created)."""

    def __init__(self, path: str) -> None:
        self._path = os.path.abspath(path)
        make_dirs(os.path.dirname(self._path))
        self._lock_fd = lock_file(self._path + ".lock", f"sqlite log {self._path}")
        self._closed = False
        self._failed: sqlite3.Error | None = None
        try:
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._release()
            raise self._wrap(exc) from exc
        except BaseException:
            self._release()
            raise

    def _wrap(self, exc: sqlite3.Error) -> StorageError:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.OperationalError | sqlite3.IntegrityError
        ):
            return CorruptLogError(self._path, 0, f"sqlite: {exc}")
        return StorageError(f"sqlite log {self._path}: {exc}")

    def _open(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"sqlite log {self._path}: cannot use WAL journal (got {mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self._hs = HardState(
            term=int(meta.get("term", 0)),
            vote=str(meta.get("vote", "")),
            commit=int(meta.get("commit", 0)),
        )
        self._first = int(meta.get("first_index", 1))
        lo, hi, count = self._db.execute("SELECT MIN(idx), MAX(idx), COUNT(*) FROM log").fetchone()
        if count == 0:
            self._last = self._first - 1
        elif lo != self._first or hi - lo + 1 != count:
            raise CorruptLogError(
                self._path,
                0,
                f"log rows {lo}..{hi} ({count} rows) not contiguous from {self._first}",
            )
        else:
            self._last = hi

    def _check(self) -> None:
        if self._closed:
            raise StorageError(f"sqlite log {self._path} is closed")
        if self._failed is not None:
            raise StorageError(f"sqlite log {self._path} failed earlier: {self._failed!r}")

    def _fail(self, exc: sqlite3.Error) -> StorageError:
        # SQLite may roll back the whole open transaction on an I/O error or a full disk,
        # taking earlier unsynced writes with it: our view of the log can no longer be
        # trusted. Crash-only: refuse further use; a restart reloads what is durable.
        self._failed = exc
        return self._wrap(exc)

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def load(self) -> tuple[HardState, EntryColumns]:
        """The hard state and the log as compact columns (``EntryColumns``): rows go
        straight into them, never one ``Entry`` object per row."""
        self._check()
        cols = ColdEntries(self._first)
        add = cols.append
        expected = self._first
        try:
            rows = self._db.execute(
                "SELECT idx, term, kind, client_id, seq, ts_ms, data FROM log ORDER BY idx"
            )
            for idx, term, kind, client_id, seq, ts_ms, data in rows:
                if idx != expected or kind not in _KINDS:
                    raise CorruptLogError(self._path, 0, f"bad log row {idx} (kind {kind})")
                add(term, kind, client_id, seq, ts_ms, data)
                expected += 1
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from exc
        except (TypeError, OverflowError) as exc:  # a value of the wrong type in a row
            raise CorruptLogError(self._path, 0, f"bad log row {expected}: {exc}") from None
        return self._hs, EntryColumns(cols)

    def first_index(self) -> int:
        return self._first

    def last_index(self) -> int:
        return self._last

    def append(self, entries: Sequence[Entry], pieces: Pieces | None = None) -> None:
        self._check()
        if not entries:
            return
        check_append(self._first, self._last, entries)
        for e in entries:
            _check_entry(e)
        rows = [
            (e.index, e.term, int(e.kind), e.client_id, e.seq, e.ts_ms, e.data) for e in entries
        ]
        try:
            self._begin()
            if entries[0].index <= self._last:  # Raft §5.3: drop the conflicting suffix
                self._db.execute("DELETE FROM log WHERE idx >= ?", (entries[0].index,))
            self._db.executemany(_INSERT, rows)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self._last = entries[-1].index

    def set_hard_state(self, hs: HardState) -> None:
        self._check()
        if hs == self._hs:
            return
        _check_int64(hs.term, hs.commit)
        try:
            self._begin()
            self._db.executemany(
                _SET_META, [("term", hs.term), ("vote", hs.vote), ("commit", hs.commit)]
            )
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self._hs = hs

    def sync(self) -> None:
        self._check()
        if self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc

    def compact(self, upto_index: int) -> None:
        self._check()
        upto = clamp_compact(self._first, self._last, upto_index)
        if upto < self._first:
            return
        try:
            self._begin()
            self._db.execute("DELETE FROM log WHERE idx <= ?", (upto,))
            self._db.execute(_SET_META, ("first_index", upto + 1))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self._first = upto + 1

    def reset(self, first_index: int) -> None:
        """Empty the log (one transaction with whatever else is open: atomic at ``sync``)."""
        self._check()
        if first_index < 1:
            raise ValueError(f"reset to first index {first_index} < 1")
        _check_int64(first_index)
        try:
            self._begin()
            self._db.execute("DELETE FROM log")
            self._db.execute(_SET_META, ("first_index", first_index))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self._first = first_index
        self._last = first_index - 1

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        self._db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @property
    def path(self) -> str:
        return self._path
