"""WAL run records: many consecutive entries in one frame, with one CRC and column headers.

How this works: a batch of at least ``FileLogStore``'s ``run_min_entries`` entries is
written as frames of up to ``RUN_MAX_ENTRIES`` entries (and about ``RUN_MAX_BYTES`` of
payload) each, instead of a frame per entry. The frame is the usual
``length u32 | crc32c u32 | payload`` (codec.py); the payload is::

    tag u8 (0xE2) | first_index u64 | count u32
    | term u64 x n | kind u8 x n | seq u64 x n | ts_ms u64 x n
    | client_id_len u16 x n | data_len u32 x n | client ids (UTF-8) | data

all little-endian. Tag and index sit where an entry record (0xE1) has them, so scans read
the index of either kind the same way. Encoding is a handful of C-speed column passes and
one CRC per frame (about half the cost of a frame per entry: 361 against 763 ns per 10 B
entry in 1,024-entry batches, measured side by side);
recovery appends the columns to ``ColdEntries`` without a per-entry loop.

A frame holds entries as written; a conflict truncation that falls inside one cannot cut
it (that would lose the entries before the cut, which may have been acknowledged). The
store keeps the frame whole and the next frame, which starts at a lower index than the
previous one ended, replaces the suffix from its first index on (file.py, "overwrite").
"""

from __future__ import annotations

import mmap
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from operator import mul, sub

from udpraft.core import types as et
from udpraft.core.batch import EntryBatch, cut_runs, expand, expand_seqs
from udpraft.core.types import Entry
from udpraft.storage.base import Pieces

RUN_TAG = 0xE2
RUN_HEADER = struct.Struct("<BQI")
RUN_HEADER_SIZE = RUN_HEADER.size  # 13
PER_ENTRY_BYTES = 8 + 1 + 8 + 8 + 2 + 4  # the fixed columns
RUN_MAX_ENTRIES = 4096
RUN_MAX_BYTES = 4 << 20  # payload per frame (one entry may exceed it alone)

_SWAP = sys.byteorder != "little"


def _le(a: array[int]) -> bytes:
    if _SWAP:
        a.byteswap()
    return a.tobytes()


def _cid_columns(ids: Iterable[str]) -> tuple[bytes, bytes]:
    """The client-id length column and blob of a run (each distinct id encoded once)."""
    seen: dict[str, bytes] = {}
    raw = [seen[c] if c in seen else seen.setdefault(c, c.encode("utf-8")) for c in ids]
    return _le(array("H", map(len, raw))), b"".join(raw)


def encode_run(entries: Sequence[Entry]) -> bytes:
    """The run payload for consecutive ``entries`` (at least one). Raises ValueError,
    OverflowError or TypeError for a value the format cannot hold (the caller re-checks
    entry by entry for the precise message)."""
    n = len(entries)
    ids = list(map(et.ENTRY_CLIENT, entries))
    datas = list(map(et.ENTRY_DATA, entries))
    cid_lens, cid_blob = (bytes(2 * n), b"") if ids.count("") == n else _cid_columns(ids)
    return b"".join((
        RUN_HEADER.pack(RUN_TAG, entries[0].index, n),
        _le(array("Q", map(et.ENTRY_TERM, entries))),
        bytes(map(et.ENTRY_KIND, entries)),
        _le(array("Q", map(et.ENTRY_SEQ, entries))),
        _le(array("Q", map(et.ENTRY_TS, entries))),
        cid_lens,
        _le(array("I", map(len, datas))),
        cid_blob,
        *datas,
    ))


def encode_run_batch(b: EntryBatch, off: int, entries: Sequence[Entry]) -> bytes:
    """``encode_run(entries)`` for ``entries``, which are entries ``off ..`` of batch ``b``
    (core/batch.py): the same bytes, with the fixed columns taken from the batch's runs
    instead of read out of every Entry (the payloads from its blob or datas when it has
    them, else from the entries)."""
    n = len(entries)
    cids = b.cids
    if len(cids) == 2 and cids[0] == "":
        cid_lens, cid_blob = bytes(2 * n), b""
    else:  # per run: each id encoded once, its bytes and length repeated (C speed)
        cut = cut_runs(cids, off, n)
        encs = [c.encode("utf-8") for c in cut[::2]]
        counts = cut[1::2]
        cid_lens = _le(array("H", chain.from_iterable(map(repeat, map(len, encs), counts))))
        cid_blob = b"".join(map(mul, encs, counts))
    datas: Sequence[bytes | memoryview]
    if b.datas is not None:
        datas = b.datas[off : off + n]
        lens = array("I", map(len, datas))
    elif b.blob:
        start = b.ends[off - 1] if off else 0
        ends = b.ends[off : off + n]
        lens = array("I", map(sub, ends, chain((start,), ends)))
        datas = (memoryview(b.blob)[start : ends[-1]],)
    else:
        datas = list(map(et.ENTRY_DATA, entries))
        lens = array("I", map(len, datas))
    return b"".join((
        RUN_HEADER.pack(RUN_TAG, b.first + off, n),
        _le(array("Q", expand(b.terms, off, n))),
        bytes(expand(b.kinds, off, n)),
        _le(array("Q", expand_seqs(b.seqs, off, n))),
        _le(array("Q", expand(b.ts, off, n))),
        cid_lens,
        _le(lens),
        cid_blob,
        *datas,
    ))


