"""Plain data shared by every layer: ids, log entries, hard state.

Everything here is an immutable, slotted value. The core never mutates an Entry once it has
been created, so the same object can sit in the in-memory log, in a Ready handed to storage
and in an outgoing AppendEntries without copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from operator import attrgetter
from typing import NewType

NodeId = NewType("NodeId", str)
ClientId = NewType("ClientId", str)


class EntryKind(IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # application payload
    NOOP = 1  # appended by a new leader (Raft §8: commit prior-term entries, anchor ReadIndex)
    CONFIG = 2  # the whole membership (membership.py), effective once appended (§4.1)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry.

    ``client_id``/``seq`` identify a client request for exactly-once sessions (§6.3);
    ``ts_ms`` is the leader-assigned timestamp used to expire sessions deterministically.
    """

    index: int
    term: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL
    client_id: str = ""
    seq: int = 0
    ts_ms: int = 0

    def size_bytes(self) -> int:
        return len(self.data) + len(self.client_id) + 32


# One field of many entries at C speed: ``list(map(ENTRY_TERM, entries))`` (column passes
# of the log, the WAL and the wire).
ENTRY_INDEX = attrgetter("index")
ENTRY_TERM = attrgetter("term")
ENTRY_KIND = attrgetter("kind")
ENTRY_CLIENT = attrgetter("client_id")
ENTRY_SEQ = attrgetter("seq")
ENTRY_TS = attrgetter("ts_ms")
ENTRY_DATA = attrgetter("data")


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before the node speaks on it (Raft Figure 2)."""

    term: int = 0
    vote: str = ""  # "" means no vote in this term
    commit: int = 0  # advisory only: recovery never trusts it beyond the durable log


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot ends: the index and term of the last entry whose effect it holds.

    ``conf`` carries the membership in effect at ``index`` (membership.py's encoding) so
    that compaction does not lose it; "" means "not recorded" (the node's initial voters).
    """

    index: int = 0
    term: int = 0
    conf: str = ""


NO_SNAPSHOT = SnapshotMeta()
