"""Mounting the KV store on a node: Raft proposals, ReadIndex reads, forwarding, lease clocks.

How this works: ``kv_app_factory(rt, app)`` (called at node start) creates the state
machine, its watch hub and a ``KVNode``, mounts the etcd routes (``udpraft.kv.http``) on the
node's aiohttp app and returns the machine, which the runtime then feeds with every
committed KV entry.

- Writes: on the leader, ``propose_app`` and wait (bounded) for the entry to apply here,
  then answer with what apply returned. A follower decodes and checks the request itself,
  then hands the command to the leader: the writes of one loop turn travel together in one
  AppForward message over the nodes' own authenticated, reliable UDP endpoint (not HTTP:
  ~1/6 of a follower's CPU went to aiohttp's client for these posts), and the leader
  answers each with its apply result (or none: not proposed, safe to retry). A write whose
  leader is replaced before it answers gets "leader changed" at once. Other leader-only
  calls (keepalive, TTLs) forward the request body over HTTP as is, at most ``MAX_HOPS``
  times. No leader, or no quorum: retry until the request deadline
  (``UDPRAFT_KV_TIMEOUT_S``, default 5 s), then answer etcd's retryable 503 (code 14).
- Reads: ReadIndex (``linearizable_read``) on whichever node was asked, then read locally;
  concurrent reads share one ReadIndex request. ``serializable: true`` skips it.
- Leases: only the leader runs a clock. Each lease gets a monotonic deadline when granted,
  renewed by keepalives (which therefore go to the leader); a new leader gives every lease
  a full TTL from its takeover (etcd's "promote"). An expired lease is *proposed* for
  expiry, so every replica deletes its keys at the same log position; followers never
  expire anything by their own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from udpraft.core.errors import NotLeader, ProposalDropped, RaftError
from udpraft.core.ready import Role
from udpraft.io.local import ProposalLost
from udpraft.io.reads import ReadNotConfirmed
from udpraft.io.runtime import NodeRuntime
from udpraft.kv import errors
from udpraft.kv.errors import KvError
from udpraft.kv.forwarding import _PAST_DEADLINE, MAX_COMMAND_BYTES, WriteForwarding, _consume
from udpraft.kv.machine import KVMachine
from udpraft.kv.types import expire_command
from udpraft.kv.watch import WatchHub
from udpraft.service.logservice import Application

log = logging.getLogger("udpraft.kv")

FORWARD_HEADER = "X-Udpraft-Forwarded"
MAX_HOPS = 2
LEASE_TICK_S = 0.1
EXPIRE_RETRY_S = 1.0
RETRY_S = 0.05
READ_ATTEMPT_S = 1.0  # one shared ReadIndex request; after this it counts as failed
ETCD_VERSION = "3.4.23"




def id64(text: str) -> int:
    """A stable etcd-style uint64 id (cluster, member) from a name."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") or 1


def json_response(body: Any, status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=status, content_type="application/json")


def error_response(e: KvError) -> web.Response:
    return json_response(e.body(), e.http_status)


