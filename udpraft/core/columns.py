"""Compact columns for log entries: ``ColdEntries`` and its read-only view ``EntryColumns``.

How this works: an ``Entry`` object costs ~200 bytes beyond its payload, so ``RaftLog``
(core/log.py) keeps only its recent entries as objects and the rest here, one column per
field: ``array``s of terms, seqs and timestamps, a ``bytearray`` of kinds, client ids as
shared ``str`` references and one buffer holding the payloads back to back with their end
offsets — about 40 bytes plus the payload per entry. A payload of ``REF_MIN`` (512) bytes
or more is not copied into the buffer but kept as the entry's own bytes object in ``refs``
(copying 1 KB payloads cost ~0.9 us per entry, mostly faulting in fresh pages). Entries
are rebuilt on demand (``entry``, ``entries``) through the slot setters (``_build``), not
the frozen dataclass constructor. Stores fill columns straight from disk on recovery
(``append``, or their own column decoders) and hand them over as ``EntryColumns``.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, chain, repeat
from operator import add
from typing import overload

from udpraft.core.batch import EntryBatch, cut_runs, expand, expand_seqs
from udpraft.core.types import (
    ENTRY_CLIENT,
    ENTRY_DATA,
    ENTRY_KIND,
    ENTRY_SEQ,
    ENTRY_TERM,
    ENTRY_TS,
    Entry,
    EntryKind,
)

REF_MIN = 512  # a payload this long is kept by reference, not copied (see above)

_TERM, _KIND, _CID, _SEQ, _TS, _DATA = (
    ENTRY_TERM, ENTRY_KIND, ENTRY_CLIENT, ENTRY_SEQ, ENTRY_TS, ENTRY_DATA
)
_KINDS = {int(k): k for k in EntryKind}
_FIELDS = ("index", "term", "data", "kind", "client_id", "seq", "ts_ms")


def _slot_setters() -> tuple[Callable[[Entry, object], None], ...] | None:
    """Entry's slot setters in field order, or None if Entry's shape ever changes."""
    if getattr(Entry, "__slots__", None) != _FIELDS or hasattr(Entry, "__post_init__"):
        return None
    return tuple(getattr(Entry, n).__set__ for n in _FIELDS)


_SLOT_SETTERS = _slot_setters()


def _entry_builder() -> Callable[[int, int, bytes, EntryKind, str, int, int], Entry]:
    """Entry(...) without the frozen dataclass ``__init__`` (its ``object.__setattr__``
    per field is half the cost): set the slots directly; the constructor if Entry's shape
    ever changes."""
    if _SLOT_SETTERS is None:
        return Entry
    si, st, sd, sk, sc, ss, sts = _SLOT_SETTERS
    new = object.__new__

    def build(index: int, term: int, data: bytes, kind: EntryKind, cid: str, seq: int,
              ts: int) -> Entry:
        e: Entry = new(Entry)
        si(e, index)
        st(e, term)
        sd(e, data)
        sk(e, kind)
        sc(e, cid)
        ss(e, seq)
        sts(e, ts)
        return e

    return build


_build = _entry_builder()
_consume: Callable[[Iterable[object]], None] = deque[object](maxlen=0).extend


def build_entries(
    n: int,
    indices: Iterable[int],
    terms: Iterable[int],
    datas: Iterable[bytes],
    kinds: Iterable[EntryKind],
    cids: Iterable[str],
    seqs: Iterable[int],
    ts: Iterable[int],
) -> list[Entry]:
    """``n`` entries from their columns, each an iterable of exactly ``n`` values (checked
    by the caller): one C-level ``map`` over each slot's setter, no Python frame per entry.
    10 B entries: ~385 ns each against ~525 ns calling a builder per entry. The
    constructor if Entry's shape ever changes."""
    setters = _SLOT_SETTERS
    if setters is None:
        return list(map(Entry, indices, terms, datas, kinds, cids, seqs, ts))
    out: list[Entry] = list(map(object.__new__, repeat(Entry, n)))
    s_index, s_term, s_data, s_kind, s_cid, s_seq, s_ts = setters
    _consume(map(s_index, out, indices))
    _consume(map(s_term, out, terms))
    _consume(map(s_data, out, datas))
    _consume(map(s_kind, out, kinds))
    _consume(map(s_cid, out, cids))
    _consume(map(s_seq, out, seqs))
    _consume(map(s_ts, out, ts))
    return out


