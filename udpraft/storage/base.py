"""The durable-log contract every storage backend implements.

How this works: a Raft node keeps two things on disk (Raft Figure 2): the hard state
(current term, vote, last known commit) and the log. ``LogStore`` is the narrow interface
the runtime drives; the core never sees it. The runtime calls, per Ready:

    append(entries)        # written, maybe not durable yet (page cache, open txn)
    set_hard_state(hs)     # written, maybe not durable yet
    sync()                 # one fsync covers everything above: group commit
    ... only now send messages that depend on it (persist before send) ...

The log is a contiguous run of entries ``first_index() .. last_index()``. An empty log has
``last_index() == first_index() - 1``. ``first_index()`` starts at 1 and grows only through
``compact`` (after a snapshot made the prefix redundant) and ``reset`` (a snapshot installed
from the leader replaced the whole log). ``append`` whose first index is at or below
``last_index()`` is a Raft conflict truncation (§5.3): everything from that index on is
dropped first.

Failures come in the three kinds ARCHITECTURE.md names: misuse (a gap, a batch that is not
contiguous, truncating into the compacted prefix) raises ``ValueError``; a store that cannot
be opened or was closed raises ``StorageError``; a log damaged on disk raises
``CorruptLogError``, which names the file and byte offset so an operator can look.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from udpraft.core.batch import EntryBatch
from udpraft.core.types import Entry, HardState

Pieces = Sequence[tuple[EntryBatch, int, int]]  # see LogStore.append


class StorageError(Exception):
    """The store cannot do what was asked (closed, locked, a failed write)."""


class CorruptLogError(StorageError):
    """Durable data is damaged in a way that recovery must not paper over."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"corrupt log file {path} at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@runtime_checkable
class LogStore(Protocol):
    """A durable Raft log plus hard state. Implementations: memory, file (WAL), sqlite."""

    def load(self) -> tuple[HardState, Sequence[Entry]]:
        """The hard state and every entry ``first_index()..last_index()``, in order.

        A list, or (file, sqlite) a compact read-only ``core.columns.EntryColumns`` that
        ``RaftLog`` takes over without building an object per entry."""
        ...

    def first_index(self) -> int:
        """Index of the first entry kept (``last_index() + 1`` when the log is empty)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry written (``first_index() - 1`` when empty)."""
        ...

    def append(self, entries: Sequence[Entry], pieces: Pieces | None = None) -> None:
        """Write contiguous entries, truncating a conflicting suffix first. Durable on sync.

        ``pieces``: optionally, ``(batch, off, count)`` triples covering ``entries`` in
        order with their column form (core/batch.py: ``entries[i]`` of a piece is its
        batch's entry ``off + i``); a store may encode from it. Either way the same bytes."""
        ...

    def set_hard_state(self, hs: HardState) -> None:
        """Record the hard state. Durable on sync."""
        ...

    def sync(self) -> None:
        """Make everything written so far durable."""
        ...

    def compact(self, upto_index: int) -> None:
        """Allow entries ``<= upto_index`` to be discarded; later entries stay."""
        ...

    def reset(self, first_index: int) -> None:
        """Drop every entry: the log is empty and continues at ``first_index``.

        For a snapshot installed from the leader that the local log does not match (or does
        not reach). Durable, and atomic across a crash, by the next ``sync`` at the latest.
        """
        ...

    def close(self) -> None:
        """Sync what was written, then release files. Idempotent."""
        ...


def check_append(first_index: int, last_index: int, entries: Sequence[Entry]) -> None:
    """Raise ``ValueError`` unless ``entries`` may be appended to ``first..last``.

    Shared by all backends so they reject exactly the same misuse.
    """
    start = entries[0].index
    if start > last_index + 1:
        raise ValueError(f"append at index {start} leaves a gap after last index {last_index}")
    if start < first_index:
        raise ValueError(f"append at index {start} is before first index {first_index}")
    expected = start
    for e in entries:
        if e.index != expected:
            raise ValueError(f"batch not contiguous: index {e.index} where {expected} expected")
        expected += 1


def clamp_compact(first_index: int, last_index: int, upto_index: int) -> int:
    """The index compaction may really discard up to: never past the last entry."""
    return max(first_index - 1, min(upto_index, last_index))
