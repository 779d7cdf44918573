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

Cold prefix (memory). An ``Entry`` object costs ~200 bytes beyond its payload (the object,
its int fields, a bytes object per payload), so a million entries would take ~300 MB. Entries
that are applied and durable, more than ``hot_entries`` behind the applied index, move into
``ColdEntries``: one column per field (``array``s of terms, seqs and timestamps, a
``bytearray`` of kinds, one buffer holding every payload back to back with their end
offsets, client ids as shared ``str`` references; large payloads by reference; see
core/columns.py) — about 40 bytes plus the payload per entry. They are moved in batches of ``FREEZE_CHUNK`` (1,024) applied entries, so the hot list
holds between ``hot_entries`` and ``hot_entries + 1,024`` entries behind the applied index.
(One batch of 16,384 cost each node ~8-10 ms at the same log index, so all three stalled
together every ~0.3 s under load: the p99 of network submits.) The hot list then
starts at ``base`` (slot 0 holds the entry at ``base``, or the sentinel when ``base ==
offset``) and entry ``i <= base`` is rebuilt from the columns on demand: only a lagging
follower, a restart's first apply or a client's retrieve reads that far back. Every method
answers the same whichever side an entry is on. Entries appended with an ``EntryBatch``
(their columns as they arrived: a leader's ``propose_datas``, a follower's decoded append;
core/batch.py) are moved from the batch's columns rather than read out of each object.