def encode_runs(entries: Sequence[Entry], pieces: Pieces | None = None
                ) -> list[tuple[Sequence[Entry], bytes]]:
    """``entries`` as run payloads of at most RUN_MAX_ENTRIES entries each, a payload over
    RUN_MAX_BYTES halved until it fits (or holds one entry): no size pass over the usual
    batch, which fits at once. ``pieces``: ``(batch, off, count)`` covering ``entries`` in
    order (their column form, core/batch.py): each run then lies within one piece and is
    encoded from it (``encode_run_batch``)."""
    out: list[tuple[Sequence[Entry], bytes]] = []
    # (entries of the run, its batch and the batch position of its first entry, or None)
    todo: list[tuple[Sequence[Entry], EntryBatch | None, int]] = []
    if pieces is None:
        todo = [(entries[i : i + RUN_MAX_ENTRIES], None, 0)
                for i in range(0, len(entries), RUN_MAX_ENTRIES)]
    else:
        pos = 0
        for piece, start, cnt in pieces:
            todo += [(entries[pos + i : pos + min(cnt, i + RUN_MAX_ENTRIES)], piece, start + i)
                     for i in range(0, cnt, RUN_MAX_ENTRIES)]
            pos += cnt
        if pos != len(entries):
            raise ValueError(f"batch pieces cover {pos} entries, not {len(entries)}")
    todo.reverse()
    while todo:
        run, batch, off = todo.pop()
        payload = encode_run(run) if batch is None else encode_run_batch(batch, off, run)
        if len(payload) > RUN_MAX_BYTES and len(run) > 1:
            half = len(run) // 2
            todo += ((run[half:], batch, off + half), (run[:half], batch, off))
            continue
        out.append((run, payload))
    return out


class RunColumns:
    """The decoded, checked columns of one run record (views into the frame's bytes)."""

    __slots__ = ("cid_blob", "cid_lens", "count", "data", "data_lens", "first", "kinds", "seqs",
                 "terms", "ts")

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self.terms: array[int] = array("Q")
        self.kinds = b""
        self.seqs: array[int] = array("Q")
        self.ts: array[int] = array("Q")
        self.cid_lens: array[int] = array("H")
        self.data_lens: array[int] = array("I")
        self.cid_blob = b""
        self.data = b""


def decode_run(buf: bytes | mmap.mmap, start: int, end: int, valid_kinds: frozenset[int]) -> RunColumns:
    """Check and split the run record ``buf[start:end]``; raises ValueError with a reason."""
    if end - start < RUN_HEADER_SIZE:
        raise ValueError(f"run record of {end - start} bytes is shorter than its header")
    tag, first, n = RUN_HEADER.unpack_from(buf, start)
    if tag != RUN_TAG:
        raise ValueError(f"unknown record tag 0x{tag:02x}")
    if n < 1:
        raise ValueError("run record with no entries")
    p = start + RUN_HEADER_SIZE
    if p + n * PER_ENTRY_BYTES > end:
        raise ValueError("run record shorter than its column headers")
    r = RunColumns(first, n)

    def take(a: array[int], width: int) -> None:
        nonlocal p
        a.frombytes(buf[p : p + width * n])
        if _SWAP:
            a.byteswap()
        p += width * n

    take(r.terms, 8)
    r.kinds = bytes(buf[p : p + n])
    p += n
    take(r.seqs, 8)
    take(r.ts, 8)
    take(r.cid_lens, 2)
    take(r.data_lens, 4)
    if not set(r.kinds) <= valid_kinds:
        raise ValueError("unknown entry kind in a run record")
    cids = sum(r.cid_lens)
    if p + cids + sum(r.data_lens) != end:
        raise ValueError("run record lengths do not match the record size")
    r.cid_blob = bytes(buf[p : p + cids])
    r.data = bytes(buf[p + cids : end])
    return r
