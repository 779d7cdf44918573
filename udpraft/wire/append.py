"""The AppendEntries body: entry fields as columns of runs, and the payloads back to back.

How this works (layout in bodies.py's docstring): the encoder run-length codes each column
(``runs_of``, ``seq_runs_of`` in core/batch.py) or, when the message carries the batch the leader appended the
entries with (core/batch.py), cuts the batch's runs; the encoding of the last entry batch
is kept (``_APPEND_CACHE``) and reused for every follower. The decoder validates each run
(``_runs``, ``_seqs``) and builds the entries column by column through the slot setters,
handing the decoded columns to the log as an ``EntryBatch``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, chain, repeat
from typing import Any

from udpraft.core import messages as cm
from udpraft.core.batch import EntryBatch, cut_runs, cut_seqs, runs_of, seq_runs_of
from udpraft.core.columns import REF_MIN, build_entries
from udpraft.core.types import (
    ENTRY_CLIENT,
    ENTRY_DATA,
    ENTRY_INDEX,
    ENTRY_KIND,
    ENTRY_SEQ,
    ENTRY_TERM,
    ENTRY_TS,
    Entry,
)
from udpraft.wire.envelope import MAX_U63, DropReason, EncodeError
from udpraft.wire.fields import (
    _KINDS,
    MAX_BLOBS,
    MAX_CLIENT_ID_CHARS,
    MAX_FRAGMENT_TOTAL,
    BodyError,
    _dumps,
    _int,
    _shape,
)
from udpraft.wire.messages import WireMessage

_ENTRY_INDEX, _ENTRY_DATA = ENTRY_INDEX, ENTRY_DATA
_E_TERM, _E_KIND, _E_CID, _E_SEQ, _E_TS = ENTRY_TERM, ENTRY_KIND, ENTRY_CLIENT, ENTRY_SEQ, ENTRY_TS


class _AppendCache:
    """The encoding of the last entry batch, shared by the appends to every follower."""

    __slots__ = ("cols", "entries", "payload")

    def __init__(self) -> None:
        self.entries: tuple[Entry, ...] = ()
        self.cols = b""
        self.payload = b""


_APPEND_CACHE = _AppendCache()


def _enc_append(msg: cm.AppendEntries) -> tuple[bytes, Sequence[bytes]]:
    es = msg.entries
    head = _dumps((msg.term, msg.prev_index, msg.prev_term, msg.commit), "AppendEntries")
    if not es:
        return head[:-1] + b",0,[],[],[],[],[],[]]", ()
    c = _APPEND_CACHE
    # Tuple equality compares by identity first: the same entries to another follower
    # match at C speed (and equal entries encode equally anyway).
    if len(es) != len(c.entries) or es != c.entries:
        first = msg.prev_index + 1
        n = len(es)
        b = msg.batch
        off = first - b.first if b is not None else -1
        if b is not None and off >= 0 and off + n <= b.n and es[0].index == first \
                and es[-1].index == first + n - 1:
            # The leader appended these entries with ``b``: its runs are their columns
            # (core/batch.py); the entries themselves came from the log in index order.
            datas = list(b.datas[off : off + n]) if b.datas is not None else list(map(_ENTRY_DATA, es))
            if set(map(type, datas)) != {bytes}:
                raise EncodeError("AppendEntries: entry data must be bytes")
            cols = (
                n, cut_runs(b.terms, off, n), cut_runs(b.kinds, off, n), cut_runs(b.cids, off, n),
                cut_seqs(b.seqs, off, n), cut_runs(b.ts, off, n), runs_of(map(len, datas)),
            )
        else:
            if list(map(_ENTRY_INDEX, es)) != list(range(first, first + n)):
                raise EncodeError("AppendEntries: entry indices must run from prev_index + 1")
            datas = list(map(_ENTRY_DATA, es))
            if set(map(type, datas)) != {bytes}:
                raise EncodeError("AppendEntries: entry data must be bytes")
            cols = (
                n, runs_of(map(_E_TERM, es)), runs_of(map(int, map(_E_KIND, es))),
                runs_of(map(_E_CID, es)), seq_runs_of(list(map(_E_SEQ, es))), runs_of(map(_E_TS, es)),
                runs_of(map(len, datas)),
            )
        enc = _dumps(cols, "AppendEntries")
        c.entries, c.cols, c.payload = tuple(es), enc[1:-1], b"".join(datas)
    return b"".join((head[:-1], b",", c.cols, b"]")), (c.payload,)


def _runs(flat: Any, n: int, check: Callable[[Any], bool], what: str) -> Iterable[Any]:
    """Validated expansion of ``[value, count, ...]`` into ``n`` values."""
    if type(flat) is not list or len(flat) % 2:
        raise BodyError(DropReason.BAD_BODY, what)
    values = flat[::2]
    counts = flat[1::2]
    if (
        any(type(k) is not int for k in counts)
        or (counts and min(counts) < 1)
        or sum(counts) != n
        or not all(map(check, values))
    ):
        raise BodyError(DropReason.BAD_FIELD, what)
    if len(values) == 1:
        return repeat(values[0], n)
    return chain.from_iterable(map(repeat, values, counts))


def _is_u63(v: Any) -> bool:
    return type(v) is int and 0 <= v < MAX_U63


def _is_cid(v: Any) -> bool:
    return type(v) is str and len(v) <= MAX_CLIENT_ID_CHARS


def _is_kind(v: Any) -> bool:
    return type(v) is int and v in _KINDS


def _is_len(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_FRAGMENT_TOTAL


def _seqs(flat: Any, n: int, what: str) -> Iterable[int]:
    if type(flat) is not list or len(flat) % 3:
        raise BodyError(DropReason.BAD_BODY, what)
    parts = []
    total = 0
    for i in range(0, len(flat), 3):
        first, step, count = flat[i : i + 3]
        if (
            not _is_u63(first) or type(step) is not int or step not in (0, 1)
            or type(count) is not int or not 1 <= count <= n or first + step * (count - 1) >= MAX_U63
        ):
            raise BodyError(DropReason.BAD_FIELD, what)
        parts.append(range(first, first + count) if step else repeat(first, count))
        total += count
    if total != n:
        raise BodyError(DropReason.BAD_FIELD, what)
    return parts[0] if len(parts) == 1 else chain.from_iterable(parts)


def _entries_from_columns(
    h: list[Any], blob: bytes, first_index: int
) -> tuple[tuple[Entry, ...], EntryBatch | None]:
    """The entries of an AppendEntries body, and the same in column form (core/batch.py;
    the runs as decoded, each checked above) for the log to keep."""
    n, terms, kinds, cids, seqs, ts, lens = h
    if type(n) is not int or not 0 <= n <= MAX_BLOBS:
        raise BodyError(DropReason.BAD_FIELD, "entries.count")
    if first_index + n > MAX_U63:
        raise BodyError(DropReason.BAD_FIELD, "entries.index")
    c_term = _runs(terms, n, _is_u63, "entries.term")
    c_kind = _runs(kinds, n, _is_kind, "entries.kind")
    c_cid = _runs(cids, n, _is_cid, "entries.client_id")
    c_seq = _seqs(seqs, n, "entries.seq")
    c_ts = _runs(ts, n, _is_u63, "entries.ts_ms")
    c_len = list(_runs(lens, n, _is_len, "entries.data_len"))
    ends = list(accumulate(c_len))
    if (ends[-1] if ends else 0) != len(blob):
        raise BodyError(DropReason.BAD_FIELD, "entries.data_total")
    c_data = map(blob.__getitem__, map(slice, chain((0,), ends), ends))
    c_kind_enum = map(_KINDS.__getitem__, c_kind)
    indices = range(first_index, first_index + n)
    max_len = max(c_len) if n else 0
    # With a large payload the batch keeps no blob (it would hold the whole body in memory
    # beside the entries' own copies): the cold columns then take payloads from the entries.
    small = max_len < REF_MIN
    batch = EntryBatch(first_index, n, terms, kinds, cids, seqs, ts, blob=blob if small else b"",
                       ends=ends if small else (), max_len=max_len) if n else None
    entries = build_entries(n, indices, c_term, c_data, c_kind_enum, c_cid, c_seq, c_ts)
    return tuple(entries), batch


def _dec_append(h: Any, blob: bytes, sender: str, dst: str) -> WireMessage:
    _shape(h, 11, "AppendEntries")
    term, prev_index, prev_term, commit = h[:4]
    _int(term, "term")
    _int(prev_index, "prev_index")
    _int(prev_term, "prev_term")
    _int(commit, "commit")
    entries, batch = _entries_from_columns(h[4:], blob, prev_index + 1)
    return cm.AppendEntries(sender, dst, term, prev_index, prev_term, entries, commit, batch)
