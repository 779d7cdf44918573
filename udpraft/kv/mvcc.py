"""Multi-version key index: etcd's MVCC store (revisions, history, compaction), in memory.

How this works: one global revision counts committed write transactions (it starts at 1, so
the first write is revision 2, as in etcd). Each key keeps its history, a list of records in
revision order; a deletion appends a tombstone (version 0). Two sorted key lists make ranges
O(log n + k): ``live`` holds the keys present now, ``all_keys`` every key with retained
history (for reads at a past revision). The current value of a key is the last record of its
history, so reads at the head revision never search.

Writes come in transactions: ``begin()``, any number of ``put``/``delete_range``, ``end()``.
All changes of one transaction share revision ``rev + 1`` and are also appended, in order, to
``log`` — the change feed that watchers catch up from. Inside a transaction reads already see
its own changes (etcd's write view).

Compaction at revision C keeps, per key, the newest record at or before C (unless it is a
tombstone) and everything after C; older history and the feed before C are dropped, and any
read or watch that needs them fails with "required revision has been compacted".
Pure: no IO, no clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

from udpraft.kv import errors
from udpraft.kv.types import K_MOD, KV

_mod = itemgetter(K_MOD)
_rev0 = itemgetter(0)


def in_range(k: str, key: str, end: str | None) -> bool:
    if end is None:
        return k == key
    return key <= k and (end == "" or k < end)


class Store:
    __slots__ = ("_changes", "all_keys", "compact_rev", "hist", "live", "log", "rev", "size_bytes")

    def __init__(self) -> None:
        self.rev = 1
        self.compact_rev = -1  # etcd's compactMainRev before any compaction
        self.hist: dict[str, list[KV]] = {}
        self.live: list[str] = []
        self.all_keys: list[str] = []
        self.log: list[tuple[int, list[KV]]] = []
        self._changes: list[KV] | None = None
        self.size_bytes = 0

    # ================================================================== reads

    def _current(self, rev: int) -> bool:
        """Can a read at ``rev`` use the head (last record of each key)?"""
        ch = self._changes
        if ch:
            return rev == self.rev + 1
        return rev == self.rev

    def read_rev(self) -> int:
        """The revision a read inside the current transaction sees (etcd: beginRev(+1))."""
        return self.rev + 1 if self._changes else self.rev

    def check_rev(self, rev: int) -> None:
        """Raise etcd's error for a read at ``rev`` (0 = now) that cannot be served."""
        if rev > self.read_rev():
            raise errors.err(errors.FUTURE_REV)
        if 0 < rev < self.compact_rev:
            raise errors.err(errors.COMPACTED)

    def get(self, key: str, rev: int = 0) -> KV | None:
        h = self.hist.get(key)
        if h is None:
            return None
        if rev <= 0 or self._current(rev):
            rec = h[-1]
        else:
            i = bisect_right(h, rev, key=_mod)
            if i == 0:
                return None
            rec = h[i - 1]
        return rec if rec[3] else None

    def range(self, key: str, end: str | None, rev: int = 0, limit: int = 0) -> tuple[list[KV], int]:
        """Records in [key, end) at ``rev`` (0 = now), in key order: (first ``limit`` or all,
        total count). The caller has checked ``rev`` with ``check_rev``."""
        if end is None:
            rec = self.get(key, rev)
            return ([rec], 1) if rec is not None else ([], 0)
        if rev <= 0 or self._current(rev):
            keys = self.live
            lo = bisect_left(keys, key)
            hi = len(keys) if end == "" else bisect_left(keys, end, lo)
            if hi <= lo:
                return [], 0
            stop = hi if limit <= 0 else min(hi, lo + limit)
            hist = self.hist
            return [hist[k][-1] for k in keys[lo:stop]], hi - lo
        out: list[KV] = []
        n = 0
        for k in self._keys_between(self.all_keys, key, end):
            rec = self.get(k, rev)
            if rec is not None:
                n += 1
                if limit <= 0 or len(out) < limit:
                    out.append(rec)
        return out, n

    def count(self, key: str, end: str | None, rev: int = 0) -> int:
        if end is not None and (rev <= 0 or self._current(rev)):
            keys = self.live
            lo = bisect_left(keys, key)
            hi = len(keys) if end == "" else bisect_left(keys, end, lo)
            return max(0, hi - lo)
        return self.range(key, end, rev)[1]

    @staticmethod
    def _keys_between(keys: list[str], key: str, end: str) -> list[str]:
        lo = bisect_left(keys, key)
        hi = len(keys) if end == "" else bisect_left(keys, end, lo)
        return keys[lo:hi] if hi > lo else []

    # ================================================================== writes

    def begin(self) -> None:
        self._changes = []

    def put(self, key: str, value: str, lease: int) -> tuple[KV, KV | None]:
        """Write ``key`` in the open transaction; returns (new record, previous live record)."""
        ch = self._changes
        assert ch is not None, "put outside a transaction"
        rev = self.rev + 1
        h = self.hist.get(key)
        prev: KV | None
        if h is None:
            h = self.hist[key] = []
            insort(self.all_keys, key)
            prev = None
        else:
            prev = h[-1]
            if not prev[3]:
                prev = None
        if prev is None:
            rec = (key, rev, rev, 1, value, lease)
            insort(self.live, key)
        else:
            rec = (key, prev[1], rev, prev[3] + 1, value, lease)
        h.append(rec)
        ch.append(rec)
        self.size_bytes += len(key) + len(value) + 48
        return rec, prev

    def delete_range(self, key: str, end: str | None) -> list[KV]:
        """Delete every live key in [key, end) in the open transaction; returns what was there."""
        ch = self._changes
        assert ch is not None, "delete outside a transaction"
        rev = self.rev + 1
        live = self.live
        if end is None:
            lo = bisect_left(live, key)
            hi = lo + 1 if lo < len(live) and live[lo] == key else lo
        else:
            lo = bisect_left(live, key)
            hi = len(live) if end == "" else bisect_left(live, end, lo)
        if hi <= lo:
            return []
        hist = self.hist
        gone: list[KV] = []
        for k in live[lo:hi]:
            h = hist[k]
            gone.append(h[-1])
            tomb = (k, 0, rev, 0, "", 0)
            h.append(tomb)
            ch.append(tomb)
        del live[lo:hi]
        self.size_bytes += 48 * len(gone)
        return gone

    def end(self) -> list[KV]:
        """Close the transaction; a non-empty one becomes revision ``rev + 1``. Returns the
        changes (empty: nothing happened, the revision stays)."""
        ch = self._changes or []
        self._changes = None
        if not ch:
            return []
        self.rev += 1
        self.log.append((self.rev, ch))
        return ch

    # ================================================================== feed, compaction

    def changes_since(self, rev: int, max_revs: int) -> list[tuple[int, list[KV]]]:
        """The feed from revision ``rev`` on: at most ``max_revs`` revisions."""
        i = bisect_left(self.log, rev, key=_rev0)
        return self.log[i : i + max_revs]

    def compact(self, rev: int) -> None:
        if rev <= self.compact_rev:
            raise errors.err(errors.COMPACTED)
        if rev > self.rev:
            raise errors.err(errors.FUTURE_REV)
        hist = self.hist
        dropped = False
        for k in list(hist):
            h = hist[k]
            if h[0][2] > rev:
                continue
            i = bisect_right(h, rev, key=_mod)
            base = h[i - 1]
            cut = i - 1 if base[3] else i
            if cut:
                del h[:cut]
            if not h:
                del hist[k]
                dropped = True
        if dropped:
            self.all_keys = [k for k in self.all_keys if k in hist]
        i = bisect_left(self.log, rev, key=_rev0)
        if i < len(self.log) and self.log[i][0] == rev:
            # etcd keeps the revision-C records that are still each key's newest at C
            kept = [r for r in self.log[i][1] if hist.get(r[0], [None])[0] is r]
            self.log = ([(rev, kept)] if kept else []) + self.log[i + 1 :]
        else:
            self.log = self.log[i:]
        self.compact_rev = rev

    # ================================================================== snapshot

    def to_obj(self) -> dict[str, Any]:
        first = self.log[0][0] if self.log else self.rev + 1
        hist = self.hist
        base = [list(hist[k][0]) for k in self.all_keys if hist[k][0][2] < first]
        return {
            "rev": self.rev,
            "compact": self.compact_rev,
            "base": base,
            "log": [[r, [list(x) for x in ch]] for r, ch in self.log],
        }

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Store:
        s = cls()
        s.compact_rev = o["compact"]
        hist = s.hist
        for b in o["base"]:
            rec: KV = tuple(b)
            hist[rec[0]] = [rec]
        s.log = []
        for r, ch in o["log"]:
            recs: list[KV] = [tuple(x) for x in ch]
            for rec in recs:
                hist.setdefault(rec[0], []).append(rec)
            s.log.append((r, recs))
        s.rev = o["rev"]
        s.all_keys = sorted(hist)
        s.live = [k for k in s.all_keys if hist[k][-1][3]]
        s.size_bytes = sum(len(r[0]) + len(r[4]) + 48 for h in hist.values() for r in h)
        return s

    def live_records(self) -> Iterable[KV]:
        hist = self.hist
        return (hist[k][-1] for k in self.live)
