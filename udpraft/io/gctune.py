"""Garbage-collector settings for a busy node.

How this works: every proposal allocates a few short-lived container objects (the entry,
its waiter, batch lists), so CPython's cyclic collector runs a young-generation pass every
700 allocations and, every 7,000, an older one over everything that survived — including
the 16,384 hot log entries and the runtime's tables. Reference counting already frees
nearly all of these objects; the cycle passes find almost nothing and cost the embedded
leader about a quarter of its CPU (tools.bench embedded, W=10,000: 9.5 -> 7.1 CPU-seconds
per 1,000 proposals on the leader, measured side by side). ``tune_gc`` moves what exists
at start-up out of the collector's sight (``gc.freeze``) and raises the young threshold
to 50,000 allocations; collection still happens, just in larger steps (bounded: a pass
over at most ~50,000 young objects).

Node processes call both tunings here at start. A program embedding a node decides for its own
process:
``EmbeddedNode.start(..., tune_gc=True)``.
"""

from __future__ import annotations

import gc
import sys

THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


SWITCH_INTERVAL_S = 0.001


def tune_switch() -> None:
    """Let the node's disk thread take the GIL after 1 ms instead of CPython's 5 ms.

    The event-loop thread rarely blocks while a node is busy, so the disk thread (encoding
    a batch of WAL frames before its fdatasync, which releases the GIL) waits for the
    interpreter's forced switch. At 5 ms a leader's fsync took 100-190 ms under load and the
    p99 commit latency followed; at 1 ms: tools.bench embedded, W=10,000, p99 ~90-110 ms
    instead of ~135-155 ms, proposals/s unchanged or better.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
