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

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain, groupby, repeat
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
    """``[value, count, ...]`` runs of positions ``off .. off + cnt - 1`` (clipped to the
    runs' length). The runs to cut are found by binary search over their end positions and
    the ones between copied as a slice: ~1 us whatever their number (a 64-client batch
    has 64 runs; a loop over them took ~20-30 us)."""
    if len(runs) == 2:
        return [runs[0], min(cnt, runs[1] - off)] if off < runs[1] and cnt > 0 else []
    counts = runs[1::2]
    ends = list(accumulate(counts))
    end = min(off + cnt, ends[-1] if ends else 0)
    if off >= end:
        return []
    if off == 0 and end == ends[-1]:  # all of them (a whole batch)
        return list(runs)
    i = bisect_right(ends, off)  # the run holding position off
    k = bisect_right(ends, end - 1)  # the run holding the last position
    if i == k:
        return [runs[2 * i], end - off]
    return [runs[2 * i], ends[i] - off, *runs[2 * i + 2 : 2 * k], runs[2 * k],
            end - ends[k - 1]]


def cut_seqs(triples: list[int], off: int, cnt: int) -> list[int]:
    """``[first, step, count, ...]`` of positions ``off .. off + cnt - 1`` (clipped as
    ``cut_runs``, and found the same way)."""
    counts = triples[2::3]
    ends = list(accumulate(counts))
    end = min(off + cnt, ends[-1] if ends else 0)
    if off >= end:
        return []
    if off == 0 and end == ends[-1]:
        return list(triples)
    i = bisect_right(ends, off)
    k = bisect_right(ends, end - 1)
    first, step, count = triples[3 * i : 3 * i + 3]
    head = first + step * (off - (ends[i] - count))
    if i == k:
        return [head, step, end - off]
    last_first, last_step, last_count = triples[3 * k : 3 * k + 3]
    return [head, step, ends[i] - off, *triples[3 * i + 3 : 3 * k], last_first, last_step,
            end - (ends[k] - last_count)]


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
