"""Durable Raft log backends behind one ``LogStore`` protocol.

How this works: ``base.LogStore`` is the contract (append / set_hard_state / sync as group
commit, load on open, compact); ``memory``, ``file`` (segmented WAL with CRC32C frames) and
``sqlite`` implement it, and ``open_store`` picks one by name from configuration. All
backends share ``codec`` (entry and hard-state encodings) and ``base.check_append`` (the
same misuse is rejected everywhere). See each module's opening comment for its disk format
and recovery rules.
"""

from __future__ import annotations

import os

from udpraft.storage.base import CorruptLogError, LogStore, StorageError
from udpraft.storage.file import FileLogStore
from udpraft.storage.memory import MemoryLogStore
from udpraft.storage.sqlite import SqliteLogStore

__all__ = [
    "CorruptLogError",
    "FileLogStore",
    "LogStore",
    "MemoryLogStore",
    "SqliteLogStore",
    "STORE_KINDS",
    "StorageError",
    "open_store",
]

STORE_KINDS = ("memory", "file", "sqlite")


def open_store(kind: str, data_dir: str) -> LogStore:
    """Open (or create) the ``kind`` store under ``data_dir``.

    ``file`` keeps its segments in ``data_dir/wal/``; ``sqlite`` uses ``data_dir/log.sqlite3``;
    ``memory`` ignores ``data_dir``.
    """
    if kind == "memory":
        return MemoryLogStore()
    if kind == "file":
        return FileLogStore(os.path.join(data_dir, "wal"))
    if kind == "sqlite":
        return SqliteLogStore(os.path.join(data_dir, "log.sqlite3"))
    raise ValueError(f"unknown log store kind {kind!r}; expected one of {', '.join(STORE_KINDS)}")
