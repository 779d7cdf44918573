"""Watches: every change to a key or range, in revision order, from any revision kept.

How this works: the hub listens to the state machine. A *synced* watcher (caught up with the
head) gets each committed revision's matching changes queued as one response, as etcd sends
one response per revision. A watcher that starts in the past is *unsynced*: it reads the
store's change feed in batches of up to 1000 revisions, lazily, whenever its stream has room,
and joins the synced set once it reaches the head — so no history is ever copied into memory.

Every queue has a bound. A synced watcher whose queue passes ``MAX_PENDING`` responses (its
client reads too slowly) is demoted to unsynced at the first revision it has not received
and catches up from the feed later, like etcd's "victim" watchers; if compaction removes
that history first, it is cancelled with ``compact_revision``, as etcd does.

Responses are etcd's WatchResponse dicts with a header holding only the revision; the HTTP
face fills in cluster, member and term. ``prev_kv`` is read at ``mod_revision - 1`` when the
response is built (none for a key's creation), exactly where etcd looks.
Pure: the HTTP face passes a ``wake`` callback and drains ``pop``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from udpraft.kv.jsonfmt import event_json
from udpraft.kv.machine import KVMachine
from udpraft.kv.types import FILTER_NODELETE, FILTER_NOPUT, KV

MAX_PENDING = 1024  # responses queued per synced watcher (etcd: chanBufLen)
CATCHUP_MAX_REVS = 1000  # revisions per catch-up response (etcd: watchBatchMaxRevs)
MAX_CONTROL = 4096  # created/canceled/progress answers waiting to be written
MAX_WATCHERS_PER_STREAM = 10_000

ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"
ERR_TOO_MANY = "udpraft: too many watchers on this stream"


class WatchCreate(NamedTuple):
    key: str
    end: str | None
    start_revision: int = 0
    progress_notify: bool = False
    filters: tuple[int, ...] = ()
    prev_kv: bool = False
    watch_id: int = 0
    fragment: bool = False


class Watcher:
    __slots__ = ("end", "id", "key", "next_rev", "no_delete", "no_put", "prev_kv", "queue",
                 "stream", "synced")

    def __init__(self, stream: WatchStream, wid: int, req: WatchCreate, next_rev: int) -> None:
        self.stream = stream
        self.id = wid
        self.key = req.key
        self.end = req.end
        self.prev_kv = req.prev_kv
        self.no_put = FILTER_NOPUT in req.filters
        self.no_delete = FILTER_NODELETE in req.filters
        self.next_rev = next_rev
        self.synced = False
        self.queue: deque[tuple[int, list[KV]]] = deque()

    def select(self, changes: list[KV]) -> list[KV]:
        key, end = self.key, self.end
        out = []
        for kv in changes:
            k = kv[0]
            if (k == key) if end is None else (key <= k and (end == "" or k < end)):
                if (self.no_put and kv[3]) or (self.no_delete and not kv[3]):
                    continue
                out.append(kv)
        return out


class WatchHub:
    def __init__(self, machine: KVMachine) -> None:
        self.machine = machine
        self.synced: dict[int, Watcher] = {}  # keyed by id(watcher)
        self.streams = 0
        self.demotions = 0
        machine.listeners.append(self.on_commit)
        machine.reset_listeners.append(self.on_reset)

    def on_commit(self, rev: int, changes: list[KV]) -> None:
        if not self.synced:
            return
        demote = []
        for w in self.synced.values():
            if rev < w.next_rev:
                continue
            w.next_rev = rev + 1
            evs = w.select(changes)
            if not evs:
                continue
            w.queue.append((rev, evs))
            if len(w.queue) > MAX_PENDING:
                demote.append(w)
            w.stream.wake()
        for w in demote:
            self.demote(w)

    def on_reset(self) -> None:
        """The machine jumped to a snapshot: every watcher catches up from the new feed
        (or learns that the history it needs was compacted away)."""
        for w in list(self.synced.values()):
            self.demote(w)
            w.stream.wake()

    def demote(self, w: Watcher) -> None:
        self.synced.pop(id(w), None)
        w.synced = False
        if w.queue:
            w.next_rev = w.queue[0][0]
            w.queue.clear()
        self.demotions += 1
        w.stream.unsynced.add(w.id)


class WatchStream:
    """One client's watch stream: the watchers it created and what it still has to write."""

    def __init__(self, hub: WatchHub, wake: Callable[[], None]) -> None:
        self.hub = hub
        self.wake = wake
        self.watchers: dict[int, Watcher] = {}
        self.unsynced: set[int] = set()
        self.control: deque[dict[str, Any]] = deque()
        self.next_id = 0
        self.overflow = False
        self.closed = False
        hub.streams += 1

    # ------------------------------------------------------------ requests

    def _say(self, resp: dict[str, Any]) -> None:
        if len(self.control) >= MAX_CONTROL:
            self.overflow = True
        else:
            self.control.append(resp)
        self.wake()

    def create(self, req: WatchCreate) -> None:
        st = self.hub.machine.store
        head = st.rev
        hdr = {"revision": str(head)}
        reason = ""
        if req.end is not None and req.end != "" and req.key >= req.end:
            reason = ERR_EMPTY_RANGE
        elif req.watch_id and req.watch_id in self.watchers:
            reason = ERR_DUPLICATE_ID
        elif len(self.watchers) >= MAX_WATCHERS_PER_STREAM:
            reason = ERR_TOO_MANY
        if reason:
            self._say({"header": hdr, "watch_id": "-1", "created": True, "canceled": True,
                       "cancel_reason": reason})
            return
        wid = req.watch_id
        if not wid:
            while self.next_id in self.watchers:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        start = req.start_revision or head + 1
        w = Watcher(self, wid, req, start)
        self.watchers[wid] = w
        resp: dict[str, Any] = {"header": hdr}
        if wid:
            resp["watch_id"] = str(wid)
        resp["created"] = True
        self._say(resp)
        if start > head:
            w.synced = True
            self.hub.synced[id(w)] = w
        else:
            self.unsynced.add(wid)

    def cancel(self, wid: int) -> None:
        if self._drop(wid):
            resp: dict[str, Any] = {"header": {"revision": str(self.hub.machine.store.rev)}}
            if wid:
                resp["watch_id"] = str(wid)
            resp["canceled"] = True
            self._say(resp)

    def progress(self) -> None:
        self._say({"header": {"revision": str(self.hub.machine.store.rev)}, "watch_id": "-1"})

    def _drop(self, wid: int) -> bool:
        w = self.watchers.pop(wid, None)
        if w is None:
            return False
        self.hub.synced.pop(id(w), None)
        self.unsynced.discard(wid)
        w.queue.clear()
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for wid in list(self.watchers):
                self._drop(wid)
            self.hub.streams -= 1

    # ------------------------------------------------------------ output

    def pending(self) -> bool:
        return bool(self.control or self.unsynced or any(w.queue for w in self.watchers.values()))

    def pop(self, max_responses: int = 64) -> list[dict[str, Any]]:
        """Responses ready to be written, in order: control answers first (a watcher's
        "created" always precedes its events), then queued and catch-up events."""
        out: list[dict[str, Any]] = []
        while self.control and len(out) < max_responses:
            out.append(self.control.popleft())
        for w in list(self.watchers.values()):
            while w.queue and len(out) < max_responses:
                rev, evs = w.queue.popleft()
                out.append(self._events(w, rev, evs))
        for wid in list(self.unsynced):
            if len(out) >= max_responses:
                break
            resp = self._catch_up(self.watchers[wid])
            if resp is not None:
                out.append(resp)
        return out

    def _catch_up(self, w: Watcher) -> dict[str, Any] | None:
        st = self.hub.machine.store
        if w.next_rev < st.compact_rev:
            self._drop(w.id)
            resp: dict[str, Any] = {"header": {}}
            if w.id:
                resp["watch_id"] = str(w.id)
            resp["canceled"] = True
            resp["compact_revision"] = str(st.compact_rev)
            return resp
        batch = st.changes_since(w.next_rev, CATCHUP_MAX_REVS)
        evs: list[KV] = []
        for _rev, changes in batch:
            evs += w.select(changes)
        w.next_rev = batch[-1][0] + 1 if batch else st.rev + 1
        if w.next_rev > st.rev:
            self.unsynced.discard(w.id)
            w.synced = True
            self.hub.synced[id(w)] = w
        return self._events(w, st.rev, evs) if evs else None

    def _events(self, w: Watcher, rev: int, evs: list[KV]) -> dict[str, Any]:
        st = self.hub.machine.store
        if w.prev_kv:
            items = []
            for kv in evs:
                prev = None
                if kv[3] != 1:  # etcd skips the lookup for a key's creation
                    before = kv[2] - 1
                    if before >= st.compact_rev:
                        prev = st.get(kv[0], before)
                items.append(event_json(kv, prev))
        else:
            items = [event_json(kv, None) for kv in evs]
        resp: dict[str, Any] = {"header": {"revision": str(rev)}}
        if w.id:
            resp["watch_id"] = str(w.id)
        resp["events"] = items
        return resp

