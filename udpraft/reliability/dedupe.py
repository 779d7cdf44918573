"""Duplicate and replay suppression keyed by (sender, incarnation, channel, message id).

How it works
------------
Each sender id has one state: the incarnations heard from it, most recent last, each
with one :class:`DedupeWindow` per channel (unreliable, reliable: they use
separate id sequences, see endpoint.py). A window remembers the highest id seen and a
bitmap of the ``size`` ids below it (a Python int used as a bit set: bit k = id
``highest - k`` seen). An id above the window slides it; an id inside is new or a
duplicate by its bit; an id below the window is too old: a replay, since the sender never
retransmits that far back (its unacked window is no wider than ours, see endpoint.py).

Each incarnation of a sender keeps its own pair of windows. Incarnations are random, so
a receiver cannot tell an older one from a newer one: a datagram of an incarnation it has
not heard could be the sender's restart, or a late or replayed datagram of a previous
life (a receiver that restarted after the sender did has only heard the live one). So
nothing is retired on sight: each incarnation is deduplicated against its own windows,
and the live one keeps working whatever else arrives. (Retiring the current incarnation
when an unknown one appeared let one replayed datagram of a sender's previous life lock
its live incarnation out until it restarted again.) A sender keeps its ``retired_max + 1``
most recently heard incarnations (LRU); one pushed out and heard again starts fresh
windows. The table keeps at most ``max_senders`` states and evicts the least recently
heard sender (counted); a sender evicted and heard again starts a fresh window, so a
retransmission of something it had already delivered could be delivered again: the
application's own sessions (client id, sequence) are the last line of defence there.
"""

from __future__ import annotations

from collections import OrderedDict

NEW = 0
DUPLICATE = 1
TOO_OLD = 2

UNRELIABLE = 0
RELIABLE = 1


class DedupeWindow:
    """Highest id seen plus a bitmap of the ``size`` ids below it."""

    __slots__ = ("bits", "highest", "mask", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be positive")
        self.size = size
        self.mask = (1 << size) - 1
        self.highest = -1  # nothing seen yet
        self.bits = 0

    def observe(self, msg_id: int) -> int:
        """NEW (and remember it), DUPLICATE or TOO_OLD."""
        highest = self.highest
        if msg_id > highest:
            shift = msg_id - highest
            self.bits = ((self.bits << shift) | 1) & self.mask if shift < self.size else 1
            self.highest = msg_id
            return NEW
        offset = highest - msg_id
        if offset >= self.size:
            return TOO_OLD
        bit = 1 << offset
        if self.bits & bit:
            return DUPLICATE
        self.bits |= bit
        return NEW


class _Sender:
    """The windows of each incarnation heard from one sender, least recently heard first."""

    __slots__ = ("lives",)

    def __init__(self) -> None:
        self.lives: OrderedDict[int, tuple[DedupeWindow, DedupeWindow]] = OrderedDict()


class SenderTable:
    """Per-sender dedupe state, bounded by ``max_senders`` (LRU)."""

    def __init__(
        self,
        *,
        window: int = 1024,
        max_senders: int = 4096,
        retired_max: int = 8,
        counters: dict[str, int] | None = None,
    ) -> None:
        if max_senders < 1 or retired_max < 1:
            raise ValueError("max_senders and retired_max must be positive")
        self.window = window
        self.max_senders = max_senders
        self.retired_max = retired_max
        self.counters = {} if counters is None else counters
        for name in ("senders_new", "senders_evicted", "new_incarnation"):
            self.counters.setdefault(name, 0)
        self._senders: OrderedDict[str, _Sender] = OrderedDict()

    def __len__(self) -> int:
        return len(self._senders)

    def observe(self, sender: str, incarnation: int, channel: int, msg_id: int) -> int:
        """Classify one datagram: NEW, DUPLICATE or TOO_OLD (in its incarnation's window)."""
        senders = self._senders
        state = senders.get(sender)
        if state is None:
            if len(senders) >= self.max_senders:
                senders.popitem(last=False)
                self.counters["senders_evicted"] += 1
            state = senders[sender] = _Sender()
            self.counters["senders_new"] += 1
        else:
            senders.move_to_end(sender)
        lives = state.lives
        windows = lives.get(incarnation)
        if windows is None:
            if lives:
                self.counters["new_incarnation"] += 1
                if len(lives) > self.retired_max:
                    lives.popitem(last=False)
            windows = lives[incarnation] = (DedupeWindow(self.window), DedupeWindow(self.window))
        else:
            lives.move_to_end(incarnation)
        return windows[channel].observe(msg_id)

    def incarnation_of(self, sender: str) -> int | None:
        """The incarnation of ``sender`` last heard, if it is still in the table."""
        state = self._senders.get(sender)
        return None if state is None else next(reversed(state.lives))
