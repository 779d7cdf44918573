"""Real NodeRuntimes on one event loop over an in-memory lossy network: periodic snapshots,
log compaction and snapshot transfer to a follower whose data was wiped."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.ready import Config, Role
from udpraft.io.runtime import NodeRuntime
from udpraft.io.snapshots import HEADER_SIZE
from udpraft.service.logservice import LogService
from udpraft.storage import FileLogStore

RAFT = Config(election_ticks=20, heartbeat_ticks=3, max_msg_bytes=48_000)
SECRET = b"s" * 16


class Blob:
    """An application whose state grows with every command (a big snapshot)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def apply(self, index: int, data: bytes) -> bytes:
        self.parts.append(data)
        return b""

    def snapshot(self) -> bytes:
        return b"".join(len(p).to_bytes(4, "big") + p for p in self.parts)

    def restore(self, data: bytes) -> None:
        self.parts, pos = [], 0
        while pos < len(data):
            n = int.from_bytes(data[pos : pos + 4], "big")
            self.parts.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n


class Net:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.drop = 0.0
        self.nodes: dict[tuple[str, int], NodeRuntime] = {}
        self.tamper: Callable[[bytes], bytes | None] | None = None

    def deliver(self, data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
        rt = self.nodes.get(dst)
        if rt is not None and src in self.nodes:
            rt.datagram_received(data, src)


class Transport:
    def __init__(self, net: Net, addr: tuple[str, int]) -> None:
        self.net, self.addr = net, addr

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.net.rng.random() < self.net.drop:
            return
        asyncio.get_running_loop().call_soon(self.net.deliver, data, self.addr, addr)

    def close(self) -> None:
        pass


class Cluster:
    def __init__(self, tmp: Path, n: int = 3, every: int = 20) -> None:
        self.tmp, self.every = tmp, every
        self.cfg = ClusterConfig("t", tuple(
            NodeAddr(f"n{i}", ("10.0.0.1", 1000 + i), ("10.0.0.1", 2000 + i)) for i in range(1, n + 1)
        ))
        self.net = Net(7)
        self.rts: dict[str, NodeRuntime] = {}

    def start(self, nid: str) -> NodeRuntime:
        d = self.tmp / nid
        rt = NodeRuntime(nid, self.cfg, SECRET, FileLogStore(str(d / "wal")), raft_config=RAFT,
                         app=Blob(), snapshot_dir=str(d / "snapshots"), snapshot_entries=self.every)
        addr = self.cfg.node(nid).udp
        rt.attach(Transport(self.net, addr))  # type: ignore[arg-type]
        self.net.nodes[addr] = rt
        self.rts[nid] = rt
        return rt

    async def stop(self, nid: str) -> None:
        rt = self.rts.pop(nid)
        self.net.nodes.pop(self.cfg.node(nid).udp)
        await rt.stop()

    async def leader(self, timeout: float = 10.0) -> NodeRuntime:
        rt: NodeRuntime = await until(lambda: next(
            (r for r in self.rts.values() if r.raft.role == Role.LEADER), None), timeout)
        return rt

    async def propose(self, n: int, size: int = 3000) -> None:
        for _ in range(n):
            ld = await self.leader()
            try:
                await ld.propose_app(os.urandom(size // 2).hex().encode())
            except Exception:
                await asyncio.sleep(0.05)


async def until(fn: Callable[[], Any], timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def state(svc: LogService) -> bytes:
    return svc.snapshot()


def test_wiped_follower_catches_up_by_snapshot_over_a_lossy_network(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            for nid in ("n1", "n2", "n3"):
                c.start(nid)
            ld = await c.leader()
            await c.propose(60)
            follower = next(n for n in c.rts if n != ld.id)
            await c.stop(follower)
            await c.propose(300)  # ~1 MB of state: a transfer of ~30 chunks
            for rt in c.rts.values():
                assert rt.snapper is not None
                assert rt.snapper.latest.index >= 300
                assert rt.raft.log.first_index() > 300, "the in-memory log was compacted"
            import shutil

            shutil.rmtree(tmp_path / follower)
            c.net.drop = 0.15
            rt = c.start(follower)
            ld = await c.leader()
            await until(lambda: rt.service.applied_index >= ld.raft.log.committed, 30)
            c.net.drop = 0.0
            assert rt.counters["snapshots_installed"] >= 1
            assert ld.counters["snapshot_transfers_started"] >= 1
            await c.propose(5)
            await until(lambda: rt.service.applied_index == ld.service.applied_index, 10)
            assert state(rt.service) == state(ld.service)
            snaps = os.listdir(tmp_path / follower / "snapshots")
            assert any(s.startswith("snap-") for s in snaps)
            assert not any(s.startswith("incoming-") for s in snaps)
        finally:
            for nid in list(c.rts):
                await c.stop(nid)

    asyncio.run(main())


def test_damaged_snapshot_file_is_refused_and_a_newer_one_gets_through(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, every=30)
        try:
            for nid in ("n1", "n2", "n3"):
                c.start(nid)
            ld = await c.leader()
            follower = next(n for n in c.rts if n != ld.id)
            await c.stop(follower)
            await c.propose(70, size=200)
            assert ld.snapper is not None
            # Flip a body byte of every snapshot file the leader has: the follower must
            # detect it (checksum), refuse it, and get a good one once a new one is taken.
            for _meta, path in ld.snapper.snaps.files():
                with open(path, "r+b") as f:
                    f.seek(HEADER_SIZE + 3)
                    b = f.read(1)
                    f.seek(HEADER_SIZE + 3)
                    f.write(bytes([b[0] ^ 1]))
            rt = c.start(follower)
            await until(lambda: rt.counters["snapshot_received_damaged"] >= 1, 15)
            assert rt.counters["snapshots_installed"] == 0
            await c.propose(40, size=200)  # a new (good) snapshot
            ld = await c.leader()
            await until(lambda: rt.service.applied_index >= ld.raft.log.committed, 30)
            assert rt.counters["snapshots_installed"] >= 1
            assert state(rt.service) == state(ld.service)
        finally:
            for nid in list(c.rts):
                await c.stop(nid)

    asyncio.run(main())


@pytest.mark.parametrize("every", [0, 25])
def test_restart_restores_state_from_snapshot_and_log(tmp_path: Path, every: int) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, every=every)
        try:
            for nid in ("n1", "n2", "n3"):
                c.start(nid)
            await c.propose(80, size=100)
            ld = await c.leader()
            await until(lambda: all(r.service.applied_index == ld.service.applied_index
                                    for r in c.rts.values()), 10)
            parts = list(ld.service.app.parts)  # type: ignore[attr-defined]
            assert len(parts) == 80
            applied = ld.service.applied_index
            for nid in list(c.rts):
                await c.stop(nid)
            for nid in ("n1", "n2", "n3"):
                c.start(nid)
            for rt in c.rts.values():
                snap = rt.raft.snapshot.index
                if every:
                    assert snap >= 50, "restarted from a snapshot"
                    assert rt.raft.log.first_index() == snap + 1
                assert rt.service.applied_index == snap, "state restored before the log replays"
                restored = rt.service.app.parts  # type: ignore[attr-defined]
                assert restored == parts[: len(restored)] and len(restored) >= snap - 2
            await c.leader()
            # the new leader's no-op commits the old entries: everyone replays the rest
            await until(lambda: all(r.service.applied_index > applied for r in c.rts.values()), 10)
            for rt in c.rts.values():
                assert rt.service.app.parts == parts  # type: ignore[attr-defined]
            states = {state(r.service) for r in c.rts.values()
                      if r.service.applied_index == ld.service.applied_index}
            assert len(states) <= 1
        finally:
            for nid in list(c.rts):
                await c.stop(nid)

    asyncio.run(main())


def test_injected_delay_applies_to_snapshot_chunks(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            for nid in ("n1", "n2", "n3"):
                c.start(nid)
            await c.propose(30)
            ld = await c.leader()
            follower = next(n for n in c.rts if n != ld.id)
            await c.stop(follower)
            await c.propose(120)
            import shutil

            shutil.rmtree(tmp_path / follower)
            ld = await c.leader()
            ld.faults.apply({"delay_ms": 30, "peers": [follower]}, set(c.rts) | {follower})
            rt = c.start(follower)
            t0 = asyncio.get_running_loop().time()
            await until(lambda: rt.service.applied_index >= ld.raft.log.committed, 30)
            assert rt.counters["snapshots_installed"] >= 1
            assert ld.counters["snapshot_transfers_started"] >= 1
            assert ld.counters["snapshot_msgs_delayed"] >= 1  # chunks waited like appends do
            assert asyncio.get_running_loop().time() - t0 >= 0.03
        finally:
            for nid in list(c.rts):
                await c.stop(nid)

    asyncio.run(main())
