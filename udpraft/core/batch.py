"""A batch of consecutive new entries in column form, as it arrived: ``EntryBatch``.

How this works: entries reach a log in batches whose columns are already known — a
follower decodes AppendEntries from run-length coded columns (wire/append.py), and a
leader's ``propose_datas`` makes entries that share term, kind, client id, seq and
timestamp. The batch keeps those columns beside its Entry objects, and when ``RaftLog``
later moves the entries into its cold columns (``ColdEntries.extend_batch``) it copies
runs (``array.extend`` of a ``repeat``, at C speed) instead of reading six fields out of
every Entry object: ~380 ns per 10 B entry that way.

Columns are flat lists as on the wire: ``[value, count, value, count, ...]`` for term, kind
(an int), client id and timestamp, ``[first, step, count, ...]`` (step 0 or 1) for seq.
Payloads are ``datas`` (one bytes object per entry), or ``blob`` with ``ends`` (the end
offset of each payload in ``blob``) when every payload is shorter than ``REF_MIN``
(``max_len``: the longest), or neither: the cold columns then take the entries' own
payloads (the wire decoder keeps no blob when a payload is large, so as not to hold the
whole body beside the entries' copies; large payloads are kept by reference).

Whoever builds a batch vouches that it describes exactly the entries it travels with:
``uniform`` (the leader) and the wire decoder build it from the same values as the
entries; ``of`` builds one from entries (the simulator, tests). A batch is never changed
after it is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, groupby, repeat
from typing import Any

from udpraft.core.types import Entry


class EntryBatch:
    """Entries ``first .. first + n - 1`` column by column (see the module doc)."""

    __slots__ = ("blob", "cids", "datas", "ends", "first", "kinds", "max_len", "n", "seqs",
                 "terms", "ts")

    def __init__(
        self, first: int, n: int, terms: list[int], kinds: list[int], cids: list[Any],
        seqs: list[int], ts: list[int], *, datas: Sequence[bytes] | None = None,
        blob: bytes = b"", ends: Sequence[int] = (), max_len: int = -1,
    ) -> None:
        self.first = first
        self.n = n
        self.terms = terms
        self.kinds = kinds
        self.cids = cids
        self.seqs = seqs
        self.ts = ts
        self.datas = datas
        self.blob = blob
        self.ends = ends
        self.max_len = max_len  # -1: not known (measured when needed)

    @classmethod
    def uniform(cls, first: int, term: int, kind: int, cid: str, seq: int, ts: int,
                datas: Sequence[bytes]) -> EntryBatch:
        """Entries ``first ..`` with one payload each from ``datas`` and every other field
        the same (what a leader's ``propose_datas`` appends)."""
        n = len(datas)
        return cls(first, n, [term, n], [int(kind), n], [cid, n], [seq, 0, n], [ts, n],
                   datas=datas)

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> EntryBatch:
        """The batch of consecutive ``entries`` (at least one), column by column."""
        datas = tuple(e.data for e in entries)
        return cls(entries[0].index, len(entries), runs_of(e.term for e in entries),
                   runs_of(int(e.kind) for e in entries), runs_of(e.client_id for e in entries),
                   seq_runs_of([e.seq for e in entries]), runs_of(e.ts_ms for e in entries),
                   datas=datas, max_len=max(map(len, datas)))


def runs_of(col: Iterable[Any]) -> list[Any]:
    """``[value, count, ...]`` of consecutive equal values."""
    vals = list(col)
    if vals and vals.count(vals[0]) == len(vals):  # one run (a batch): C speed
        return [vals[0], len(vals)]
    out: list[Any] = []
    for v, g in groupby(vals):
        out.append(v)
        out.append(len(list(g)))
    return out


def seq_runs_of(seqs: list[int]) -> list[int]:
    """``[first, step, count, ...]``: runs of equal (step 0) or consecutive (step 1) seqs."""
    n = len(seqs)
    first = seqs[0] if n else 0
    if seqs.count(first) == n:  # the common cases at C speed: all alike (no client) ...
        return [first, 0, n] if n else []
    if seqs == list(range(first, first + n)):  # ... or one client's consecutive requests
        return [first, 1, n]
    out: list[int] = []
    i = 0
    while i < n:
        first = seqs[i]
        j = i + 1
        if j < n and seqs[j] == first + 1:
            while j < n and seqs[j] == seqs[j - 1] + 1:
                j += 1
            out += (first, 1, j - i)
        else:
            while j < n and seqs[j] == first:
                j += 1
            out += (first, 0, j - i)
        i = j
    return out


def cut_runs(runs: list[Any], off: int, cnt: int) -> list[Any]:
    """``[value, count, ...]`` runs of positions ``off .. off + cnt - 1``."""
    if len(runs) == 2:
        return [runs[0], cnt]
    out: list[Any] = []
    for v, c in _cut(runs[::2], runs[1::2], off, cnt):
        out += (v, c)
    return out


def cut_seqs(triples: list[int], off: int, cnt: int) -> list[int]:
    """``[first, step, count, ...]`` of positions ``off .. off + cnt - 1``."""
    out: list[int] = []
    pos = 0
    for i in range(0, len(triples), 3):
        first, step, count = triples[i : i + 3]
        lo, hi = max(off, pos), min(off + cnt, pos + count)
        if lo < hi:
            out += (first + step * (lo - pos), step, hi - lo)
        pos += count
        if pos >= off + cnt:
            break
    return out


def expand(runs: list[Any], off: int, cnt: int) -> Iterator[Any]:
    """The values at positions ``off .. off + cnt - 1`` of ``[value, count, ...]`` runs."""
    if len(runs) == 2:
        return repeat(runs[0], cnt)
    cut = cut_runs(runs, off, cnt)
    return chain.from_iterable(map(repeat, cut[::2], cut[1::2]))


def expand_seqs(triples: list[int], off: int, cnt: int) -> Iterator[int]:
    """The values at positions ``off .. off + cnt - 1`` of ``[first, step, count, ...]``."""
    cut = cut_seqs(triples, off, cnt)
    return chain.from_iterable(
        range(first, first + count) if step else repeat(first, count)
        for first, step, count in zip(cut[::3], cut[1::3], cut[2::3])
    )


def _cut(values: list[Any], counts: list[int], off: int, cnt: int) -> Iterator[tuple[Any, int]]:
    """(value, how many) of the runs, restricted to positions ``off .. off + cnt - 1``."""
    pos = 0
    end = off + cnt
    for v, c in zip(values, counts):
        lo, hi = max(off, pos), min(end, pos + c)
        if lo < hi:
            yield v, hi - lo
        pos += c
        if pos >= end:
            return
