"""Sans-IO reliability for udpraft datagrams: retransmission, acknowledgement, dedupe.

Pure (no sockets, clocks, asyncio): time comes in as ``now`` (seconds). See endpoint.py
for the protocol and the per-message-class policy.
"""

from udpraft.reliability.config import (
    COUNTER_NAMES,
    Delivery,
    ReliabilityConfig,
    reliable_by_default,
)
from udpraft.reliability.dedupe import DedupeWindow, SenderTable
from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.reliability.rtt import RttEstimator

__all__ = [
    "COUNTER_NAMES",
    "DedupeWindow",
    "Delivery",
    "ReliabilityConfig",
    "ReliableEndpoint",
    "RttEstimator",
    "SenderTable",
    "reliable_by_default",
]
