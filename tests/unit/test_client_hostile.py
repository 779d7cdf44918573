"""Hostile and unlucky client traffic against real NodeRuntimes in one process.

Three runtimes share an in-memory network (``Net``): every datagram a node sends is
delivered, on the next loop turn, to the runtime or client bound to its address. Clients
are ClientCores driven by hand, so a test decides which answers are lost.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from udpraft.client.core import ClientCore
from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.ready import Config, Role
from udpraft.io.runtime import NodeRuntime
from udpraft.storage import MemoryLogStore
from udpraft.wire import ClientResponse

SECRET = b"s" * 16
CLIENT = ("10.0.0.9", 5000)
Addr = tuple[str, int]


class Net:
    """Datagrams between runtimes and one client address, delivered on the next turn."""

    def __init__(self) -> None:
        self.nodes: dict[Addr, NodeRuntime] = {}
        self.to_client: list[bytes] = []
        self.drop_to_client: Callable[[bytes], bool] = lambda data: False

    def transport(self, src: Addr) -> _Transport:
        return _Transport(self, src)

    def deliver(self, data: bytes, src: Addr, dst: Addr) -> None:
        if dst == CLIENT:
            if not self.drop_to_client(data):
                self.to_client.append(data)
            return
        rt = self.nodes.get(dst)
        if rt is not None:
            asyncio.get_running_loop().call_soon(rt.datagram_received, data, src)


class _Transport:
    def __init__(self, net: Net, src: Addr) -> None:
        self.net, self.src = net, src

    def sendto(self, data: bytes, addr: Addr) -> None:
        self.net.deliver(data, self.src, addr)

    def close(self) -> None:
        pass


async def cluster(n: int = 3) -> tuple[Net, list[NodeRuntime]]:
    addrs = [(f"10.0.0.{i}", 1000 + i) for i in range(1, n + 1)]
    cfg = ClusterConfig("t", tuple(
        NodeAddr(f"n{i}", a, (a[0], 2000 + i)) for i, a in enumerate(addrs, 1)))
    net = Net()
    rts = []
    for i, a in enumerate(addrs, 1):
        rt = NodeRuntime(f"n{i}", cfg, SECRET, MemoryLogStore(),
                         raft_config=Config(election_ticks=20, heartbeat_ticks=2))
        net.nodes[a] = rt
        rt.attach(net.transport(a))  # type: ignore[arg-type]
        rts.append(rt)
    await until(lambda: leader_of(rts) is not None, 5.0)
    return net, rts


def leader_of(rts: list[NodeRuntime]) -> NodeRuntime | None:
    ls = [rt for rt in rts if rt.raft.role == Role.LEADER]
    return ls[0] if len(ls) == 1 else None


async def until(cond: Callable[[], bool], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def stop(rts: list[NodeRuntime]) -> None:
    for rt in rts:
        await rt.stop()


def answers(cl: ClientCore, net: Net) -> list[ClientResponse]:
    out = []
    for data in net.to_client:
        out += cl.parse_all(data)
    return out


def submit(cl: ClientCore, rt: NodeRuntime, seqs: list[int], datas: list[bytes]) -> int:
    req_id = cl.new_req_id()
    rt.datagram_received(cl.encode(cl.submit_request(req_id, seqs, datas)), CLIENT)
    return req_id


def done_seqs(cl: ClientCore, net: Net, req_id: int) -> list[int]:
    return [s for r in answers(cl, net) if r.req_id == req_id and r.ok
            for s, _i, _t in r.body["done"]]


def test_a_seq_beyond_the_wire_range_cannot_stall_the_cluster() -> None:
    """Entries travel with seqs < 2**63 (followers drop an append holding a larger one).
    A client (authentic: it has the secret) that submits seq 2**63 must be refused, not
    proposed: an entry no follower accepts blocks every later commit of the term."""

    async def main() -> tuple[list[int], list[ClientResponse]]:
        net, rts = await cluster()
        try:
            leader = leader_of(rts)
            assert leader is not None
            evil = ClientCore({"n1": ("10.0.0.1", 1001)}, "t", SECRET)
            evil._req_ids = itertools.count(1000)  # both share CLIENT: tell answers apart
            submit(evil, leader, [1], [b"open"])
            bad = submit(evil, leader, [1 << 63], [b"boom"])
            good = ClientCore({"n1": ("10.0.0.1", 1001)}, "t", SECRET)
            ok = submit(good, leader, [1], [b"fine"])
            await until(lambda: bool(done_seqs(good, net, ok)), 2.0)
            return done_seqs(good, net, ok), [r for r in answers(evil, net) if r.req_id == bad]
        finally:
            await stop(rts)

    good_done, bad_answers = asyncio.run(main())
    assert good_done == [1], "a later submit of another client never committed"
    assert [r.body.get("error") for r in bad_answers] == ["bad_request"]
