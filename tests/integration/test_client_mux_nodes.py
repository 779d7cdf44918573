"""ClientMux against real node processes: sessions sharing one socket, through the leader
and through a follower (which forwards each request of a batch), each payload exactly once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.helpers.procs import local_cluster
from udpraft.client.aio import ClientMux
from udpraft.client.blocking import Client
from udpraft.config import load_secret

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("via", ["leader", "follower"])
def test_mux_sessions_commit_each_payload_once(tmp_path: Path, via: str) -> None:
    with local_cluster(tmp_path, 3) as c:
        ld = c.wait_leader()
        target = ld if via == "leader" else next(n for n in c.ids if n != ld)
        cfg = json.loads(c.cluster_file.read_text())
        nodes = {target: next(n["udp"] for n in cfg["nodes"] if n["id"] == target)}
        secret = load_secret(str(c.cluster_file))

        async def run() -> list[int]:
            mux = ClientMux(nodes, secret, cfg["cluster"])
            clients = [mux.client() for _ in range(6)]

            async def user(k: int) -> list[int]:
                cl = clients[k]
                return [(await cl.submit(b"%s-%d-%d" % (via.encode(), k, i), timeout=20)).index for i in range(25)]

            try:
                per = await asyncio.gather(*(user(k) for k in range(6)))
            finally:
                for cl in clients:
                    await cl.close()
                await mux.close()
            assert mux.datagrams_out <= mux.requests_out
            return [i for p in per for i in p]

        idx = asyncio.run(run())
        assert len(set(idx)) == 150
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            ents = [e for e in cl.retrieve(1) if e.data.startswith(via.encode())]
        assert len(ents) == len({e.data for e in ents}) == 150, "each payload exactly once"
        assert sorted(e.index for e in ents) == sorted(idx)
        if via == "follower":
            st = c.status(target)
            assert st is not None and st["counters"].get("forwarded", 0) > 0
