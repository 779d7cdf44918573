"""Bounded reassembly of fragmented datagrams.

How it works
------------
Fragments are grouped by a caller-chosen key (the reliability layer uses
``(sender, incarnation, group_id)``). A group reserves its declared ``total_len`` the moment
its first fragment arrives, so the memory bound holds no matter how the remaining pieces
trickle in: ``bytes_reserved <= max_total_bytes`` and ``len(self) <= max_messages`` at all
times. It also reserves its declared ``count`` against ``max_pieces``: a stored piece costs
~107 bytes of dict slot, int key and bytes object however short it is, so without that
bound 64 groups of 65,535 two-byte pieces (128 KB reserved each) held ~450 MB. Making room evicts the least recently active group; a group with no activity for
``timeout_s`` is dropped by :meth:`expire`. A fragment that disagrees with its group
(count, total length, more bytes than declared) kills the group. Every drop is counted in
``counters`` under ``<prefix><what>``.

The reassembler checks shape only. The joined bytes are a complete datagram with its own
authentication tag, which the caller decodes with ``decode(..., inner=True)``: a wrong
piece from anywhere fails there as ``bad_tag``.

The keys of the last ``remember_completed`` completed groups are kept, so a late duplicate
piece of a finished message is dropped (``late``) instead of starting it over.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from udpraft.wire.envelope import DEFAULT_MAX_MESSAGE
from udpraft.wire.fields import MAX_FRAGMENTS
from udpraft.wire.messages import Fragment

K = TypeVar("K", bound=Hashable)

COUNTER_NAMES = (
    "completed", "expired", "evicted", "too_big", "inconsistent", "duplicate", "late",
)  # fmt: skip


class _Group:
    __slots__ = ("chunks", "count", "last_s", "received", "total_len")

    def __init__(self, count: int, total_len: int, now: float) -> None:
        self.count = count
        self.total_len = total_len
        self.chunks: dict[int, bytes] = {}
        self.received = 0
        self.last_s = now


class Reassembler(Generic[K]):
    """Collects FRAGMENT pieces and returns each complete datagram once."""

    def __init__(
        self,
        *,
        max_total_bytes: int = 4 * DEFAULT_MAX_MESSAGE,
        max_messages: int = 64,
        max_pieces: int = 4 * MAX_FRAGMENTS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        timeout_s: float = 10.0,
        remember_completed: int = 4096,
        counters: dict[str, int] | None = None,
        prefix: str = "reassembly_",
    ) -> None:
        if min(max_total_bytes, max_messages, max_pieces, max_message_bytes) < 1 or timeout_s <= 0:
            raise ValueError("reassembly bounds must be positive")
        self.max_total_bytes = max_total_bytes
        self.max_messages = max_messages
        self.max_pieces = max_pieces
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        self.counters = {} if counters is None else counters
        self._prefix = prefix
        for name in COUNTER_NAMES:
            self.counters.setdefault(prefix + name, 0)
        self._groups: OrderedDict[K, _Group] = OrderedDict()  # least recently active first
        self._reserved = 0
        self._pieces = 0  # sum of the groups' declared counts
        self._completed: OrderedDict[K, None] = OrderedDict()
        self._remember = max(remember_completed, 0)

    def __len__(self) -> int:
        return len(self._groups)

    @property
    def bytes_reserved(self) -> int:
        return self._reserved

    def _count(self, name: str) -> None:
        self.counters[self._prefix + name] += 1

    def _drop(self, key: K) -> None:
        group = self._groups.pop(key)
        self._reserved -= group.total_len
        self._pieces -= group.count

    def add(self, key: K, frag: Fragment, now: float) -> bytes | None:
        """Store one piece; return the whole datagram when this piece completes it."""
        group = self._groups.get(key)
        total = frag.total_len
        if group is None:
            if key in self._completed:
                self._count("late")
                return None
            count = frag.count
            if total > self.max_message_bytes or total > self.max_total_bytes \
                    or count > self.max_pieces:
                self._count("too_big")
                return None
            groups = self._groups
            while groups and (
                len(groups) >= self.max_messages or self._reserved + total > self.max_total_bytes
                or self._pieces + count > self.max_pieces
            ):
                self._drop(next(iter(groups)))
                self._count("evicted")
            group = _Group(frag.count, total, now)
            groups[key] = group
            self._reserved += total
            self._pieces += count
        else:
            if frag.count != group.count or total != group.total_len:
                self._drop(key)
                self._count("inconsistent")
                return None
            self._groups.move_to_end(key)  # order of activity == order of last_s
            group.last_s = now
        if frag.index in group.chunks:
            self._count("duplicate")
            return None
        if not 0 <= frag.index < group.count or group.received + len(frag.chunk) > total:
            self._drop(key)
            self._count("inconsistent")
            return None
        group.chunks[frag.index] = frag.chunk
        group.received += len(frag.chunk)
        if len(group.chunks) < group.count:
            return None
        self._drop(key)
        if group.received != total:
            self._count("inconsistent")
            return None
        self._count("completed")
        if self._remember:
            self._completed[key] = None
            if len(self._completed) > self._remember:
                self._completed.popitem(last=False)
        chunks = group.chunks
        return b"".join([chunks[i] for i in range(group.count)])

    def expire(self, now: float) -> int:
        """Drop groups idle for ``timeout_s``; return how many."""
        dropped = 0
        groups = self._groups
        while groups:
            key = next(iter(groups))
            if groups[key].last_s + self.timeout_s > now:
                break
            self._drop(key)
            dropped += 1
        self.counters[self._prefix + "expired"] += dropped
        return dropped

    def next_deadline(self) -> float | None:
        """When the least recently active group expires, if any group is pending."""
        for group in self._groups.values():
            return group.last_s + self.timeout_s
        return None
