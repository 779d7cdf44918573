"""Fan-out of snapshots to browsers, with a bound on everything a slow browser can cost.

How this works: each Server-Sent Events connection is a ``Subscriber`` with a queue of at
most ``queue_max`` encoded snapshots. ``publish`` never waits: when a subscriber's queue is
full, its oldest snapshot is thrown away for the newest (a slow browser sees fewer frames,
never old ones). A subscriber that has taken nothing for ``stuck_s`` seconds while its queue
was full is dropped: its queue is emptied, a ``None`` tells its writer to stop, and its
``close`` callback aborts the connection (which also ends a write stuck on a full socket
buffer). At most ``max_clients`` subscribe at once; more are refused. So the memory spent
on browsers is bounded by ``max_clients * queue_max`` snapshots, and the poll loop that
feeds the hub runs at its own pace whatever the browsers do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

QUEUE_MAX = 2
STUCK_S = 5.0
MAX_CLIENTS = 32


class Subscriber:
    def __init__(self, close: Callable[[], None], queue_max: int, now: float) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_max)
        self.close = close
        self.last_take = now
        self.skipped = 0
        self.dropped = False


class Hub:
    def __init__(
        self, max_clients: int = MAX_CLIENTS, queue_max: int = QUEUE_MAX,
        stuck_s: float = STUCK_S, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_clients, self.queue_max, self.stuck_s = max_clients, queue_max, stuck_s
        self.clock = clock
        self._subs: set[Subscriber] = set()
        self.dropped_total = 0
        self.refused_total = 0

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, close: Callable[[], None]) -> Subscriber | None:
        """A new subscriber, or None when ``max_clients`` are connected already."""
        if len(self._subs) >= self.max_clients:
            self.refused_total += 1
            return None
        sub = Subscriber(close, self.queue_max, self.clock())
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    async def next(self, sub: Subscriber) -> bytes | None:
        """The subscriber's next snapshot; None once it is dropped or the hub closes."""
        data = await sub.queue.get()
        sub.last_take = self.clock()
        return data

    def publish(self, data: bytes) -> int:
        """Offer ``data`` to every subscriber without waiting; returns how many were dropped."""
        now = self.clock()
        dropped = 0
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(data)
                continue
            except asyncio.QueueFull:
                pass
            if now - sub.last_take >= self.stuck_s:
                self.drop(sub)
                dropped += 1
                continue
            sub.queue.get_nowait()  # the oldest goes; the newest is what the user wants
            sub.queue.put_nowait(data)
            sub.skipped += 1
        return dropped

    def drop(self, sub: Subscriber) -> None:
        if sub.dropped:
            return
        sub.dropped = True
        self._subs.discard(sub)
        self.dropped_total += 1
        _end(sub)
        try:
            sub.close()
        except Exception:  # the connection may be gone already: nothing left to free
            pass

    def close_all(self) -> None:
        """Tell every writer to stop (the server is shutting down)."""
        for sub in list(self._subs):
            self._subs.discard(sub)
            _end(sub)


def _end(sub: Subscriber) -> None:
    while not sub.queue.empty():
        sub.queue.get_nowait()
    sub.queue.put_nowait(None)
