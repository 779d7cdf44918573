"""Per-follower replication progress, as the leader sees it.

How this works (after etcd-io/raft's Progress): a follower is either probed or replicated.

- PROBE: the leader does not know where the follower's log matches. It sends one append at a
  time (``probe_sent`` pauses further sends) and moves ``next`` back using the follower's
  conflict hint until an append succeeds.
- REPLICATE: the match is known; appends are pipelined optimistically (``next`` jumps past
  what was sent) with at most ``max_inflight`` unacknowledged messages. A rejection or a
  stalled window (heartbeat answers but no progress: appends were lost) falls back to PROBE.

``match`` only grows; a stale rejection never moves ``next`` below ``match + 1``.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2  # the follower needs entries we compacted: a snapshot is on its way


class Progress:
    __slots__ = (
        "inflight",
        "lost_log_suspect",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_ticks",
        "stall",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.inflight: deque[int] = deque()  # last index of each unacknowledged append
        self.max_inflight = max_inflight
        self.stall = 0  # heartbeat answers seen while the window did not move
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        # The follower restarted: it may have come back without the log it acknowledged
        # (a wiped or replaced disk). Until an append succeeds, a rejection that shows a
        # shorter log than ``match`` lowers ``match`` (see Replication._on_append_resp).
        self.lost_log_suspect = False

    def paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.SNAPSHOT:
            return True
        return len(self.inflight) >= self.max_inflight

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.inflight.clear()
        self.probe_sent = False

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            # After a snapshot the follower holds at least what it covered.
            self.next = max(self.match, self.pending_snapshot) + 1
            self.pending_snapshot = 0
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.stall = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.stall = 0

    def sent(self, last_index: int, n_entries: int) -> None:
        """Record an append whose entries end at ``last_index``."""
        if self.state == ProgressState.REPLICATE:
            if n_entries:
                self.next = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def update(self, index: int) -> bool:
        """A successful append up to ``index``. Returns True when match advanced."""
        advanced = False
        if index > self.match:
            self.match = index
            advanced = True
            self.stall = 0
        if self.next < index + 1:
            self.next = index + 1
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        self.probe_sent = False
        return advanced

    def maybe_decr(self, rejected: int, hint_next: int) -> bool:
        """A rejection of an append with prev_index ``rejected``.

        Returns False for a stale rejection (one that does not concern what we last sent).
        """
        if self.state == ProgressState.SNAPSHOT:
            return False  # a late answer to an append sent before the snapshot
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            self.next = max(self.match + 1, min(hint_next, rejected))
            return True
        if rejected != self.next - 1:
            return False
        self.next = max(self.match + 1, min(hint_next, rejected))
        self.probe_sent = False
        return True