Recovery (memory). A store can hand its log over as ``EntryColumns``: a read-only
``Sequence[Entry]`` over ``ColdEntries`` columns it filled straight from disk, so a
restarted node never holds every entry as an object. Slicing it shares the columns;
``RaftLog(columns)`` takes them over as its cold prefix (rebuilding only the last
``hot_entries`` as objects), after which every view of those columns refuses use.
"""

from collections import deque
from collections.abc import Sequence

from udpraft.core.batch import EntryBatch
from udpraft.core.columns import ColdEntries, EntryColumns
from udpraft.core.types import Entry, EntryKind

HOT_ENTRIES = 16_384  # entries kept as objects behind the applied index (see above)
FREEZE_CHUNK = 1_024  # entries moved to the cold columns at a time (see above)
BATCH_LOOKUP = 64  # batches batch_of looks back through (a lagging follower's append: none)


class RaftLog:
    __slots__ = (
        "_base",
        "_cold",
        "_entries",
        "_freeze_chunk",
        "_offset_term",
        "_srcs",
        "applied",
        "applying",
        "committed",
        "hot_entries",
        "offset",
        "stable",
        "unstable_from",
    )

    def __init__(
        self,
        entries: Sequence[Entry] = (),
        offset: int = 0,
        offset_term: int = 0,
        hot_entries: int | None = None,
    ) -> None:
        self.offset = offset
        self._offset_term = offset_term
        self.hot_entries = HOT_ENTRIES if hot_entries is None else max(1, hot_entries)
        self._freeze_chunk = min(self.hot_entries, FREEZE_CHUNK)
        self._cold = ColdEntries(offset + 1)
        self._base = offset
        self._entries: list[Entry] = [Entry(offset, offset_term)]
        # Hot entries appended with a batch's columns (``_Src``), in index order, disjoint.
        # Any change but an append at the end or a freeze clears it (the freeze then reads
        # the Entry objects).
        self._srcs: deque[_Src] = deque()
        if isinstance(entries, EntryColumns):
            self._adopt(entries)
        else:
            expect = offset + 1
            for e in entries:
                if e.index != expect:
                    raise ValueError(
                        f"log entries not contiguous: expected {expect}, got {e.index}")
                expect += 1
            self._entries.extend(entries)
        self.committed = offset
        self.applied = offset
        self.applying = offset
        self.stable = self.last_index()
        self.unstable_from = self.last_index() + 1
        # A recovered log is durable: keep only its tail as objects (see the module doc).
        self._freeze_to(self.last_index() - self.hot_entries)

    def _adopt(self, entries: EntryColumns) -> None:
        """Take a store's recovered columns over as the cold prefix (see the module doc)."""
        if entries and entries.first_index != self.offset + 1:
            raise ValueError(
                f"log entries not contiguous: expected {self.offset + 1}, "
                f"got {entries.first_index}")
        cols = entries.take()
        last = self.offset + len(cols)
        base = max(self.offset, last - self.hot_entries)
        if base > self.offset:
            self._entries = [cols.entry(base), *cols.entries(base + 1, last + 1)]
            cols.truncate(base + 1)
            self._cold = cols
            self._base = base
        else:
            self._entries.extend(cols.entries(self.offset + 1, last + 1))

    # -- queries -------------------------------------------------------------------------

    def last_index(self) -> int:
        return self._base + len(self._entries) - 1

    def last_term(self) -> int:
        return self._entries[-1].term

    def first_index(self) -> int:
        return self.offset + 1

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when outside the log."""
        pos = index - self._base
        if pos >= 0:
            if pos >= len(self._entries):
                return None
            return self._entries[pos].term
        if index < self.offset:
            return None
        if index == self.offset:
            return self._offset_term
        return self._cold.term(index)

    def entry(self, index: int) -> Entry:
        pos = index - self._base
        if pos >= 0:
            return self._entries[pos]
        if self.offset < index:
            return self._cold.entry(index)
        if index == self.offset:
            return Entry(self.offset, self._offset_term)
        raise IndexError(f"entry {index} is before the log (offset {self.offset})")

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi, stopping before ``max_bytes`` (at least one entry)."""
        lo = max(lo, self.offset + 1)
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        base = self._base
        if lo > base:
            if max_bytes is None:
                return self._entries[lo - base : hi - base]
            return _take_bytes(self._entries, lo - base, hi - base, max_bytes)
        return self._slice_cold(lo, hi, max_bytes)

    def _slice_cold(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        cold = self._cold
        size = 0
        i = lo
        stop = min(hi, self._base + 1)
        if max_bytes is not None:
            while i < stop:
                size += cold.size_bytes(i)
                if i > lo and size > max_bytes:
                    return cold.entries(lo, i)
                i += 1
        out = cold.entries(lo, stop)
        i = stop
        if i < hi:
            if max_bytes is None:
                out.extend(self._entries[1 : hi - self._base])
            else:
                out.extend(_take_bytes(self._entries, 1, hi - self._base, max_bytes - size, bool(out)))
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
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return self.offset, self._offset_term

    def last_index_of_kind(self, kind: EntryKind, upto: int) -> int:
        """Largest index ``offset < i <= upto`` holding an entry of ``kind``, else -1."""
        base = self._base
        i = min(upto, self.last_index())
        ents = self._entries
        while i > base:
            if ents[i - base].kind == kind:
                return i
            i -= 1
        if i <= self.offset:
            return -1
        return self._cold.rfind_kind(int(kind), self.offset + 1, i)

    # -- mutation ------------------------------------------------------------------------

    def append_new(self, entries: Sequence[Entry], batch: EntryBatch | None = None) -> None:
        """Leader path: entries continue the log directly. ``batch``: the same entries in
        column form (core/batch.py), for a cheaper move into the cold columns later."""
        if batch is not None and entries:
            self._note_batch(batch, entries[0].index, len(entries))
        self._entries.extend(entries)

    def _note_batch(self, batch: EntryBatch, lo: int, n: int) -> None:
        """Entries ``lo .. lo + n - 1``, about to be appended, come from ``batch``."""
        if lo == self.last_index() + 1 and batch.first <= lo and lo + n <= batch.first + batch.n:
            self._srcs.append(_Src(lo, lo + n - 1, batch))

    def maybe_append(self, prev_index: int, entries: Sequence[Entry],
                     batch: EntryBatch | None = None) -> int | None:
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
            if self.term(e.index) != e.term:
                if e.index <= self.committed:
                    raise ValueError(f"conflict at committed index {e.index}")
                self._truncate(e.index)
                truncated_at = e.index
                self.unstable_from = min(self.unstable_from, e.index)
                self.stable = min(self.stable, e.index - 1)
                start = i
                break
        else:
            return None
        if batch is not None:
            self._note_batch(batch, entries[start].index, len(entries) - start)
        self._entries.extend(entries[start:])
        return truncated_at

    def _truncate(self, index: int) -> None:
        """Drop entries ``>= index`` (> offset)."""
        self._srcs.clear()
        if index > self._base:
            del self._entries[index - self._base :]
            return
        # Into the cold prefix (only a recovered, not yet committed log can get here).
        prev = self.entry(index - 1)
        self._cold.truncate(index)
        self._base = index - 1
        self._entries = [prev]

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index())
        if index > self.committed:
            self.committed = index
            return True
        return False

    # -- snapshots -----------------------------------------------------------------------

    @property
    def offset_term(self) -> int:
        return self._offset_term

    def compact(self, index: int) -> None:
        """Forget entries up to ``index`` (a durable snapshot covers them).

        Only applied entries may go (the snapshot holds their effect); they must also be
        durable, or a crash could leave a gap between the snapshot and the stored log.
        """
        if index <= self.offset:
            return
        if index > self.applied or index > self.stable:
            raise ValueError(f"cannot compact to {index}: applied {self.applied}, stable {self.stable}")
        term = self.term(index)
        assert term is not None
        self._drop_through(index, term)

    def _drop_through(self, index: int, term: int) -> None:
        """Forget entries ``<= index`` (which is in the log); ``index`` becomes the offset."""
        srcs = self._srcs  # the entries after ``index`` stay as they are, and so do their batches
        while srcs and srcs[0].hi <= index:
            srcs.popleft()
        if srcs and srcs[0].lo <= index:
            srcs[0].lo = index + 1
        if index >= self._base:
            del self._entries[1 : index - self._base + 1]
            self._cold = ColdEntries(index + 1)
            self._base = index
            self._entries[0] = Entry(index, term)
        else:
            self._cold.drop_through(index)
        self.offset = index
        self._offset_term = term

    def restore(self, index: int, term: int) -> bool:
        """Install a snapshot ending at (index, term); returns True when the suffix is kept.

        Dissertation §5.4.1 / Raft §7: if the log holds an entry with the snapshot's index and
        term, the entries after it stay (they match the leader's); otherwise the whole log
        is discarded. Either way everything up to ``index`` counts as committed and applied.
        """
        keep = self.term(index) == term
        if keep:
            self._drop_through(index, term)
        else:
            self._srcs.clear()
            self._cold = ColdEntries(index + 1)
            self._base = index
            self._entries = [Entry(index, term)]
            self.offset = index
            self._offset_term = term
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
        out = self.slice(self.unstable_from, self.last_index() + 1)
        self.unstable_from = self.last_index() + 1
        return out

    def batch_of(self, lo: int, hi: int) -> EntryBatch | None:
        """The one batch entries ``lo .. hi`` were appended with, if one was (looking at
        the newest ``BATCH_LOOKUP`` batches only: a bounded search)."""
        for k, s in enumerate(reversed(self._srcs)):
            if s.lo <= lo:
                return s.batch if hi <= s.hi else None
            if k >= BATCH_LOOKUP:
                return None
        return None

    def batch_pieces(self, lo: int, hi: int) -> list[tuple[EntryBatch, int, int]] | None:
        """``(batch, off, count)`` covering entries ``lo .. hi`` in order with the batches
        they were appended with, or None if some entry there came without one."""
        out: list[tuple[EntryBatch, int, int]] = []
        end = hi
        for s in reversed(self._srcs):  # the range is the newest entries: start at the end
            if s.lo > end:
                continue
            if s.hi < end:
                return None  # a gap
            start = max(s.lo, lo)
            out.append((s.batch, start - s.batch.first, end - start + 1))
            end = start - 1
            if end < lo:
                out.reverse()
                return out
        return None

    def has_unstable(self) -> bool:
        return self.unstable_from <= self.last_index()

    def take_committed(self, max_entries: int) -> list[Entry]:
        hi = min(self.committed, self.applying + max_entries)
        if hi <= self.applying:
            return []
        out = self.slice(self.applying + 1, hi + 1)
        self.applying = hi
        return out

    def stable_to(self, index: int, term: int) -> None:
        """Storage reports everything up to ``index`` (whose term was ``term``) durable."""
        if self.term(index) == term and index < self.unstable_from:
            self.stable = max(self.stable, index)

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = min(index, self.committed)
            upto = min(self.applied, self.stable) - self.hot_entries
            if upto - self._base >= self._freeze_chunk:
                self._freeze_to(upto)

    def _freeze_to(self, index: int) -> None:
        """Move entries ``base < i <= index`` into the cold columns."""
        k = index - self._base
        if k <= 0:
            return
        ents = self._entries
        base = self._base
        cold = self._cold
        srcs = self._srcs
        lo = base + 1
        while lo <= index:  # runs with a batch from its columns, the rest from the objects
            while srcs and srcs[0].hi < lo:
                srcs.popleft()
            if srcs and srcs[0].lo <= lo:
                src = srcs[0]
                b = src.batch
                hi = min(index, src.hi)
                cold.extend_batch(b, lo - b.first, ents[lo - base : hi - base + 1])
                src.lo = hi + 1
            else:
                hi = min(index, srcs[0].lo - 1) if srcs else index
                cold.extend(ents[lo - base : hi - base + 1])
            lo = hi + 1
        del ents[:k]  # in place (a copy moved ~16k references per freeze); ``index`` is slot 0
        self._base = index


class _Src:
    """Hot entries ``lo .. hi`` (inclusive) were appended from ``batch``."""

    __slots__ = ("batch", "hi", "lo")

    def __init__(self, lo: int, hi: int, batch: EntryBatch) -> None:
        self.lo = lo
        self.hi = hi
        self.batch = batch


def _take_bytes(
    ents: list[Entry], lo: int, hi: int, max_bytes: int, have: bool = False
) -> list[Entry]:
    """``ents[lo:hi]`` cut before ``max_bytes`` (at least one entry unless ``have``).
    (A plain loop: column passes with accumulate and a binary search were slower here,
    225 against 144 ns per entry taken, CPython 3.11.)"""
    out: list[Entry] = []
    size = 0
    for pos in range(lo, hi):
        e = ents[pos]
        size += e.size_bytes()
        if (out or have) and size > max_bytes:
            break
        out.append(e)
    return out
