"""Node-to-node application forwarding (udpraft/io/appforward.py): two real NodeRuntimes
over an in-memory network; who may send, what happens without a handler, fault rules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.ready import Config
from udpraft.io.runtime import NodeRuntime
from udpraft.storage import MemoryLogStore
from udpraft.wire import AppForward, AppForwardResp, WireContext, encode

SECRET = b"s" * 16
CFG = ClusterConfig("t", tuple(
    NodeAddr(f"n{i}", ("10.0.0.1", 1000 + i), ("10.0.0.1", 2000 + i)) for i in (1, 2)
))


class Net:
    def __init__(self) -> None:
        self.nodes: dict[tuple[str, int], NodeRuntime] = {}
        self.datagrams = 0


class Transport:
    def __init__(self, net: Net, addr: tuple[str, int]) -> None:
        self.net, self.addr = net, addr

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.net.datagrams += 1
        rt = self.net.nodes.get(addr)
        if rt is not None:
            asyncio.get_running_loop().call_soon(rt.datagram_received, data, self.addr)

    def close(self) -> None:
        pass


def two_nodes(net: Net) -> dict[str, NodeRuntime]:
    rts = {}
    for n in CFG.nodes:
        rt = NodeRuntime(n.id, CFG, SECRET, MemoryLogStore(),
                         raft_config=Config(election_ticks=50, heartbeat_ticks=5))
        rt.attach(Transport(net, n.udp))  # type: ignore[arg-type]
        net.nodes[n.udp] = rt
        rts[n.id] = rt
    return rts


def run_two(body: Callable[[dict[str, NodeRuntime]], Awaitable[None]]) -> None:
    """Two runtimes on an in-memory network, ``body`` run against them, both stopped
    afterwards even when it fails."""
    async def main() -> None:
        rts = two_nodes(Net())
        try:
            await body(rts)
        finally:
            for rt in rts.values():
                await rt.stop()

    asyncio.run(main())


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


def test_commands_and_answers_travel_between_members() -> None:
    async def body(rts: dict[str, NodeRuntime]) -> None:
        got: list[tuple[str, object]] = []
        rts["n1"].on_app_forward = lambda sender, m: got.append((sender, m))
        rts["n2"].on_app_forward_resp = lambda sender, m: got.append((sender, m))
        big = bytes(range(256)) * 600  # 150 KB: fragments, reassembled
        assert rts["n2"].send_to_node("n1", AppForward(7, (b'["P"]', big)))
        await settle()
        assert got == [("n2", AppForward(7, (b'["P"]', big)))]
        assert rts["n1"].send_to_node("n2", AppForwardResp(7, 0, (b"{}", None)))
        await settle()
        assert got[1] == ("n1", AppForwardResp(7, 0, (b"{}", None)))
        assert not rts["n1"].send_to_node("n9", AppForward(8, ()))  # no such member
        # no handler installed on n2 for requests: dropped and counted
        assert rts["n1"].send_to_node("n2", AppForward(9, ()))
        await settle()
        assert rts["n2"].counters["drop_app_forward_unhandled"] == 1 and len(got) == 2
    run_two(body)


def test_a_stranger_holding_the_key_is_refused() -> None:
    async def body(rts: dict[str, NodeRuntime]) -> None:
        got: list[object] = []
        rts["n1"].on_app_forward = lambda sender, m: got.append(m)
        stranger = WireContext("t", SECRET, "zz", incarnation=5)
        data = encode(AppForward(1, (b'["P"]',)), stranger, msg_id=1, dst="n1")
        rts["n1"].datagram_received(data, ("10.0.0.7", 4000))
        await settle()
        assert got == [] and rts["n1"].counters["drop_app_forward_from_stranger"] == 1
    run_two(body)


def test_fault_rules_apply_to_forwards() -> None:
    async def body(rts: dict[str, NodeRuntime]) -> None:
        got: list[object] = []
        rts["n1"].on_app_forward = lambda sender, m: got.append(m)
        n2 = rts["n2"]
        n2.faults.apply({"partition": ["n1"]}, {"n1"})
        assert n2.send_to_node("n1", AppForward(1, (b"a",)))  # "sent", lost on the link
        await settle()
        assert got == []
        n2.faults.heal()
        n2.faults.apply({"delay_ms": 300}, {"n1"})
        assert n2.send_to_node("n1", AppForward(2, (b"b",)))
        await asyncio.sleep(0.03)
        assert got == []  # held back by the delay rule
        end = asyncio.get_running_loop().time() + 5
        while not got and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.01)
        assert got == [AppForward(2, (b"b",))]
    run_two(body)