class ColdEntries:
    """Consecutive entries ``first .. first + len - 1`` stored column by column."""

    __slots__ = ("_ids", "cids", "data", "ends", "first", "kinds", "refs", "seqs", "terms", "ts")

    def __init__(self, first: int) -> None:
        self.first = first
        self.terms: array[int] = array("Q")
        self.kinds = bytearray()
        self.seqs: array[int] = array("Q")
        self.ts: array[int] = array("Q")
        self.cids: list[str] = []  # one shared str per distinct client id (``_ids``)
        self._ids: dict[str, str] = {"": ""}
        self.data = bytearray()
        self.ends: array[int] = array("Q")  # end offset of each payload in ``data``
        # Payloads of at least REF_MIN bytes that ``extend`` kept as the entry's own bytes
        # object, by index (in index order); such an entry has an empty range in ``data``.
        self.refs: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.terms)

    @property
    def last(self) -> int:
        return self.first + len(self.terms) - 1

    def extend(self, entries: Sequence[Entry]) -> None:
        """Append entries continuing this run (C-speed column extraction)."""
        if not entries:
            return
        self.terms.extend(map(_TERM, entries))
        self.kinds.extend(map(_KIND, entries))
        self.seqs.extend(map(_SEQ, entries))
        self.ts.extend(map(_TS, entries))
        ids = list(map(_CID, entries))
        self.cids.extend(map(self._ids.setdefault, ids, ids))
        self._extend_payloads(list(map(_DATA, entries)))

    def _extend_payloads(self, datas: list[bytes]) -> None:
        """The payload column for the entries whose other columns were just appended."""
        first = self.first + len(self.ends)  # index of datas[0]
        lens = list(map(len, datas))
        if min(lens) >= REF_MIN and set(map(type, datas)) == {bytes}:
            # All large (a workload of large payloads): keep them all, no loop per entry.
            self.refs.update(zip(range(first, first + len(datas)), datas))
            self.ends.extend(repeat(len(self.data), len(datas)))
            return
        if max(lens) >= REF_MIN:
            # Large payloads are kept, not copied: a copy into ``data`` cost ~0.9 us per
            # 1 KB entry (most of it faulting in fresh pages), 12% of a busy leader's CPU.
            refs = self.refs
            small = []
            for i, d in enumerate(datas):
                if lens[i] >= REF_MIN:
                    refs[first + i] = d if type(d) is bytes else bytes(d)
                    lens[i] = 0
                else:
                    small.append(d)
            datas = small
        ends = accumulate(lens, initial=len(self.data))
        next(ends)  # the ``initial`` value: where this batch starts
        self.ends.extend(ends)
        self.data += b"".join(datas)

    def extend_batch(self, b: EntryBatch, off: int, entries: Sequence[Entry]) -> None:
        """Append ``entries``, which are entries ``off ..`` of batch ``b`` (continuing this
        run): the fixed columns from the batch's runs, the payloads from its blob when it
        has one, else from ``datas`` or the entries themselves (large ones by reference)."""
        cnt = len(entries)
        if cnt <= 0:
            return
        if not 0 <= off <= off + cnt <= b.n:
            raise ValueError(f"batch positions {off}..{off + cnt - 1} outside 0..{b.n - 1}")
        self.terms.extend(expand(b.terms, off, cnt))
        self.kinds.extend(expand(b.kinds, off, cnt))
        self.seqs.extend(expand_seqs(b.seqs, off, cnt))
        self.ts.extend(expand(b.ts, off, cnt))
        ids = self._ids
        if len(b.cids) == 2:
            self.cids.extend(repeat(ids.setdefault(b.cids[0], b.cids[0]), cnt))
        else:  # one shared str per run (a request of one client is a run), repeated
            cut = cut_runs(b.cids, off, cnt)
            vals = cut[::2]
            self.cids.extend(chain.from_iterable(map(repeat, map(ids.setdefault, vals, vals),
                                                     cut[1::2])))
        if b.datas is not None:
            self._extend_payloads(list(b.datas[off : off + cnt]))
        elif b.blob and 0 <= b.max_len < REF_MIN:  # small payloads, back to back as they came
            start = b.ends[off - 1] if off else 0
            self.ends.extend(map(add, b.ends[off : off + cnt], repeat(len(self.data) - start)))
            self.data += memoryview(b.blob)[start : b.ends[off + cnt - 1]]
        else:
            self._extend_payloads(list(map(_DATA, entries)))

    def intern(self, cid: str) -> str:
        """The client id object these columns share for ``cid``."""
        return self._ids.setdefault(cid, cid)

    def append(self, term: int, kind: int, cid: str, seq: int, ts: int,
               data: bytes | bytearray | memoryview) -> None:
        """Append one entry given by its fields (a store filling columns from disk)."""
        self.terms.append(term)
        self.kinds.append(kind)
        self.seqs.append(seq)
        self.ts.append(ts)
        self.cids.append(self._ids.setdefault(cid, cid))
        self.data += data
        self.ends.append(len(self.data))

    def term(self, index: int) -> int:
        return self.terms[index - self.first]

    def entry(self, index: int) -> Entry:
        k = index - self.first
        data = self.refs.get(index) if self.refs else None
        if data is None:
            lo = self.ends[k - 1] if k else 0
            data = bytes(memoryview(self.data)[lo : self.ends[k]])
        return _build(
            index, self.terms[k], data, _KINDS[self.kinds[k]], self.cids[k], self.seqs[k],
            self.ts[k],
        )

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo <= index < hi`` (all inside this run), rebuilt in one pass."""
        a, b = lo - self.first, hi - self.first
        if a >= b:
            return []
        view = memoryview(self.data)
        ends = self.ends
        start = ends[a - 1] if a else 0
        out = []
        kinds = _KINDS
        build = _build
        refs = self.refs
        for index, term, end, kind, cid, seq, ts in zip(
            range(lo, hi), self.terms[a:b], ends[a:b], self.kinds[a:b], self.cids[a:b],
            self.seqs[a:b], self.ts[a:b],
        ):
            data = refs.get(index) if refs else None
            if data is None:
                data = bytes(view[start:end])
            out.append(build(index, term, data, kinds[kind], cid, seq, ts))
            start = end
        return out

    def size_bytes(self, index: int) -> int:
        """``Entry.size_bytes`` of entry ``index`` without building it."""
        k = index - self.first
        data = self.refs.get(index) if self.refs else None
        n = len(data) if data is not None else self.ends[k] - (self.ends[k - 1] if k else 0)
        return n + len(self.cids[k]) + 32

    def truncate(self, index: int) -> None:
        """Drop entries ``>= index``."""
        k = max(0, index - self.first)
        if k >= len(self.terms):
            return
        del self.terms[k:], self.kinds[k:], self.seqs[k:], self.ts[k:], self.cids[k:]
        del self.data[(self.ends[k - 1] if k else 0) :]
        del self.ends[k:]
        refs = self.refs
        while refs and next(reversed(refs)) >= self.first + k:  # kept in index order
            refs.popitem()

    def drop_through(self, index: int) -> None:
        """Drop entries ``<= index`` (compaction)."""
        k = min(len(self.terms), index - self.first + 1)
        if k <= 0:
            return
        cut = self.ends[k - 1]
        del self.terms[:k], self.kinds[:k], self.seqs[:k], self.ts[:k], self.cids[:k]
        del self.data[:cut], self.ends[:k]
        self._ids = {c: c for c in self.cids}
        self._ids[""] = ""
        if cut:
            self.ends = array("Q", (e - cut for e in self.ends))
        self.first += k
        if self.refs:
            self.refs = {i: d for i, d in self.refs.items() if i >= self.first}

    def rfind_kind(self, kind: int, lo: int, hi: int) -> int:
        """Largest index in ``lo..hi`` whose kind is ``kind``, or -1."""
        a = max(0, lo - self.first)
        b = min(len(self.kinds), hi - self.first + 1)
        if a >= b:
            return -1
        k = self.kinds.rfind(bytes((kind,)), a, b)
        return -1 if k < 0 else self.first + k


class EntryColumns(Sequence[Entry]):
    """A read-only run of consecutive entries backed by ``ColdEntries`` columns.

    What a store's ``load`` hands over instead of a list of objects (see the module doc):
    indexing builds one ``Entry``, iterating builds them a chunk at a time, a slice (step 1)
    is another view of the same columns. Compares equal to any list or tuple of equal
    entries. ``take`` gives the columns themselves away (``RaftLog`` does); from then on
    every view sharing them raises ``RuntimeError``.
    """

    __slots__ = ("_box", "_lo", "_n")

    def __init__(self, cols: ColdEntries, _box: list[ColdEntries | None] | None = None,
                 _lo: int = 0, _n: int | None = None) -> None:
        self._box: list[ColdEntries | None] = [cols] if _box is None else _box
        self._lo = _lo  # position of this view's first entry in the columns
        self._n = len(cols) if _n is None else _n

    def _cols(self) -> ColdEntries:
        cols = self._box[0]
        if cols is None:
            raise RuntimeError("these entry columns were handed over to a RaftLog")
        return cols

    @property
    def first_index(self) -> int:
        """Index of the first entry (of the entry that would be first, when empty)."""
        return self._cols().first + self._lo

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Entry: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Entry]: ...

    def __getitem__(self, i: int | slice) -> Entry | Sequence[Entry]:
        if isinstance(i, slice):
            a, b, step = i.indices(self._n)
            if step != 1:
                return list(self)[i]
            return EntryColumns(self._cols(), self._box, self._lo + a, max(0, b - a))
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("entry position out of range")
        return self._cols().entry(self.first_index + i)

    def __iter__(self) -> Iterator[Entry]:
        first = self.first_index
        end = first + self._n
        for lo in range(first, end, 4096):
            yield from self._cols().entries(lo, min(lo + 4096, end))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntryColumns | list | tuple):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EntryColumns({self.first_index}..{self.first_index + self._n - 1})"

    def take(self) -> ColdEntries:
        """The columns cut to exactly this view's entries; every view is void after."""
        cols = self._cols()
        self._box[0] = None
        first = cols.first + self._lo
        cols.truncate(first + self._n)
        cols.drop_through(first - 1)
        return cols
