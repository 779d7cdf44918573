"""Embed a udpraft node in your own asyncio program.

    node = await EmbeddedNode.start("n1", "data/cluster.json", data_dir="data/n1")
    if node.is_leader:
        result = await node.submit(b"payload")     # committed: Result(index, term)
    await node.stop()

The node is a full member of the cluster (it votes, replicates, serves clients on its UDP
port and its HTTP status port); ``submit`` from inside the leader's process skips the
network hop from a client to the leader. On a follower it raises ``NotLeader`` naming the
leader (use a ``Client`` then, or ``transfer_leadership_here``).

Membership (on the leader): ``members()``, ``change_membership(op, node_id, udp, http)``
with op ``add_learner`` | ``add_voter`` | ``promote`` | ``remove``; from anywhere else use
``udpraft.admin.Admin``, which finds the leader over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from udpraft.client.core import Result, new_result
from udpraft.config import load_cluster, load_secret
from udpraft.core.errors import InvalidRequest, NotLeader, ProposalDropped
from udpraft.core.ready import Role
from udpraft.errors import NotLeaderError, Rejected, Timeout, UdpRaftError
from udpraft.io import gctune
from udpraft.io.local import CallbackWaiter, ProposalLost
from udpraft.io.runtime import NodeRuntime
from udpraft.io.server import NodeOptions, start_node
from udpraft.service.logservice import Outcome


class EmbeddedNode:
    def __init__(self, rt: NodeRuntime, runner: web.AppRunner) -> None:
        self.rt = rt
        self._runner = runner

    @classmethod
    async def start(
        cls, node_id: str, cluster_file: str, data_dir: str | None = None, storage: str = "file",
        tune_gc: bool = False,
    ) -> EmbeddedNode:
        """Start the node in this process. ``tune_gc`` applies udpraft.io.gctune to the
        whole process (fewer cyclic-GC passes: a quarter less CPU per proposal on a busy
        leader; a 1 ms GIL switch interval, so the node's disk thread is not kept waiting
        5 ms by a busy event loop); off by default because the process is yours."""
        cluster = load_cluster(cluster_file)
        me = cluster.node(node_id)
        opts = NodeOptions(
            node_id, cluster, load_secret(cluster_file), data_dir or me.data_dir or f"data/{node_id}",
            storage,
        )
        rt, runner = await start_node(opts)
        if tune_gc:
            gctune.tune_gc()
            gctune.tune_switch()
        return cls(rt, runner)

    @property
    def is_leader(self) -> bool:
        return self.rt.raft.role == Role.LEADER

    @property
    def leader(self) -> str:
        return self.rt.raft.leader

    def status(self) -> dict[str, Any]:
        return self.rt.status()

    async def submit(self, data: bytes, timeout: float = 5.0) -> Result:
        """Append ``data`` (leader only); returns once it is committed and applied here.

        Raises ``NotLeaderError`` (with ``.leader``), ``Rejected`` (overloaded or a transfer
        in progress), or ``Timeout`` (outcome unknown) — all ``UdpRaftError``.
        """
        # The runtime expires the future at the deadline (one sweep for all of them):
        # asyncio.wait_for wraps every call in a task, which cost a quarter of the CPU of a
        # busy embedded leader, and a timer per call costs a heap push.
        try:
            out = await self.rt.propose_local(bytes(data), timeout)
        except NotLeader as e:
            raise NotLeaderError(str(e), e.leader) from None
        except ProposalDropped as e:
            raise Rejected(f"proposal refused: {e}") from None
        except (ProposalLost, TimeoutError) as e:
            raise Timeout(f"not known to be committed: {e}") from None
        return new_result(out.index, out.term)

    def submit_cb(
        self,
        data: bytes,
        callback: Callable[[Result | None, UdpRaftError | None], Any],
        timeout: float = 5.0,
    ) -> None:
        """``submit`` without a coroutine: ``callback(result, None)`` once committed and
        applied here, or ``callback(None, error)`` with the errors ``submit`` raises (called
        on the event loop; it must not block). Raises ``NotLeaderError`` at once. The
        lighter path for many proposals in flight (like PySyncObj's ``callback=``)."""
        try:
            self.rt.propose_waiter(bytes(data), _ResultWaiter(callback), timeout)
        except NotLeader as e:
            raise NotLeaderError(str(e), e.leader) from None

    def members(self) -> dict[str, Any]:
        """Voters, learners, removed ids and each member's addresses, as this node sees them."""
        return self.rt.members.describe()

    async def change_membership(
        self, op: str, node_id: str, udp: str = "", http: str = "", timeout: float = 10.0,
        force: bool = False,
    ) -> dict[str, Any]:
        """One single-server change (leader only), returned once committed.

        Raises ``NotLeaderError``, ``Rejected`` (nonsense, or another change in flight) or
        ``Timeout`` (not known to be committed) — all ``UdpRaftError``.
        """
        try:
            return await self.rt.members.change(op, node_id, udp, http, timeout, force)
        except NotLeader as e:
            raise NotLeaderError(str(e), e.leader) from None
        except (InvalidRequest, ProposalDropped) as e:
            raise Rejected(f"membership change refused: {e}") from None
        except (ProposalLost, TimeoutError) as e:
            raise Timeout(f"not known to be committed: {e}") from None

    async def wait_leader(self, timeout: float = 10.0) -> str:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.rt.raft.leader:
            if loop.time() > end:
                raise TimeoutError("no leader elected")
            await asyncio.sleep(0.02)
        return self.rt.raft.leader

    async def transfer_leadership_here(self, timeout: float = 5.0) -> None:
        """Ask the current leader (over its HTTP port) to hand leadership to this node."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        import aiohttp

        async with aiohttp.ClientSession() as s:
            while not self.is_leader:
                if loop.time() > end:
                    raise TimeoutError("leadership did not move here")
                ld = self.rt.raft.leader
                http = self.rt.book.http_of.get(ld, "")
                if ld and ld != self.rt.id and http:
                    try:
                        async with s.post(f"http://{http}/transfer",
                                          json={"target": self.rt.id}) as r:
                            await r.read()
                    except aiohttp.ClientError:
                        pass
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self.rt.stop()


class _ResultWaiter(CallbackWaiter):
    """Turns the runtime's outcome into ``submit``'s Result or error for a callback."""

    __slots__ = ()

    def result(self, out: Outcome) -> Result:
        return new_result(out.index, out.term)

    def error(self, e: BaseException) -> UdpRaftError:
        if isinstance(e, NotLeader):
            return NotLeaderError(str(e), e.leader)
        if isinstance(e, ProposalDropped):
            return Rejected(f"proposal refused: {e}")
        return Timeout(f"not known to be committed: {e}")  # ProposalLost, TimeoutError
