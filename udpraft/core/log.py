"""The in-memory view of the Raft log, and what of it is durable.

How this works: the log is a Python list whose slot 0 is a sentinel standing for the last
entry before the log (index ``offset``, term ``offset_term``; both 0 until snapshots compact
the log). Entry ``i`` lives at slot ``i - offset``. Three cursors describe the storage side:

- ``unstable_from``: the first index not yet handed to storage in a Ready. A conflict
  truncation at ``i`` pulls it back to ``i`` so the rewritten suffix is handed out again.
- ``stable``: the last index storage reported durable (``advance``). Only the leader uses it,
  to count itself in the commit quorum (Raft §10.2.1: it may replicate before its own write
  completes, but must not count itself until the write is durable).
- ``committed`` and ``applied``: the usual Raft indices; ``applying`` is what was handed out
  for application and not yet acknowledged.
"""

from __future__ import annotations

from collections.abc import Sequence

from udpraft.core.types import Entry


class RaftLog:
    __slots__ = (
        "_entries",
        "applied",
        "applying",
        "committed",
        "offset",
        "stable",
        "unstable_from",
    )

    def __init__(
        self, entries: Sequence[Entry] = (), offset: int = 0, offset_term: int = 0
    ) -> None:
        self.offset = offset
        self._entries: list[Entry] = [Entry(offset, offset_term)]
        expect = offset + 1
        for e in entries:
            if e.index != expect:
                raise ValueError(f"log entries not contiguous: expected {expect}, got {e.index}")
            self._entries.append(e)
            expect += 1
        self.committed = offset
        self.applied = offset
        self.applying = offset
        self.stable = self.last_index()
        self.unstable_from = self.last_index() + 1

    # -- queries -------------------------------------------------------------------------

    def last_index(self) -> int:
        return self.offset + len(self._entries) - 1

    def last_term(self) -> int:
        return self._entries[-1].term

    def first_index(self) -> int:
        return self.offset + 1

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when outside the log."""
        pos = index - self.offset
        if pos < 0 or pos >= len(self._entries):
            return None
        return self._entries[pos].term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.offset]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi, stopping before ``max_bytes`` (at least one entry)."""
        lo_pos = max(lo - self.offset, 1)
        hi_pos = min(hi - self.offset, len(self._entries))
        if lo_pos >= hi_pos:
            return []
        if max_bytes is None:
            return self._entries[lo_pos:hi_pos]
        out: list[Entry] = []
        size = 0
        for pos in range(lo_pos, hi_pos):
            e = self._entries[pos]
            size += e.size_bytes()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1 election restriction: is (last_term, last_index) at least as new as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, with that term.

        Used on both sides of the fast log backtracking: a follower answers a rejected append
        with it, the leader uses it to jump over a whole term of mismatching entries at once.
        """
        index = min(index, self.last_index())
        while index > self.offset:
            t = self._entries[index - self.offset].term
            if t <= term:
                return index, t
            index -= 1
        return self.offset, self._entries[0].term

    # -- mutation ------------------------------------------------------------------------

    def append_new(self, entries: Sequence[Entry]) -> None:
        """Leader path: entries continue the log directly."""
        self._entries.extend(entries)

    def maybe_append(self, prev_index: int, entries: Sequence[Entry]) -> int | None:
        """Follower path of AppendEntries, after the prev_index/prev_term check passed.

        Raft §5.3: delete only from the first entry whose index exists with a different term.
        A stale or duplicated append whose entries already match changes nothing — it must
        never cut a suffix. Returns the index of the conflict point, or None when the log was
        not truncated. Raises ValueError when the conflict lies at or below commit (the peer
        is broken or hostile; the caller drops the message).
        """
        last = self.last_index()
        start = 0
        truncated_at: int | None = None
        for i, e in enumerate(entries):
            if e.index > last:
                start = i
                break
            if self._entries[e.index - self.offset].term != e.term:
                if e.index <= self.committed:
                    raise ValueError(f"conflict at committed index {e.index}")
                del self._entries[e.index - self.offset :]
                truncated_at = e.index
                self.unstable_from = min(self.unstable_from, e.index)
                self.stable = min(self.stable, e.index - 1)
                start = i
                break
        else:
            return None
        self._entries.extend(entries[start:])
        return truncated_at

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index())
        if index > self.committed:
            self.committed = index
            return True
        return False

    # -- snapshots -----------------------------------------------------------------------

    @property
    def offset_term(self) -> int:
        return self._entries[0].term

    def compact(self, index: int) -> None:
        """Forget entries up to ``index`` (a durable snapshot covers them).

        Only applied entries may go (the snapshot holds their effect); they must also be
        durable, or a crash could leave a gap between the snapshot and the stored log.
        """
        if index <= self.offset:
            return
        if index > self.applied or index > self.stable:
            raise ValueError(f"cannot compact to {index}: applied {self.applied}, stable {self.stable}")
        term = self._entries[index - self.offset].term
        del self._entries[1 : index - self.offset + 1]
        self._entries[0] = Entry(index, term)
        self.offset = index

    def restore(self, index: int, term: int) -> bool:
        """Install a snapshot ending at (index, term); returns True when the suffix is kept.

        Dissertation §5.4.1 / Raft §7: if the log holds an entry with the snapshot's index and
        term, the entries after it stay (they match the leader's); otherwise the whole log
        is discarded. Either way everything up to ``index`` counts as committed and applied.
        """
        keep = self.term(index) == term
        if keep:
            del self._entries[1 : index - self.offset + 1]
        else:
            del self._entries[1:]
        self._entries[0] = Entry(index, term)
        self.offset = index
        last = self.last_index()
        self.unstable_from = min(max(self.unstable_from, index + 1), last + 1)
        if not keep:
            self.unstable_from = index + 1
        self.stable = max(min(self.stable, last), index) if keep else index
        self.committed = max(self.committed, index)
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, index)
        return keep

    # -- ready bookkeeping ---------------------------------------------------------------

    def take_unstable(self) -> list[Entry]:
        out = self._entries[self.unstable_from - self.offset :]
        self.unstable_from = self.last_index() + 1
        return out

    def has_unstable(self) -> bool:
        return self.unstable_from <= self.last_index()

    def take_committed(self, max_entries: int) -> list[Entry]:
        hi = min(self.committed, self.applying + max_entries)
        if hi <= self.applying:
            return []
        out = self._entries[self.applying + 1 - self.offset : hi + 1 - self.offset]
        self.applying = hi
        return out

    def stable_to(self, index: int, term: int) -> None:
        """Storage reports everything up to ``index`` (whose term was ``term``) durable."""
        if self.term(index) == term and index < self.unstable_from:
            self.stable = max(self.stable, index)

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = min(index, self.committed)
