"""A follower whose one group commit persisted several appends answers the leader once
(NodeRuntime._persist_loop with coalesce_append_resps). A real NodeRuntime follower with
a slow disk; the leader is forged with its own reliable endpoint."""

from __future__ import annotations

import asyncio
import time

from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.messages import AppendEntries, AppendResp
from udpraft.core.ready import Config
from udpraft.core.types import Entry
from udpraft.io.runtime import NodeRuntime
from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.storage import MemoryLogStore
from udpraft.wire import WireContext

SECRET = b"k" * 16
LEADER = ("10.0.0.1", 1001)
ME = ("10.0.0.2", 1002)


class SlowSync(MemoryLogStore):
    """A disk whose fsync takes 300 ms (in the node's disk thread)."""

    def sync(self) -> None:
        time.sleep(0.3)
        super().sync()


class Capture:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


def test_appends_persisted_by_one_fsync_get_one_answer() -> None:
    async def main() -> list[AppendResp]:
        cfg = ClusterConfig("t", (NodeAddr("n1", LEADER, ("10.0.0.1", 2001)),
                                  NodeAddr("n2", ME, ("10.0.0.2", 2002)),
                                  NodeAddr("n3", ("10.0.0.3", 1003), ("10.0.0.3", 2003))))
        rt = NodeRuntime("n2", cfg, SECRET, SlowSync(),
                         raft_config=Config(election_ticks=10_000, heartbeat_ticks=100))
        cap = Capture()
        rt.attach(cap)  # type: ignore[arg-type]
        leader: ReliableEndpoint[tuple[str, int]] = ReliableEndpoint(WireContext(cluster_id="t", secret=SECRET, node_id="n1"))
        leader_in: ReliableEndpoint[tuple[str, int]] = ReliableEndpoint(WireContext(cluster_id="t", secret=SECRET, node_id="n1"))
        try:
            for i in range(1, 6):  # five appends of one entry each, one loop turn apart
                m = AppendEntries("n1", "n2", 1, i - 1, 1 if i > 1 else 0,
                                  (Entry(i, 1, b"e%d" % i),), 0)
                leader.send(ME, m, False, time.monotonic())
                for data, _addr in leader.datagrams_to_send(time.monotonic()):
                    rt.datagram_received(data, LEADER)
                await asyncio.sleep(0.005)  # the first is being fsynced: the rest queue
            end = time.monotonic() + 5
            while rt.raft.log.stable < 5:
                assert time.monotonic() < end, "appends not persisted"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)
        finally:
            await rt.stop()
        got = []
        for data, addr in cap.sent:
            if addr == LEADER:
                got += [d.msg for d in leader_in.receive_datagram(data, ME, time.monotonic())
                        if isinstance(d.msg, AppendResp)]
        return got

    resps = asyncio.run(main())
    assert all(r.success and r.term == 1 for r in resps), resps
    assert resps[-1].index == 5  # the last answer covers everything
    # the first append is fsynced alone; the four queued behind it share one fsync and
    # one answer (five answers, one per append, before)
    assert [r.index for r in resps] in ([1, 5], [5]), resps