class KVNode(WriteForwarding):
    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        self.machine = KVMachine()
        self.hub = WatchHub(self.machine)
        name = rt.cluster.cluster
        self.cluster_id = str(id64("cluster:" + name))
        self.member_ids = {n.id: str(id64(f"member:{name}/{n.id}")) for n in rt.cluster.nodes}
        self.member_id = self.member_ids[rt.id]
        self.timeout_s = float(os.environ.get("UDPRAFT_KV_TIMEOUT_S", "5"))
        self.deadlines: dict[int, float] = {}
        self._lease_term = -1
        self._expiring: dict[int, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self._read_next: asyncio.Future[None] | None = None
        self._read_busy = False
        self._read_gen = 0
        self.stream_wakers: set[Callable[[], None]] = set()  # open watch streams
        self.counters: dict[str, int] = {"forwarded": 0, "proposed": 0, "timeouts": 0, "expired": 0}
        self.init_forwarding()
        self.machine.lease_listeners.append(self._on_lease)

    # ================================================================== lifecycle

    async def start(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        self._task = asyncio.get_running_loop().create_task(self._lease_loop())

    async def shutdown(self, _app: web.Application) -> None:
        """Node stopping: end the open watch streams, which never end by themselves
        (aiohttp would otherwise wait for them up to its shutdown timeout)."""
        self.closing = True
        for wake in list(self.stream_wakers):
            wake()

    async def stop(self, _app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    # ================================================================== answers

    def header(self, rev: str | None) -> dict[str, str]:
        h = {"cluster_id": self.cluster_id, "member_id": self.member_id}
        if rev:
            h["revision"] = rev
        h["raft_term"] = str(self.rt.raft.term)
        return h

    def fill(self, resp: dict[str, Any]) -> dict[str, Any]:
        """Replace the state machine's revision-only header with etcd's full one."""
        resp["header"] = self.header(resp.get("header", {}).get("revision"))
        return resp

    def answer(self, resp: dict[str, Any]) -> web.Response:
        return json_response(self.fill(resp))

    def result_response(self, result: bytes) -> web.Response:
        d = orjson.loads(result)
        if "error" in d:
            return json_response(result, errors.HTTP_STATUS.get(d.get("code", 2), 500))
        return self.answer(d)

    def _unavailable(self) -> KvError:
        self.counters["timeouts"] += 1
        return errors.err(errors.TIMEOUT if self.rt.raft.leader else errors.NO_LEADER)

    # ================================================================== writes

    async def write(self, cmd: bytes) -> web.Response:
        """Propose ``cmd``: here on the leader, else through the leader's batch endpoint;
        retried through elections until the request deadline."""
        if len(cmd) > MAX_COMMAND_BYTES:
            return error_response(errors.err(errors.REQUEST_TOO_LARGE))
        deadline = time.monotonic() + self.timeout_s
        while True:
            rt = self.rt
            res: web.Response | None = None
            if rt.raft.role == Role.LEADER:
                res = await self.propose(cmd, deadline)
            elif rt.raft.leader and rt.raft.leader != rt.id:
                res = await self.forward_command(cmd, rt.raft.leader, deadline)
            if res is not None:
                return res
            if time.monotonic() + RETRY_S >= deadline:
                return error_response(self._unavailable())
            await asyncio.sleep(RETRY_S)

    # ------------------------------------------------------------------ batched forwarding

    async def forward_command(self, cmd: bytes, leader: str, deadline: float) -> web.Response | None:
        """Hand ``cmd`` to the leader with every other write forwarded in this loop turn
        (one AppForward per batch, not per write: forwarding.py). None: it was not
        proposed, retry."""
        fut = self.enqueue_forward(cmd, leader, deadline)
        res = await fut  # always answered, by its deadline at the latest (_send_batch)
        if res is _PAST_DEADLINE:
            return error_response(self._unavailable())
        if res is None:
            return None
        if "error" in res:
            return json_response(res, errors.HTTP_STATUS.get(res.get("code", 2), 500))
        return self.answer(res)

    async def propose(self, cmd: bytes, deadline: float) -> web.Response | None:
        # The runtime fails the future at the deadline (swept every 100 ms): no
        # asyncio.wait_for per request (a future, a timer and two callbacks each).
        try:
            fut = self.rt.propose_app(cmd, max(0.0, deadline - time.monotonic()))
        except (NotLeader, ProposalDropped):
            return None
        self.counters["proposed"] += 1
        try:
            out = await fut
        except TimeoutError:
            return error_response(self._unavailable())
        except ProposalLost:
            return error_response(errors.err(errors.LEADER_CHANGED))
        except RaftError:  # refused when it was to be appended (not leader, full): retry
            return None
        return self.result_response(out.result)

    async def on_leader(
        self,
        request: web.Request,
        raw: bytes,
        act: Callable[[float], Awaitable[web.Response | None]],
        path: str | None = None,
    ) -> web.Response:
        """Run ``act`` here if this node leads, else forward ``raw`` to the leader; retry
        through elections until the deadline. ``act`` returns None for "not leader now"."""
        deadline = time.monotonic() + self.timeout_s
        hops = int(request.headers.get(FORWARD_HEADER, "0") or 0)
        while True:
            rt = self.rt
            if rt.raft.role == Role.LEADER:
                res = await act(deadline)
                if res is not None:
                    return res
            elif rt.raft.leader and rt.raft.leader != rt.id and hops < MAX_HOPS:
                res = await self.forward(path or request.path, raw, rt.raft.leader, deadline, hops)
                if res is not None:
                    return res
            if time.monotonic() + RETRY_S >= deadline:
                return error_response(self._unavailable())
            await asyncio.sleep(RETRY_S)

    async def forward(
        self, path: str, raw: bytes, leader: str, deadline: float, hops: int
    ) -> web.Response | None:
        """POST ``raw`` to the leader; None if it could not be delivered (retry is safe)."""
        if self._session is None:
            return None
        try:
            host, port = self.rt.cluster.node(leader).http
        except KeyError:
            return None
        self.counters["forwarded"] += 1
        remaining = max(0.05, deadline - time.monotonic())
        try:
            async with self._session.post(
                f"http://{host}:{port}{path}",
                data=raw,
                headers={FORWARD_HEADER: str(hops + 1), "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as r:
                body = await r.read()
                status = r.status
        except aiohttp.ClientConnectorError:
            return None
        except (TimeoutError, aiohttp.ClientError):
            return error_response(self._unavailable())
        return json_response(self._rehead(body, status), status)

    def _rehead(self, body: bytes, status: int) -> bytes:
        """The leader answered; the header names this member, as etcd's would."""
        if status != 200 or not body.startswith(b'{"header"'):
            return body
        try:
            d = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        return orjson.dumps(self.fill(d))

    # ================================================================== reads

    async def read_barrier(self, serializable: bool, deadline: float | None = None) -> KvError | None:
        """Wait until this replica may serve a linearizable read (ReadIndex, §6.4)."""
        if serializable:
            return None
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(asyncio.shield(self._read_index()), max(0.01, remaining))
                return None
            except (ReadNotConfirmed, TimeoutError):
                pass
            if time.monotonic() + RETRY_S >= deadline:
                return self._unavailable()
            await asyncio.sleep(RETRY_S)

    def _read_index(self) -> asyncio.Future[None]:
        """A read point confirmed *after* this call. Reads share ReadIndex requests, one in
        flight at a time: the reads of one loop turn share one request, and those arriving
        while it is in flight all wait for the next (issued after they came, as
        linearizability wants)."""
        fut = self._read_next
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._read_next = loop.create_future()
            fut.add_done_callback(_consume)
            if not self._read_busy:
                self._read_busy = True  # launched on the next loop turn: this turn's reads join
                loop.call_soon(self._launch_read)
        return fut

    def _launch_read(self) -> None:
        waiters, self._read_next = self._read_next, None
        if waiters is None:
            self._read_busy = False
            return
        self._read_busy = True
        self._read_gen += 1
        gen = self._read_gen
        loop = asyncio.get_running_loop()

        def finish(exc: BaseException | None) -> None:
            if gen != self._read_gen or not self._read_busy:
                return  # this attempt already timed out
            self._read_busy = False
            timer.cancel()
            if not waiters.done():
                if exc is None:
                    waiters.set_result(None)
                else:
                    waiters.set_exception(exc)
            if self._read_next is not None:
                self._launch_read()

        def done(f: asyncio.Future[int]) -> None:
            exc = ReadNotConfirmed(self.rt.raft.leader) if f.cancelled() else f.exception()
            finish(exc)

        # a lost ReadIndex message must not stall every read behind it
        timer = loop.call_later(READ_ATTEMPT_S, lambda: finish(ReadNotConfirmed(self.rt.raft.leader)))
        try:
            self.rt.linearizable_read().add_done_callback(done)
        except RaftError as e:
            finish(e)

    # ================================================================== leases

    def new_lease_id(self) -> int:
        while True:
            lid = secrets.randbits(63)
            if lid and lid not in self.machine.leases:
                return lid

    def _on_lease(self, what: str, lease_id: int) -> None:
        if what == "grant":
            if self.rt.raft.role == Role.LEADER:
                lease = self.machine.leases.get(lease_id)
                if lease is not None:
                    self.deadlines[lease_id] = time.monotonic() + lease.ttl
        else:
            self.deadlines.pop(lease_id, None)
            self._expiring.pop(lease_id, None)
            if what == "expire":
                self.counters["expired"] += 1

    def renew(self, lease_id: int) -> int:
        """Keepalive on the leader: a fresh deadline; the granted TTL, or 0 if unknown."""
        lease = self.machine.leases.get(lease_id)
        if lease is None:
            return 0
        self.deadlines[lease_id] = time.monotonic() + lease.ttl
        return lease.ttl

    def remaining_s(self, lease_id: int) -> int:
        dl = self.deadlines.get(lease_id)
        lease = self.machine.leases.get(lease_id)
        if lease is None:
            return -1
        if dl is None:
            return lease.ttl
        return int(dl - time.monotonic())

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TICK_S)
            try:
                self.lease_tick(time.monotonic())
            except Exception:  # never let the clock die; log and go on
                log.exception("kv lease tick failed")

    def lease_tick(self, now: float) -> None:
        rt = self.rt
        if rt.raft.role != Role.LEADER:
            if self.deadlines or self._lease_term != -1:
                self.deadlines.clear()
                self._expiring.clear()
                self._lease_term = -1
            return
        leases = self.machine.leases.leases
        if self._lease_term != rt.raft.term:
            # etcd's Promote: a new leader cannot know the old leader's clock; full TTLs
            self._lease_term = rt.raft.term
            self.deadlines = {lid: now + lease.ttl for lid, lease in leases.items()}
            self._expiring.clear()
        for lid, dl in list(self.deadlines.items()):
            if lid not in leases:
                del self.deadlines[lid]
                continue
            if dl > now or self._expiring.get(lid, 0.0) > now:
                continue
            try:
                fut = rt.propose_app(expire_command(lid))
            except RaftError:
                return
            fut.add_done_callback(_consume)
            self._expiring[lid] = now + EXPIRE_RETRY_S

    def status(self) -> dict[str, Any]:
        st = self.machine.store
        leader = self.rt.raft.leader
        size = str(st.size_bytes + 4096)
        resp: dict[str, Any] = {"header": self.header(str(st.rev)), "version": ETCD_VERSION,
                                "dbSize": size}
        if leader in self.member_ids:
            resp["leader"] = self.member_ids[leader]
        resp["raftIndex"] = str(self.rt.raft.committed)
        resp["raftTerm"] = str(self.rt.raft.term)
        resp["raftAppliedIndex"] = str(self.rt.service.applied_index)
        if not leader:
            resp["errors"] = [errors.NO_LEADER[1]]
        resp["dbSizeInUse"] = size
        return resp


def kv_app_factory(rt: NodeRuntime, app: web.Application) -> Application:
    """NodeOptions.app_factory: mount the etcd v3 JSON API; return the state machine."""
    from udpraft.kv.http import mount

    node = KVNode(rt)
    mount(app, node)
    app.on_startup.append(node.start)
    app.on_shutdown.append(node.shutdown)
    app.on_cleanup.append(node.stop)
    return node.machine
