"""The library use case: a node embedded in this process, leading, proposing locally."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.procs import LocalCluster
from udpraft.client.blocking import Client
from udpraft.core.errors import NotLeader
from udpraft.embed import EmbeddedNode

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
                    with pytest.raises(NotLeader):
                        await node.submit(b"not here")
                await node.transfer_leadership_here(15)
                assert node.is_leader and node.status()["role"] == "leader"
                rs = await asyncio.gather(*(node.submit(b"e%d" % i) for i in range(200)))
                return [r.index for r in rs]
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
