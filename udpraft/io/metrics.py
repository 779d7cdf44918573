"""Prometheus text exposition of a node's state, built per scrape from its counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from udpraft.io.hist import Histogram

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from udpraft.io.runtime import NodeRuntime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _NodeCollector(Collector):
    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        rt = self.rt
        r = rt.raft
        lbl = ["node"]
        for name, value, help_ in (
            ("udpraft_term", r.term, "Current Raft term"),
            ("udpraft_is_leader", int(r.role.name == "LEADER"), "1 on the leader"),
            ("udpraft_role", int(r.role), "0 follower, 1 pre-candidate, 2 candidate, 3 leader"),
            ("udpraft_commit_index", r.log.committed, "Commit index"),
            ("udpraft_applied_index", rt.service.applied_index, "Applied index"),
            ("udpraft_last_log_index", r.log.last_index(), "Last log index"),
            ("udpraft_client_waiters", len(rt._waiters), "Client requests awaiting commit"),
        ):
            g = GaugeMetricFamily(name, help_, labels=lbl)
            g.add_metric([rt.id], value)
            yield g
        c = CounterMetricFamily(
            "udpraft_events", "Node event counters (datagrams, drops by reason, ...)",
            labels=["node", "event"],
        )
        for k, v in rt.counters.items():
            c.add_metric([rt.id, k], v)
        for k, v in r.counters.items():
            c.add_metric([rt.id, f"raft_{k}"], v)
        for k, v in rt.ep.counters.items():
            c.add_metric([rt.id, f"transport_{k}"], v)
        yield c
        yield _histogram("udpraft_fsync_seconds", "Write+fsync batch latency", rt.id, rt.fsync_s)
        yield _histogram("udpraft_proposal_batch_size", "Proposals per batch", rt.id, rt.batch_sizes)


def _histogram(name: str, help_: str, node: str, h: Histogram) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, help_, labels=["node"])
    fam.add_metric([node], h.cumulative(), h.total)
    return fam


def render_metrics(rt: NodeRuntime) -> tuple[bytes, str]:
    reg = CollectorRegistry()
    reg.register(_NodeCollector(rt))
    return generate_latest(reg), CONTENT_TYPE
