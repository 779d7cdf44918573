"""Size safety nets: AppendEntries chunking and fragmentation of oversize datagrams.

The core already bounds the bytes it puts in one AppendEntries; these helpers make sure a
datagram never exceeds ``max_datagram_bytes`` anyway.

- :func:`split_append_entries` cuts one AppendEntries into consecutive ones, each provably
  under the bound (the size estimate is an upper bound of the encoding in bodies.py, so no
  trial encode is needed). Chunk k+1's ``prev_index``/``prev_term`` are chunk k's last
  entry, so the follower sees a normal run of appends. An entry too big on its own stays
  alone in its chunk: it is the fragmenter's job.
- :func:`split_into_fragments` cuts a sealed datagram (FLAG_INNER, its own tag) into
  FRAGMENT bodies. All chunks but the last have the same size; the receiver does not rely
  on that: it only needs every index once and the lengths to add up to ``total_len``,
  and the inner tag then vouches for the joined bytes.
"""

from __future__ import annotations

from udpraft.core.messages import AppendEntries
from udpraft.core.types import Entry
from udpraft.wire.envelope import (
    BODY_LEN,
    HEADER_SIZE,
    TAG_SIZE,
    MessageTooLarge,
    WireContext,
)
from udpraft.wire.fields import MAX_FRAGMENTS
from udpraft.wire.messages import Fragment

# What one entry adds to the AppendEntries columns (append.py) at worst, when it starts a
# new run in every column: term, ts_ms "19 digits,1," (22 each), seq "19 digits,1,1," (24),
# kind "k,1," (4), length "10 digits,1," (13), client id: its JSON string (<= 2 + 6 bytes
# per character, worst case \u00XX escapes) ",1," -> 85 + 6 per character. A run that
# goes on costs less (its count grows by at most a digit per 9x entries).
_ENTRY_JSON_MAX = 96
_APPEND_HEAD_JSON_MAX = 128  # [term,prev_index,prev_term,commit,n,[],[],[],[],[],[]]
_FRAGMENT_HEAD_JSON_MAX = 96  # [group_id,index,count,total_len]


def entry_size_bound(entry: Entry) -> int:
    """Upper bound of the bytes ``entry`` adds to an encoded AppendEntries."""
    return len(entry.data) + 6 * len(entry.client_id) + _ENTRY_JSON_MAX


def append_entries_size_bound(msg: AppendEntries) -> int:
    """Upper bound of the datagram :func:`udpraft.wire.encode` makes of ``msg``."""
    return _append_overhead(msg) + sum(map(entry_size_bound, msg.entries))


def _append_overhead(msg: AppendEntries) -> int:
    ids = len(msg.src.encode("utf-8")) + len(msg.dst.encode("utf-8"))
    return HEADER_SIZE + ids + BODY_LEN.size + _APPEND_HEAD_JSON_MAX + TAG_SIZE


def split_append_entries(msg: AppendEntries, max_bytes: int) -> list[AppendEntries]:
    """``msg`` as consecutive AppendEntries that each encode to at most ``max_bytes``
    (except a single entry too big on its own, which needs fragments)."""
    overhead = _append_overhead(msg)
    if overhead + sum(map(entry_size_bound, msg.entries)) <= max_bytes:
        return [msg]
    chunks: list[list[Entry]] = []
    current: list[Entry] = []
    size = overhead
    for entry in msg.entries:
        cost = entry_size_bound(entry)
        if current and size + cost > max_bytes:
            chunks.append(current)
            current, size = [], overhead
        current.append(entry)
        size += cost
    chunks.append(current)
    out = []
    prev_index, prev_term = msg.prev_index, msg.prev_term
    for chunk in chunks:
        out.append(
            AppendEntries(
                msg.src, msg.dst, msg.term, prev_index, prev_term, tuple(chunk), msg.commit
            )
        )
        prev_index, prev_term = chunk[-1].index, chunk[-1].term
    return out


def fragment_chunk_size(ctx: WireContext, dst: str = "") -> int:
    """Largest chunk a FRAGMENT datagram to ``dst`` can carry within the size bound."""
    return ctx.max_datagram_bytes - ctx.overhead(dst) - BODY_LEN.size - _FRAGMENT_HEAD_JSON_MAX


def split_into_fragments(inner: bytes, group_id: int, chunk_size: int) -> list[Fragment]:
    """FRAGMENT messages carrying ``inner`` (a sealed FLAG_INNER datagram)."""
    total = len(inner)
    if chunk_size < 1 or total < 1:
        raise ValueError("need a positive chunk size and a non-empty datagram")
    count = -(-total // chunk_size)
    if count > MAX_FRAGMENTS:
        raise MessageTooLarge(f"{total} bytes need {count} fragments > {MAX_FRAGMENTS}")
    return [
        Fragment(group_id, i, count, total, inner[i * chunk_size : (i + 1) * chunk_size])
        for i in range(count)
    ]
