"""The LogStore contract, run against every backend (memory, file WAL, sqlite).

Each test gets a ``Backend``: ``open()`` opens the store at one fixed place, so calling it
again after ``close()`` is a reopen. The memory store has no durable place: ``reopen``
leaves it as it is, and the few tests that are only about reopening skip it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from udpraft.core.types import EMPTY_HARD_STATE, Entry, EntryKind, HardState
from udpraft.storage import (
    STORE_KINDS,
    FileLogStore,
    LogStore,
    MemoryLogStore,
    SqliteLogStore,
    StorageError,
    open_store,
)


@dataclass
class Backend:
    name: str
    open: Callable[[], LogStore]
    durable: bool


def _backend(name: str, tmp_path: Path) -> Backend:
    if name == "memory":
        return Backend(name, MemoryLogStore, durable=False)
    if name == "file":
        # Small segments so the contract also runs across segment boundaries.
        return Backend(
            name, lambda: FileLogStore(str(tmp_path / "wal"), segment_bytes_max=4096), True
        )
    return Backend(name, lambda: SqliteLogStore(str(tmp_path / "log.sqlite3")), True)


@pytest.fixture(params=STORE_KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, tmp_path)


@pytest.fixture
def durable(backend: Backend) -> Backend:
    if not backend.durable:
        pytest.skip("the memory store has nothing to reopen")
    return backend


@pytest.fixture
def store(backend: Backend) -> Iterator[LogStore]:
    s = backend.open()
    yield s
    s.close()


def ents(lo: int, hi: int, term: int = 1, size: int = 8) -> list[Entry]:
    return [
        Entry(i, term, bytes([i % 251]) * size, EntryKind.NORMAL, f"c{i % 3}", i, 1000 + i)
        for i in range(lo, hi + 1)
    ]


def reopen(backend: Backend, s: LogStore) -> LogStore:
    """Close and reopen a durable store; the memory store just carries on."""
    if not backend.durable:
        return s
    s.close()
    return backend.open()


def test_fresh_store_is_empty(store: LogStore) -> None:
    assert isinstance(store, LogStore)
    assert store.load() == (EMPTY_HARD_STATE, [])
    assert (store.first_index(), store.last_index()) == (1, 0)


def test_append_load_round_trip(store: LogStore) -> None:
    batch = ents(1, 10)
    store.append(batch)
    store.append(ents(11, 12, term=2))
    store.sync()
    assert store.load()[1] == batch + ents(11, 12, term=2)
    assert (store.first_index(), store.last_index()) == (1, 12)


def test_append_without_sync_is_visible_to_load(store: LogStore) -> None:
    store.append(ents(1, 3))
    assert store.load()[1] == ents(1, 3)


def test_empty_append_is_a_no_op(store: LogStore) -> None:
    store.append([])
    store.append(ents(1, 2))
    store.append([])
    assert store.last_index() == 2


def test_conflict_truncation_then_append(store: LogStore) -> None:
    store.append(ents(1, 10))
    store.sync()
    store.append(ents(6, 8, term=2))  # Raft §5.3: 6..10 conflict and go
    assert store.last_index() == 8
    assert store.load()[1] == ents(1, 5) + ents(6, 8, term=2)
    store.append(ents(9, 9, term=2))
    store.sync()
    assert store.load()[1] == ents(1, 5) + ents(6, 9, term=2)


def test_truncate_everything(store: LogStore) -> None:
    store.append(ents(1, 5))
    store.append(ents(1, 2, term=3))
    assert store.load()[1] == ents(1, 2, term=3)


def test_truncate_to_last_entry_only(store: LogStore) -> None:
    store.append(ents(1, 5))
    store.append(ents(5, 5, term=2))
    assert store.load()[1] == ents(1, 4) + ents(5, 5, term=2)


def test_misuse_is_rejected_and_changes_nothing(store: LogStore) -> None:
    store.append(ents(1, 3))
    with pytest.raises(ValueError, match="gap"):
        store.append(ents(5, 6))
    with pytest.raises(ValueError, match="contiguous"):
        store.append([*ents(4, 4), *ents(6, 6)])
    with pytest.raises(ValueError, match="before first index"):
        store.append([Entry(0, 1)])
    assert store.load()[1] == ents(1, 3)
    assert store.last_index() == 3


def test_unencodable_entry_is_rejected_before_any_change(store: LogStore) -> None:
    if isinstance(store, MemoryLogStore):
        pytest.skip("the memory store keeps objects, not an encoding")
    store.append(ents(1, 3))
    with pytest.raises(ValueError):
        store.append([Entry(2, 1), Entry(3, -1)])
    with pytest.raises(ValueError):
        store.append([Entry(4, 1, client_id="x" * 70_000)])
    assert store.load()[1] == ents(1, 3)


def test_hard_state_round_trip(store: LogStore) -> None:
    hs = HardState(term=7, vote="n2", commit=3)
    store.set_hard_state(hs)
    assert store.load()[0] == hs
    store.sync()
    store.set_hard_state(HardState(term=8, vote="", commit=5))
    assert store.load()[0] == HardState(8, "", 5)


def test_reopen_after_close(backend: Backend) -> None:
    s = backend.open()
    s.append(ents(1, 20))
    s.append(ents(15, 25, term=2))
    s.set_hard_state(HardState(term=2, vote="n1", commit=12))
    s.sync()
    s = reopen(backend, s)
    assert s.load() == (HardState(2, "n1", 12), ents(1, 14) + ents(15, 25, term=2))
    assert (s.first_index(), s.last_index()) == (1, 25)
    s.append(ents(26, 30, term=2))  # and it keeps going where it left off
    s = reopen(backend, s)
    assert s.load()[1] == ents(1, 14) + ents(15, 30, term=2)
    s.close()


def test_close_syncs(durable: Backend) -> None:
    s = durable.open()
    s.append(ents(1, 4))
    s.set_hard_state(HardState(1, "a", 4))
    s = reopen(durable, s)
    assert s.load() == (HardState(1, "a", 4), ents(1, 4))
    s.close()


def test_hard_state_survives_many_updates(backend: Backend) -> None:
    s = backend.open()
    for t in range(1, 8):
        s.set_hard_state(HardState(term=t, vote=f"n{t % 3}", commit=t * 2))
        s.sync()
    s = reopen(backend, s)
    assert s.load()[0] == HardState(7, "n1", 14)
    s.close()


def test_big_batch(backend: Backend) -> None:
    s = backend.open()
    batch = ents(1, 5000, size=100)
    s.append(batch)
    s.append([Entry(5001, 2, b"\xab" * (1 << 20))])  # one 1 MiB entry
    s.sync()
    s = reopen(backend, s)
    got = s.load()[1]
    assert got[:5000] == batch
    assert got[5000] == Entry(5001, 2, b"\xab" * (1 << 20))
    s.close()


def test_empty_data_noop_kind_and_unicode_client_ids(backend: Backend) -> None:
    batch = [
        Entry(1, 1, b"", EntryKind.NOOP),
        Entry(2, 1, b"", EntryKind.NORMAL, "клиент-😀", 2**63 - 1, 2**62),
        Entry(3, 1, b"\x00\xff", EntryKind.NORMAL, "日本語/ü", 0, 0),
        Entry(4, 1, b"x", EntryKind.NORMAL, "\u0000nul", 1, 1),
    ]
    s = backend.open()
    s.append(batch)
    s.set_hard_state(HardState(1, "nœud-1", 2))
    s = reopen(backend, s)
    hs, got = s.load()
    assert got == batch
    assert [e.kind for e in got] == [EntryKind.NOOP, *[EntryKind.NORMAL] * 3]
    assert hs.vote == "nœud-1"
    s.close()


def test_compact_keeps_later_entries(backend: Backend) -> None:
    s = backend.open()
    s.append(ents(1, 300))
    s.compact(100)
    first = s.first_index()
    assert 1 <= first <= 101
    assert s.last_index() == 300
    assert s.load()[1] == ents(first, 300)
    s.compact(0)  # below the first index: nothing to do
    assert s.first_index() == first
    s = reopen(backend, s)
    assert s.first_index() == first
    assert s.load()[1] == ents(first, 300)
    with pytest.raises(ValueError):
        s.append(ents(first - 1, first - 1)) if first > 1 else s.append([Entry(0, 1)])
    s.close()


def test_compact_everything_then_append(backend: Backend) -> None:
    s = backend.open()
    s.append(ents(1, 50))
    s.compact(10_000)  # clamped to the last index
    assert (s.first_index(), s.last_index()) == (51, 50)
    assert s.load()[1] == []
    s.append(ents(51, 55, term=2))
    s = reopen(backend, s)
    assert (s.first_index(), s.last_index()) == (51, 55)
    assert s.load()[1] == ents(51, 55, term=2)
    s.close()


def test_truncation_is_durable(backend: Backend) -> None:
    s = backend.open()
    s.append(ents(1, 40))
    s.sync()
    s.append(ents(3, 4, term=5))
    s.sync()
    s = reopen(backend, s)
    assert s.load()[1] == ents(1, 2) + ents(3, 4, term=5)
    s.close()


def test_closed_store_refuses_use(store: LogStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError):
        store.append(ents(1, 1))
    with pytest.raises(StorageError):
        store.load()
    with pytest.raises(StorageError):
        store.sync()


def test_second_opener_is_refused(durable: Backend) -> None:
    s = durable.open()
    with pytest.raises(StorageError, match="in use"):
        durable.open()
    s.close()
    durable.open().close()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_open_store_factory(kind: str, tmp_path: Path) -> None:
    s = open_store(kind, str(tmp_path / "data"))
    s.append(ents(1, 3))
    s.sync()
    assert s.load()[1] == ents(1, 3)
    s.close()
    if kind != "memory":
        s = open_store(kind, str(tmp_path / "data"))
        assert s.load()[1] == ents(1, 3)
        s.close()


def test_open_store_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown log store kind"):
        open_store("rocksdb", str(tmp_path))
