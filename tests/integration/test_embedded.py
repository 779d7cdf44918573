"""The library use case: a node embedded in this process, leading, proposing locally."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import LocalCluster
from udpraft.client.blocking import Client
from udpraft.client.core import Result
from udpraft.embed import EmbeddedNode
from udpraft.errors import NotLeaderError, Rejected, UdpRaftError

pytestmark = pytest.mark.integration


def test_embedded_node_leads_and_commits(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3)
    try:
        for nid in c.ids[1:]:
            c.start(nid)

        async def run() -> list[int]:
            node = await EmbeddedNode.start("n1", str(c.cluster_file), str(tmp_path / "n1"))
            try:
                await node.wait_leader(15)
                if not node.is_leader:
                    with pytest.raises(NotLeaderError):
                        await node.submit(b"not here")
                await node.transfer_leadership_here(15)
                assert node.is_leader and node.status()["role"] == "leader"
                rs = await asyncio.gather(*(node.submit(b"e%d" % i) for i in range(150)))
                # The callback API: no coroutine per proposal.
                loop = asyncio.get_running_loop()
                done: asyncio.Future[None] = loop.create_future()
                got: list[int] = []

                def cb(res: Result | None, err: UdpRaftError | None) -> None:
                    assert err is None and res is not None
                    got.append(res.index)
                    if len(got) == 50 and not done.done():
                        done.set_result(None)

                for i in range(150, 200):
                    node.submit_cb(b"e%d" % i, cb)
                await asyncio.wait_for(done, 10)
                assert got == sorted(got)  # answered in log order
                return [r.index for r in rs] + got
            finally:
                await node.stop()

        idx = asyncio.run(run())
        assert len(set(idx)) == 200
        with Client({nid: c.udp[nid] for nid in c.ids[1:]},
                    secret=(tmp_path / "secret").read_bytes().strip(),
                    cluster_id=c.cluster_file.read_text().split('"cluster": "')[1].split('"')[0]) as cl:
            got = {e.data for e in cl.retrieve(1, timeout=10)}
        assert {b"e%d" % i for i in range(200)} <= got
    finally:
        c.stop_all()


def test_entry_bigger_than_a_datagram_replicates_in_fragments(tmp_path: Path) -> None:
    import json
    import urllib.request

    c = LocalCluster(tmp_path, 3)
    try:
        for nid in c.ids[1:]:
            c.start(nid)

        async def run() -> int:
            node = await EmbeddedNode.start("n1", str(c.cluster_file), str(tmp_path / "n1"))
            try:
                await node.wait_leader(15)
                await node.transfer_leadership_here(15)
                big = bytes(range(256)) * 800  # 204,800 bytes: about four datagrams
                r = await node.submit(big, timeout=20)
                # Committed needs one follower; wait for both before this leader stops.
                for _ in range(200):
                    if all((c.status(n) or {}).get("last_log_index", 0) >= r.index
                           for n in c.ids[1:]):
                        break
                    await asyncio.sleep(0.05)
                return r.index
            finally:
                await node.stop()

        idx = asyncio.run(run())
        for nid in c.ids[1:]:
            with urllib.request.urlopen(f"http://{c.http[nid]}/log?tail=5", timeout=2) as resp:
                tail = json.loads(resp.read())
            sizes = {e["index"]: e["size"] for e in tail}
            assert sizes.get(idx) == 204_800, (nid, tail)
            st = c.status(nid)
            assert st is not None and st["counters"].get("transport_delivered", 0) > 0
    finally:
        c.stop_all()


def test_embedded_leader_changes_the_membership(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3)
    try:
        for nid in c.ids[1:]:
            c.start(nid)
        udp, http = c.add_node("n4")
        c.start("n4")

        async def run() -> dict[str, object]:
            node = await EmbeddedNode.start("n1", str(c.cluster_file), str(tmp_path / "n1"))
            try:
                await node.wait_leader(15)
                await node.transfer_leadership_here(15)
                for i in range(20):
                    await node.submit(b"e%d" % i)
                with pytest.raises(Rejected, match="needs the new node's udp"):
                    await node.change_membership("add_learner", "n4")
                out = await node.change_membership("add_learner", "n4", udp, http)
                assert out["membership"]["learners"] == ["n4"]
                for _ in range(200):  # the learner catches up from the log
                    if node.members()["members"]["n4"].get("match", 0) >= node.rt.raft.committed:
                        break
                    await asyncio.sleep(0.05)
                await node.change_membership("promote", "n4")
                await node.change_membership("remove", "n3")
                with pytest.raises(Rejected, match="never reused"):
                    await node.change_membership("add_voter", "n3", udp, http)
                r = await node.submit(b"after")
                assert r.index > 20
                return node.members()
            finally:
                await node.stop()

        mem = asyncio.run(run())
        assert mem["voters"] == ["n1", "n2", "n4"] and mem["removed"] == ["n3"]
        st = c.status("n4")
        assert st is not None and st["membership"]["voters"] == ["n1", "n2", "n4"]
    finally:
        c.stop_all()


def test_a_busy_leader_applies_in_chunks_and_lets_the_loop_in_between(tmp_path: Path) -> None:
    # 5,000 proposals committed together must not be applied in one loop turn: at most
    # 1,024 per turn (runtime DEFAULT_RAFT_CONFIG.max_apply_entries), with other callbacks
    # (acks, the disk task, new proposals' appends) running between the chunks.
    import sys

    c = LocalCluster(tmp_path, 3)
    try:
        for nid in c.ids[1:]:
            c.start(nid)

        async def run() -> tuple[list[int], list[str], float]:
            node = await EmbeddedNode.start("n1", str(c.cluster_file), str(tmp_path / "n1"),
                                            storage="memory", tune_gc=True)
            switch = sys.getswitchinterval()
            try:
                await node.wait_leader(15)
                await node.transfer_leadership_here(15)
                loop = asyncio.get_running_loop()
                sizes: list[int] = []
                trace: list[str] = []
                real_apply = node.rt._apply

                def apply(entries: list[Any]) -> None:
                    sizes.append(len(entries))
                    trace.append("apply")
                    loop.call_soon(trace.append, "other")  # must run before the next chunk
                    real_apply(entries)

                node.rt._apply = apply  # type: ignore[method-assign]
                done: asyncio.Future[None] = loop.create_future()
                got: list[int] = []

                def cb(res: Result | None, err: UdpRaftError | None) -> None:
                    assert err is None and res is not None
                    got.append(res.index)
                    if len(got) == 5000 and not done.done():
                        done.set_result(None)

                for i in range(5000):
                    node.submit_cb(b"e%d" % i, cb)
                await asyncio.wait_for(done, 30)
                assert got == sorted(got)
                return sizes, trace, switch
            finally:
                await node.stop()

        sizes, trace, switch = asyncio.run(run())
        assert sum(sizes) >= 5000 and max(sizes) <= 1024, sizes
        applies = [i for i, t in enumerate(trace) if t == "apply"]
        assert all(trace[a + 1] == "other" for a in applies[:-1]), trace[:40]
        assert switch == 0.001  # tune_gc=True also shortens the GIL switch interval
    finally:
        c.stop_all()
