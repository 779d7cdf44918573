"""In-memory ``LogStore``: the double for unit tests and the simulator.

How this works: a Python list of entries, the index of its first element, and the hard
state. Nothing is durable; ``sync`` only counts calls (tests use the count to check group
commit). It enforces the same append rules as the disk backends (``base.check_append``) so
a core bug that would corrupt a real log fails here too.
"""

from __future__ import annotations

from collections.abc import Sequence

from udpraft.core.types import EMPTY_HARD_STATE, Entry, HardState
from udpraft.storage.base import Pieces, StorageError, check_append, clamp_compact


class MemoryLogStore:
    """Entries ``first_index..last_index`` in a list; ``sync`` is free."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._first = 1
        self._hs = EMPTY_HARD_STATE
        self._closed = False
        self.sync_count = 0

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory log store is closed")

    def load(self) -> tuple[HardState, list[Entry]]:
        self._check_open()
        return self._hs, list(self._entries)

    def first_index(self) -> int:
        return self._first

    def last_index(self) -> int:
        return self._first + len(self._entries) - 1

    def append(self, entries: Sequence[Entry], pieces: Pieces | None = None) -> None:
        self._check_open()
        if not entries:
            return
        check_append(self._first, self.last_index(), entries)
        del self._entries[entries[0].index - self._first :]
        self._entries.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._check_open()
        self._hs = hs

    def sync(self) -> None:
        self._check_open()
        self.sync_count += 1

    def compact(self, upto_index: int) -> None:
        self._check_open()
        upto = clamp_compact(self._first, self.last_index(), upto_index)
        del self._entries[: upto + 1 - self._first]
        self._first = upto + 1

    def reset(self, first_index: int) -> None:
        self._check_open()
        if first_index < 1:
            raise ValueError(f"reset to first index {first_index} < 1")
        self._entries = []
        self._first = first_index

    def close(self) -> None:
        self._closed = True
